"""bot.model_reply: stream events → what the renderer shows, and the decorations at the end."""

from __future__ import annotations

from bot.llm import CodeOutput, CodeRun, Grounding, LinkStatus, Source, Support, Thought
from bot.model_reply import ModelReply
from bot.streaming import Status


def run(reply: ModelReply, *events: object) -> list[object]:
    return [item for event in events for item in reply.take(event)]  # type: ignore[arg-type]


def test_thoughts_and_searches_make_status_lines_only_before_the_text() -> None:
    reply = ModelReply()
    out = run(
        reply,
        Thought("**Planning**\n\nfirst"),
        Grounding(("weather Paris",), (), ()),
        "It is sunny.",
        Thought("**Late thought**"),
    )
    assert out == [
        Status("-# 💭 Planning…"),
        Status("-# 🔎 searching: weather Paris…"),
        "It is sunny.",
    ]
    assert reply.thought_summary == "**Planning**\n\nfirst**Late thought**"


def test_code_blocks_are_fenced_and_markers_skip_over_them() -> None:
    reply = ModelReply()
    shown = "".join(
        str(item)
        for item in run(
            reply,
            "Let me check.",
            CodeRun("print('```')", "PYTHON"),
            CodeOutput("```\n", "OUTCOME_OK"),
            CodeOutput("", "OUTCOME_DEADLINE_EXCEEDED"),
            " Done.",
        )
    )
    assert shown == (
        "Let me check.\n```python\nprint('`\u200b``')\n```\n```\n`\u200b``\n```\n"
        "-# ⏱ the code ran out of time\n Done."
    )
    answer = "Let me check. Done."
    run(reply, Grounding((), (Source("https://x.example", "x"),), (Support(13, (0,)),)))
    run(reply, Grounding((), (Source("https://x.example", "x"),), (Support(19, (0,)),)))
    assert len(answer.encode()) == 19
    decorated = reply.decorate(shown)
    assert decorated.startswith("Let me check.[1]\n```python")
    assert decorated.endswith(" Done.[1]")


def test_notices_name_failed_links_then_sources() -> None:
    reply = ModelReply()
    run(
        reply,
        LinkStatus((("https://bad.example", "URL_RETRIEVAL_STATUS_ERROR"),)),
        Grounding((), (Source("https://s.example", "S"),), ()),
    )
    assert reply.notices() == [
        "-# ⚠ Couldn't open <https://bad.example>",
        "-# Sources: [1] <https://s.example> S",
    ]
    assert ModelReply().notices() == []
