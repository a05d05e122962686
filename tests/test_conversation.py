"""History → Gemini contents: names on user turns, interrupted replies marked, roles alternate."""

from __future__ import annotations

from bot.conversation import SEPARATE, Question, build_contents, system_instruction, today_note
from storage import Media, StoredImage, Turn


def turn(tid: int, role: str, text: str, status: str = "complete", name: str = "alice", **kw):
    return Turn(
        id=tid,
        channel_id=1,
        guild_id=None,
        thread_id=None,
        role=role,  # type: ignore[arg-type]
        author_id=10 if role == "user" else 0,
        author_name=name if role == "user" else "",
        text=text,
        status=status,  # type: ignore[arg-type]
        message_ids=[],
        images=kw.get("images", []),
        created_at=0.0,
        reply_to=kw.get("reply_to"),
        prompt_tokens=None,
        output_tokens=None,
        model=None,
    )


def test_history_then_new_turn_with_names() -> None:
    history = [turn(1, "user", "hi"), turn(2, "model", "hello!", reply_to=1)]
    q = Question(channel_id=1, author_id=11, author_name="bob", text="what's up?")
    contents = build_contents(history, q)
    assert [c.role for c in contents] == ["user", "model", "user"]
    assert contents[0].parts == ["[alice] hi"]
    assert contents[1].parts == ["hello!"]
    assert contents[2].parts == ["[bob] what's up?", today_note()]


def test_interrupted_replies_are_marked() -> None:
    history = [
        turn(1, "user", "long story please"),
        turn(2, "model", "Once upon", status="stopped", reply_to=1),
        turn(3, "user", "another"),
        turn(4, "model", "", status="failed", reply_to=3),
    ]
    contents = build_contents(history, Question(1, 10, "alice", "go on"))
    assert "Once upon" in contents[1].parts[0] and "stopped" in contents[1].parts[0]
    assert "error" in contents[3].parts[0]


def test_questions_still_being_answered_are_context_not_merged() -> None:
    img = StoredImage("abc", "image/png", b"\x89PNG...")
    history = [
        turn(1, "user", "first"),
        turn(2, "model", "answer one", reply_to=1),
        turn(3, "user", "look", images=[img]),  # still streaming: no model turn yet
        turn(4, "user", "and me", name="bob"),  # lost in a crash
    ]
    contents = build_contents(history, Question(1, 12, "carol", "my own question"))
    assert [c.role for c in contents] == ["user", "model"] * 3 + ["user"]
    assert contents[2].parts == ["[alice] look", Media(b"\x89PNG...", "image/png")]
    assert contents[3].parts == [SEPARATE] and contents[5].parts == [SEPARATE]
    assert contents[4].parts == ["[bob] and me"]
    assert contents[-1].parts == ["[carol] my own question", today_note()]  # that one alone


def test_inline_bytes_cap_drops_the_oldest_images_first() -> None:
    old = StoredImage("old", "image/png", b"o" * 60)
    new = StoredImage("new", "image/png", b"n" * 30)
    history = [turn(1, "user", "a", images=[old]), turn(2, "model", "x", reply_to=1)]
    history += [turn(3, "user", "b", images=[new]), turn(4, "model", "y", reply_to=3)]
    q = Question(1, 10, "alice", "c", images=[Media(b"q" * 40, "image/png")])
    contents = build_contents(history, q, max_inline_bytes=100)
    images = [p for c in contents for p in c.parts if isinstance(p, Media)]
    assert [len(i.data) for i in images] == [30, 40]


def test_without_history_only_the_question() -> None:
    contents = build_contents([], Question(1, 10, "a", "q"))
    assert [(c.role, c.parts) for c in contents] == [("user", ["[a] q", today_note()])]


def test_leading_model_turn_dropped() -> None:
    contents = build_contents([turn(2, "model", "orphan")], Question(1, 10, "a", "q"))
    assert [c.role for c in contents] == ["user"]


def test_system_instruction_default_and_custom() -> None:
    default = system_instruction(None, "Gemcord", in_dm=False)
    assert "Gemcord" in default and "Discord" in default and "Markdown" in default
    custom = system_instruction("You are a pirate.", "Gemcord", in_dm=True)
    assert custom.startswith("You are a pirate.") and "[alice]" in custom


def test_the_date_ends_the_newest_turn_and_never_enters_the_system_instruction() -> None:
    import datetime as dt

    monday, tuesday = dt.date(2026, 3, 9), dt.date(2026, 3, 10)
    assert system_instruction(None, "Gemcord", in_dm=False) == system_instruction(
        None, "Gemcord", in_dm=False
    )
    assert "Monday" not in system_instruction(None, "Gemcord", in_dm=False)
    history = [turn(1, "user", "hi"), turn(2, "model", "hello")]
    q = Question(1, 10, "alice", "what day is it?")
    one = build_contents(history, q, today=monday)
    two = build_contents(history, q, today=tuesday)
    assert one[:-1] == two[:-1]  # only the tail differs
    assert one[-1].parts == ["[alice] what day is it?", "(Today is Monday 9 March 2026, UTC.)"]
    assert two[-1].parts[-1] == today_note(tuesday)


def test_files_text_placeholders_and_the_inline_cap() -> None:
    kept = StoredImage("a", "application/pdf", b"%PDF-1", name="paper.pdf", size=6)
    old = StoredImage("b", "audio/mp3", None, name="talk.mp3", size=3 * 1024 * 1024)
    notes = StoredImage("c", "text/plain", b"line one\n", name="notes.md", size=9)
    history = [
        turn(1, "user", "", images=[old]),
        turn(2, "model", "heard it", reply_to=1),
        turn(3, "user", "read", images=[kept, notes]),
        turn(4, "model", "read it", reply_to=3),
    ]
    video = Media(b"v" * 50, "video/mp4", name="clip.mp4")
    big = Media(b"p" * 40, "application/pdf", name="big.pdf")
    q = Question(1, 11, "bob", "", images=[video, big])
    contents = build_contents(
        history, q, max_inline_bytes=45, uploaded=lambda m: m.mime_type.startswith("video/")
    )
    assert contents[0].parts == ["[alice] (sent: talk.mp3)", "(earlier: talk.mp3, 3 MB)"]
    assert contents[2].parts == [
        "[alice] read",
        "(earlier: paper.pdf, 1 KB)",  # over the inline cap once the newer PDF is counted
        "[file notes.md]\nline one\n",
    ]
    assert contents[4].parts == ["[bob] (sent: clip.mp4, big.pdf)", video, big, today_note()]


def test_a_complete_reply_goes_back_as_its_parts_to_the_same_model_only() -> None:
    from dataclasses import replace

    from bot.llm import ModelPart
    from storage import StoredPart

    parts = [
        StoredPart("thought", "unsigned summary"),
        StoredPart("thought", "signed thought", b"t"),
        StoredPart("text", "Hello!", b"\x00sig"),
    ]
    reply = replace(turn(2, "model", "Hello!", reply_to=1), model="gemini-3-pro", parts=parts)
    history = [turn(1, "user", "hi"), reply]
    q = Question(channel_id=1, author_id=11, author_name="bob", text="and?")
    same = build_contents(history, q, model="gemini-3-pro")
    assert same[1].parts == [
        ModelPart("thought", "signed thought", b"t"),
        ModelPart("text", "Hello!", b"\x00sig"),
    ]
    assert build_contents(history, q, model="gemini-2.5-flash")[1].parts == ["Hello!"]
    assert build_contents(history, q)[1].parts == ["Hello!"]
    stopped = [history[0], replace(reply, status="stopped")]
    assert build_contents(stopped, q, model="gemini-3-pro")[1].parts[0].startswith("Hello!\n\n[")


def test_the_images_a_reply_drew_go_back_with_it() -> None:
    """In place, with their signature, to the same model; after the text to another; named
    by a placeholder outside the history's file budget or the request's inline cap."""
    from dataclasses import replace

    from bot.llm import ModelPart
    from storage import StoredPart

    png = b"\x89PNG figure"
    drawn = StoredImage("f1", "image/png", png, name="figure-1.png", size=len(png))
    parts = [
        StoredPart("code", "plot()", None, "PYTHON"),
        StoredPart("image", "", b"sig", "f1"),
        StoredPart("text", "Drawn."),
    ]
    reply = replace(
        turn(2, "model", "Drawn.", reply_to=1, images=[drawn]), model="gemini-3", parts=parts
    )
    history = [turn(1, "user", "draw"), reply]
    q = Question(channel_id=1, author_id=11, author_name="bob", text="and?")
    figure = Media(png, "image/png", name="figure-1.png")
    assert build_contents(history, q, model="gemini-3")[1].parts == [
        ModelPart("code", "plot()", None, "PYTHON"),
        ModelPart("image", "", b"sig", media=figure),
        ModelPart("text", "Drawn."),
    ]
    assert build_contents(history, q, model="gemini-2.5")[1].parts == ["Drawn.", figure]
    capped = build_contents(history, q, model="gemini-3", max_inline_bytes=len(png) - 1)
    assert capped[1].parts[1] == "(earlier: figure-1.png, 1 KB)"
    outside = [history[0], replace(reply, images=[replace(drawn, data=None)])]
    assert build_contents(outside, q, model="gemini-3")[1].parts[1] == capped[1].parts[1]
