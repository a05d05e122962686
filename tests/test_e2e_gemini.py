"""End to end: Gemini's thinking, Google Search grounding, URL context and code execution,
through the real discord.py and google-genai against both fakes."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from bot.buttons import NO_THOUGHTS
from tests.fakes.discord import Perm
from tests.fakes.gemini import (
    Reply,
    code_part,
    grounding_metadata,
    image_part,
    output_part,
    url_context_metadata,
)
from tests.harness import World, reply_turn
from tests.test_e2e_chat import ask, fast

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


async def command(w: World, channel, user, name: str, options: dict | None = None):  # type: ignore[no-untyped-def]
    inter = await w.discord.slash_command(channel, user, name, options or {})
    await inter.wait_for_callback()
    return inter


async def set_option(w: World, option: str, value: str) -> None:
    """Alice (no Manage Messages) is refused; Bob, a moderator, sets it in #general."""
    refused = await command(
        w, w.general, w.alice, "settings set", {"option": option, "value": value}
    )
    assert refused.ephemeral and "Manage Messages" in refused.original.content  # type: ignore[union-attr]
    mods = w.discord.add_role(w.guild, f"mods-{option}", permissions=Perm.MANAGE_MESSAGES)
    w.discord.add_member(w.guild, w.bob, roles=[mods])
    done = await command(w, w.general, w.bob, "settings set", {"option": option, "value": value})
    assert done.original is not None
    assert done.original.content == f"`{option}` is now `{value}` in this channel."


def no_pings_and_no_429(w: World) -> None:
    assert w.discord.invalid_request_count == 0
    for message in w.discord.bot_messages(w.general):
        assert message.mentions_disabled
        assert not message.pinged_everyone and not message.pinged_users


def buttons_of(message) -> list[str]:  # type: ignore[no-untyped-def]
    """What each button of a message does: its custom id, or its link."""
    return [
        c.get("custom_id") or c.get("url", "")
        for row in message.components
        for c in row["components"]
    ]


def signature_of(part: dict) -> bytes | None:  # type: ignore[type-arg]
    raw = part.get("thoughtSignature") or part.get("thought_signature")
    if raw is None:
        return None
    return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))


# --- thinking -------------------------------------------------------------------------------


async def test_thinking_shows_live_then_the_answer_and_signatures_round_trip(
    tmp_path: Path,
) -> None:
    async with fast(tmp_path) as w:
        mods = w.discord.add_role(w.guild, "mods", permissions=Perm.MANAGE_MESSAGES)
        w.discord.add_member(w.guild, w.bob, roles=[mods])
        answer = ["The two ", "approaches differ ", "in cost."]
        w.gemini.script(
            Reply(
                thoughts=[
                    "**Reading the question**\n\nThey ask about two approaches.",
                    "**Comparing the two approaches**\n\nOne is cheaper.",
                ],
                chunks=answer,
                signature=b"\x01signature\xff",
                delay=0.4,
            )
        )
        question, contents = await ask(w, w.general, w.alice, "which approach is better?")
        assert contents == ["".join(answer)]  # the final message is exactly the answer

        request = w.gemini.requests[0]
        assert request.thinking_config() == {"includeThoughts": True}  # auto on 2.5 Flash
        [reply] = w.discord.bot_messages(w.general)
        shown = [r.content for r in reply.revisions]
        assert shown[0] == "-# 💭 Reading the question…"
        assert "-# 💭 Comparing the two approaches…" in shown
        status_at = shown.index("-# 💭 Comparing the two approaches…")
        assert all(not s.startswith("-# 💭") for s in shown[status_at + 1 :])
        assert shown[-1] == "".join(answer)
        # typing was shown again after the status line was posted
        typing = w.discord.calls_for("typing", channel=w.general)
        assert len(typing) >= 2 and typing[-1].t_start > reply.revisions[0].t

        turn = await reply_turn(w, question.id)
        assert turn is not None and turn.text == "".join(answer)

        # the Thoughts button shows the whole summary to whoever clicks, privately
        [reply] = w.discord.bot_messages(w.general)
        assert buttons_of(reply) == ["gemcord:regenerate", f"gemcord:thoughts:{turn.id}"]
        clicked = await w.discord.click(reply, w.bob, f"gemcord:thoughts:{turn.id}")
        await clicked.wait_for_callback()
        assert clicked.ephemeral and clicked.user_id == w.bob.id
        shown_thoughts = clicked.callback["data"]["content"]  # type: ignore[index]
        assert "**Reading the question**" in shown_thoughts
        assert "**Comparing the two approaches**\n\nOne is cheaper." in shown_thoughts
        assert clicked.callback["data"]["allowed_mentions"] == {"parse": []}  # type: ignore[index]

        assert [p.kind for p in turn.parts] == ["thought", "text"]
        assert turn.parts[1].signature == b"\x01signature\xff"
        assert turn.thoughts_tokens and turn.thoughts_tokens > 0

        # the signature goes back with history for the same model, exactly as received
        await ask(w, w.general, w.alice, "and the second one?")
        [*_, plain] = w.discord.bot_messages(w.general)
        assert buttons_of(plain) == ["gemcord:regenerate"]  # no thoughts, no Thoughts button
        # the older reply loses Regenerate to the newer one, and keeps its Thoughts
        await w.discord.wait_for(
            lambda: buttons_of(w.discord.message(reply.id)) == [f"gemcord:thoughts:{turn.id}"],
            timeout=5,
        )
        [model_turn] = w.gemini.requests[1].model_parts()
        assert [p.get("text") for p in model_turn] == ["".join(answer)]  # no unsigned thoughts
        assert signature_of(model_turn[0]) == b"\x01signature\xff"

        # a moderator switches the model: signatures are not valid across models
        inter = await command(w, w.general, w.bob, "model", {"name": "gemini-2.5-pro"})
        assert "gemini-2.5-pro" in (inter.original.content if inter.original else "")
        await ask(w, w.general, w.alice, "and now?")
        third = w.gemini.requests[2]
        assert third.model == "gemini-2.5-pro"
        assert all(signature_of(p) is None for turn in third.model_parts() for p in turn)
        assert third.model_parts()[0] == [{"text": "".join(answer)}]

        # /stats counts the thinking tokens
        stats = await command(w, w.general, w.alice, "stats")
        assert stats.original is not None and "thinking" in stats.original.content

        # the thoughts live as long as the reply is stored
        forgot = await command(w, w.general, w.alice, "forget all", {"confirm": True})
        await w.discord.wait_for(lambda: forgot.original and not forgot.original.loading)
        gone = await w.discord.click(reply, w.bob, f"gemcord:thoughts:{turn.id}")
        await gone.wait_for_callback()
        assert gone.ephemeral
        assert gone.callback["data"]["content"] == NO_THOUGHTS  # type: ignore[index]
        no_pings_and_no_429(w)


async def test_thinking_setting_is_per_channel_and_per_model(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        mods = w.discord.add_role(w.guild, "mods", permissions=Perm.MANAGE_MESSAGES)
        w.discord.add_member(w.guild, w.bob, roles=[mods])
        refused = await command(
            w, w.general, w.alice, "settings set", {"option": "thinking", "value": "high"}
        )
        assert refused.ephemeral and "Manage Messages" in refused.original.content  # type: ignore[union-attr]
        await command(w, w.general, w.bob, "settings set", {"option": "thinking", "value": "low"})
        await command(w, w.random, w.bob, "settings set", {"option": "thinking", "value": "off"})
        await ask(w, w.general, w.alice, "hi")
        await ask(w, w.random, w.alice, "hi")
        await command(w, w.general, w.bob, "model", {"name": "gemini-3-pro-preview"})
        await ask(w, w.general, w.alice, "hi again")
        first, second, third = w.gemini.requests
        assert first.thinking_config() == {"includeThoughts": True, "thinkingBudget": 1024}
        assert second.thinking_config() == {"thinkingBudget": 0}
        assert third.thinking_config() == {"includeThoughts": True, "thinkingLevel": "LOW"}
        no_pings_and_no_429(w)


# --- Google Search grounding ------------------------------------------------------------------


ANSWER = "Paris is the capital of France. It lies on the Seine, naïvely speaking."
REDIRECT = "https://vertexaisearch.cloud.google.com/grounding-api-redirect/"
SOURCES = [
    (REDIRECT + "AAA", "wikipedia.org"),
    (REDIRECT + "BBB", "Britannica @everyone <@123>"),  # web titles never ping
]


def grounded(*, at: int) -> Reply:
    """The grounded answer, its metadata on event ``at`` (0: with the first thought, before
    any text; -1: the last event)."""
    meta = grounding_metadata(
        ANSWER,
        queries=["capital of France", "Paris river"],
        sources=SOURCES,
        cites=[("Paris is the capital of France.", [0]), ("It lies on the Seine,", [0, 1])],
    )
    chunks = ["Paris is the capital ", "of France. It lies on the Seine, ", "naïvely speaking."]
    return Reply(thoughts=["**Looking it up**"], chunks=chunks, metadata={at: meta}, delay=0.3)


async def test_a_grounded_answer_has_markers_sources_and_search_status(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        mods = w.discord.add_role(w.guild, "mods", permissions=Perm.MANAGE_MESSAGES)
        w.discord.add_member(w.guild, w.bob, roles=[mods])
        refused = await command(
            w, w.general, w.alice, "settings set", {"option": "search", "value": "on"}
        )
        assert refused.ephemeral
        await ask(w, w.general, w.alice, "no search yet")
        assert w.gemini.requests[0].tools() == []
        await command(w, w.general, w.bob, "settings set", {"option": "search", "value": "on"})

        expected = (
            "Paris is the capital of France.[1] It lies on the Seine,[1][2] naïvely speaking."
            f"\n\n-# Sources: [1] <{SOURCES[0][0]}> wikipedia.org · [2] <{SOURCES[1][0]}>"
            " Britannica @everyone <@123\\>"
        )
        for at in (-1, 0):  # the metadata in the last chunk, or early in the first
            w.gemini.script(grounded(at=at))
            question, contents = await ask(w, w.general, w.alice, "capital of France?")
            assert contents == [expected], at
            assert "googleSearch" in w.gemini.requests[-1].tools()
            turn = await reply_turn(w, question.id)
            assert turn is not None and turn.text == ANSWER  # history keeps the model's text

        # metadata early, before any text: the status line names the searches
        [*_, reply] = w.discord.bot_messages(w.general)
        shown = [r.content for r in reply.revisions]
        assert "-# 🔎 searching: capital of France · Paris river…" in shown
        assert shown[-1] == expected
        # Search Suggestions: each search as a link to Google's results (and Thoughts)
        assert buttons_of(reply)[2:] == [
            "https://www.google.com/search?q=capital+of+France",
            "https://www.google.com/search?q=Paris+river",
        ]
        labels = [c["label"] for row in reply.components for c in row["components"]]
        assert labels == ["Regenerate", "Thoughts", "capital of France", "Paris river"]
        no_pings_and_no_429(w)


async def test_a_long_grounded_answer_keeps_the_sources_line_within_limits(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        await w.bot.store.set_setting(w.general.id, "search", "on")  # type: ignore[union-attr]
        body = ("Word " * 395).strip() + "."  # about 1,980 characters
        sources = [(f"https://example.com/{'x' * 200}/{i}", f"Site {i}") for i in range(12)]
        meta = grounding_metadata(
            body, queries=["q"], sources=sources, cites=[(body, list(range(12)))]
        )
        w.gemini.script(Reply(chunks=[body[:1000], body[1000:]], metadata={-1: meta}))
        _, contents = await ask(w, w.general, w.alice, "long one")
        assert all(len(c) <= 2000 for c in contents)
        text, _, sources_line = "\n".join(contents).rpartition("\n\n")
        assert text.endswith("Word.[1][2][3][4][5][6][7][8][9][10][11][12]")
        assert sources_line.startswith("-# Sources: [1] <https://example.com/")
        assert re.search(r"\[\d+\] <[^>]+> Site \d+$", sources_line)  # whole entries
        assert "[12] <" not in sources_line  # cut to whole entries
        no_pings_and_no_429(w)


# --- URL context ----------------------------------------------------------------------------------


async def test_links_are_read_and_the_ones_that_failed_are_named(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        good, bad = "https://good.example/page", "https://bad.example/missing"
        w.gemini.script(
            Reply(
                chunks=["Page one says hello."],
                metadata={
                    -1: url_context_metadata(
                        (good, "URL_RETRIEVAL_STATUS_SUCCESS"),
                        (bad, "URL_RETRIEVAL_STATUS_ERROR"),
                    )
                },
            )
        )
        _, contents = await ask(w, w.general, w.alice, f"compare {good} and {bad}.")
        assert contents == [f"Page one says hello.\n\n-# ⚠ Couldn't open <{bad}>"]
        assert w.gemini.requests[0].tools() == ["urlContext"]

        # no links, or only Discord file links: no URL tool, and file links are not sent
        cdn = "https://cdn.discordapp.com/attachments/1/2/cat.png?ex=1&is=2&hm=3"
        await ask(w, w.general, w.alice, f"what is {cdn}")
        request = w.gemini.requests[1]
        assert request.tools() == []
        assert "cdn.discordapp.com" not in (request.question_text() or "")
        assert "[Discord file: cat.png]" in (request.question_text() or "")

        # a moderator turns links off here (others may not)
        await set_option(w, "links", "off")
        await ask(w, w.general, w.alice, f"read {good}")
        assert w.gemini.requests[2].tools() == []
        await ask(w, w.random, w.alice, f"read {good}")  # another channel keeps its own
        assert w.gemini.requests[3].tools() == ["urlContext"]
        no_pings_and_no_429(w)


# --- code execution ----------------------------------------------------------------------------


async def test_code_execution_shows_code_output_and_attaches_images(tmp_path: Path) -> None:
    """The code's image is attached in Discord, kept with the reply (its thought signature
    too) and goes back to Gemini inline, where it came, with the next question."""
    signature = b"\x00image-signature\xff"
    async with fast(tmp_path) as w:
        await set_option(w, "code", "on")
        signed = {**image_part(PNG), "thoughtSignature": base64.b64encode(signature).decode()}
        w.gemini.script(
            Reply(
                chunks=[
                    "Let me compute it.",
                    code_part("print(6 * 7)"),
                    output_part("42\n"),
                    signed,
                    code_part("1 / 0"),
                    output_part("ZeroDivisionError: division by zero", "OUTCOME_FAILED"),
                    "The answer is 42.",
                ],
                delay=0.05,
            )
        )
        question, contents = await ask(w, w.general, w.alice, "what is 6 times 7?")
        assert w.gemini.requests[0].tools() == ["codeExecution"]
        assert contents == [
            "Let me compute it.\n```python\nprint(6 * 7)\n```\n```\n42\n```\n"
            "```python\n1 / 0\n```\n```\nZeroDivisionError: division by zero\n```\n"
            "-# ⚠ the code failed\nThe answer is 42."
        ]
        turn = await reply_turn(w, question.id)
        assert turn is not None
        reply = w.discord.message(turn.message_ids[-1])
        assert [a["filename"] for a in reply.attachments] == ["figure-1.png"]
        assert reply.content == contents[0]  # attaching kept the text
        kinds = ["text", "code", "output", "image", "code", "output", "text"]
        assert [p.kind for p in turn.parts] == kinds
        (figure,) = turn.images
        assert (figure.name, figure.mime_type, figure.data) == ("figure-1.png", "image/png", PNG)
        assert (turn.parts[3].detail, turn.parts[3].signature) == (figure.sha256, signature)

        w.gemini.script(Reply(chunks=["It was a single pixel."]))
        await ask(w, w.general, w.alice, "what did the figure show?")
        (sent,) = w.gemini.requests[1].model_parts()
        assert [next(iter(k for k in p if k != "thoughtSignature")) for p in sent] == [
            "text",
            "executableCode",
            "codeExecutionResult",
            "inlineData",
            "executableCode",
            "codeExecutionResult",
            "text",
        ]
        assert signature_of(sent[3]) == signature
        (image,) = w.gemini.requests[1].image_parts("model")
        assert (image.mime_type, image.data) == ("image/png", PNG)
        no_pings_and_no_429(w)


# --- Discord message links and forwards ------------------------------------------------------


async def test_discord_links_and_forwards_become_quoted_context(tmp_path: Path) -> None:
    async with fast(tmp_path, start=False) as w:
        secret = w.discord.add_text_channel(
            w.guild,
            "mods-only",
            overwrites=[
                w.discord.overwrite(w.guild, deny=Perm.VIEW_CHANNEL),
                w.discord.overwrite(w.bob, allow=Perm.VIEW_CHANNEL | Perm.READ_MESSAGE_HISTORY),
                w.discord.overwrite(
                    w.discord.bot_role(w.guild),
                    allow=Perm.VIEW_CHANNEL | Perm.READ_MESSAGE_HISTORY,
                ),
            ],
        )
        await w.start_bot()
        public = await w.discord.user_message(w.random, w.bob, "The launch moved to Friday.")
        hidden = await w.discord.user_message(secret, w.bob, "Salaries are in the sheet.")
        base = f"https://discord.com/channels/{w.guild.id}"
        link = f"{base}/{w.random.id}/{public.id}"
        hidden_link = f"{base}/{secret.id}/{hidden.id}"

        await ask(w, w.general, w.alice, f"what does {link} say? and {hidden_link}?")
        question = w.gemini.requests[-1].question_text() or ""
        assert '(linked message by bob: "The launch moved to Friday.")' in question
        assert "Salaries" not in question  # alice cannot read that channel
        assert w.gemini.requests[-1].tools() == []  # Discord links are not web pages to read
        await ask(w, w.random, w.bob, f"remind me: {hidden_link}")  # bob may read it
        question = w.gemini.requests[-1].question_text() or ""
        assert '(linked message by bob: "Salaries are in the sheet.")' in question

        # a forward into the bot's DMs: the forwarded text is the context
        dm = w.discord.add_dm_channel(w.alice)
        forward = await w.discord.user_message(dm, w.alice, forward_of=public)
        await w.reply_done(forward.id)
        question = w.gemini.requests[-1].question_text() or ""
        assert '(forwarded message: "The launch moved to Friday.")' in question
        no_pings_and_no_429(w)


async def test_a_long_thought_summary_comes_in_pages_or_as_a_file(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:

        async def click_thoughts(thoughts: list[str]):  # type: ignore[no-untyped-def]
            w.gemini.script(Reply(thoughts=thoughts, chunks=["An answer."]))
            question, _ = await ask(w, w.general, w.alice, "think hard")
            turn = await reply_turn(w, question.id)
            assert turn is not None
            reply = w.discord.message(turn.message_ids[-1])
            clicked = await w.discord.click(reply, w.bob, f"gemcord:thoughts:{turn.id}")
            await clicked.wait_for_callback()
            assert clicked.ephemeral
            return clicked

        paged = await click_thoughts(["**Middle**\n\n" + "x y. " * 700])
        await w.discord.wait_for(lambda: len(paged.followup_ids) == 1, timeout=5)
        first = paged.callback["data"]["content"]  # type: ignore[index]
        [second] = paged.followups
        assert len(first) <= 2000 and second.flags & 64  # the rest privately too
        assert (first + second.content).count("x y.") == 700

        filed = await click_thoughts(["**Long**\n\n" + "thinking hard. " * 1200])
        data = filed.callback["data"]  # type: ignore[index]
        assert data["content"] == "**💭 Thoughts** (long: attached)"
        assert [a["filename"] for a in data["attachments"]] == ["thoughts.md"]
        no_pings_and_no_429(w)
