"""History → Gemini contents: names on user turns, interrupted replies marked, roles alternate."""

from __future__ import annotations

from bot.conversation import Question, build_contents, system_instruction
from bot.llm import ImagePart
from storage import StoredImage, Turn


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
    assert contents[2].parts == ["[bob] what's up?"]


def test_interrupted_reply_is_marked_and_blocked_reply_not_empty() -> None:
    history = [
        turn(1, "user", "long story please"),
        turn(2, "model", "Once upon", status="stopped", reply_to=1),
        turn(3, "user", "bad"),
        turn(4, "model", "", status="blocked", reply_to=3),
    ]
    contents = build_contents(history, Question(1, 10, "alice", "go on"))
    assert "Once upon" in contents[1].parts[0] and "stopped" in contents[1].parts[0]
    assert contents[3].parts[0].strip()
    assert "safety" in contents[3].parts[0]


def test_same_role_neighbours_merge_and_images_carried() -> None:
    img = StoredImage("abc", "image/png", b"\x89PNG...")
    old = StoredImage("old", "image/jpeg", None)
    history = [turn(1, "user", "look", images=[img, old]), turn(2, "user", "and me", name="bob")]
    q = Question(1, 10, "alice", "", images=[])
    contents = build_contents(history, q)
    assert len(contents) == 1 and contents[0].role == "user"
    parts = contents[0].parts
    assert parts[0] == "[alice] look"
    assert parts[1] == ImagePart(b"\x89PNG...", "image/png")
    assert "[bob] and me" in parts and "[alice] (sent an image)" in parts
    assert len([p for p in parts if isinstance(p, ImagePart)]) == 1


def test_leading_model_turn_dropped() -> None:
    contents = build_contents([turn(2, "model", "orphan")], Question(1, 10, "a", "q"))
    assert [c.role for c in contents] == ["user"]


def test_system_instruction_default_and_custom() -> None:
    default = system_instruction(None, "Gemcord", in_dm=False)
    assert "Gemcord" in default and "Discord" in default and "Markdown" in default
    custom = system_instruction("You are a pirate.", "Gemcord", in_dm=True)
    assert custom.startswith("You are a pirate.") and "[alice]" in custom
