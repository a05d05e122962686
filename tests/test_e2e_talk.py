"""End to end: how people talk to the bot (issue 15): conversation scope, when it answers,
auto-threads and `/forget last`, through the real discord.py client and both fakes."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from bot.options import OPTIONS
from bot.threads import thread_name
from storage import ChannelSettings, Turn
from tests.fakes.discord import FakeDiscord, Perm
from tests.fakes.discord_models import FakeMessage
from tests.fakes.gemini import Reply
from tests.harness import World, reply_turn, world

pytestmark = pytest.mark.timeout(60)

FAST = {"GEMCORD_EDIT_WINDOW_SECONDS": "1"}


def fast(tmp_path: Path, env: dict[str, str] | None = None, **kw: object):
    """Five writes a second per channel, the bot paced to match."""
    return world(tmp_path, {**FAST, **(env or {})}, rate_limit=(5, 1.0), **kw)


async def ask(w: World, channel, user, text: str) -> tuple[object, list[str]]:  # type: ignore[no-untyped-def]
    """Mention the bot and wait for the finished reply."""
    question = await w.mention(channel, user, text)
    return question, await w.reply_done(question.id)


async def command(w: World, channel, user, name: str, options: dict | None = None):  # type: ignore[no-untyped-def]
    """Run a slash command; (ephemeral, text of the response)."""
    inter = await w.discord.slash_command(channel, user, name, options or {})
    await inter.wait_for_callback()
    if inter.deferred:  # the answer comes as an edit of the "thinking…" response
        await w.discord.wait_for(lambda: inter.original and not inter.original.loading)
    return inter.ephemeral, (inter.original or object()).content  # type: ignore[attr-defined]


def png() -> bytes:
    """A small valid PNG."""
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def no_pings(fake: FakeDiscord) -> None:
    """Every message the bot wrote, in every revision, was sent with mentions disabled."""
    for message in fake.bot_messages():
        assert message.mentions_disabled, message.content
        assert not message.pinged_users and not message.pinged_everyone


async def quiet(w: World) -> None:
    """Let the bot handle what the fake delivered (a message it ignores leaves no trace)."""
    marker = await w.mention(w.random, w.alice, "marker")
    await w.reply_done(marker.id)


def moderator(w: World) -> None:
    mods = w.discord.add_role(w.guild, "mods", permissions=Perm.MANAGE_MESSAGES)
    w.discord.add_member(w.guild, w.bob, roles=[mods])


# --- conversation scope ----------------------------------------------------------------------


async def test_user_scope_keeps_two_peoples_conversations_apart(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        assert w.bot is not None
        moderator(w)
        w.gemini.script(Reply(chunks=["Noted, alice."]), Reply(chunks=["Noted, bob."]))
        await ask(w, w.general, w.alice, "my cat is Tom")
        await ask(w, w.general, w.bob, "my dog is Rex")
        # channel scope (the default): each sees both
        w.gemini.script(Reply(chunks=["Tom and Rex."]))
        await ask(w, w.general, w.alice, "whose pets do you know?")
        texts = " ".join(w.gemini.requests[-1].texts())
        assert "my cat is Tom" in texts and "my dog is Rex" in texts

        private, text = await command(
            w, w.general, w.bob, "settings set", {"option": "scope", "value": "user"}
        )
        assert not private and "`scope` is now `user`" in text
        w.gemini.script(Reply(chunks=["Your dog is Rex."]))
        await ask(w, w.general, w.bob, "what do you know about me?")
        request = w.gemini.requests[-1]
        texts = " ".join(request.texts())
        assert "my dog is Rex" in texts and "Noted, bob." in texts
        assert "Tom" not in texts and "alice" not in texts
        assert [c["role"] for c in request.contents()] == ["user", "model", "user"]
        w.gemini.script(Reply(chunks=["Your cat is Tom."]))
        await ask(w, w.general, w.alice, "and about me?")
        texts = " ".join(w.gemini.requests[-1].texts())
        assert "my cat is Tom" in texts and "Tom and Rex." in texts
        assert "Rex\n" not in texts and "my dog" not in texts and "bob" not in texts
        # the store keeps one channel history: every exchange is there
        assert len(await w.bot.store.load_history(w.general.id)) == 10
        no_pings(w.discord)


# --- when it answers ---------------------------------------------------------------------------


async def test_free_response_channel_answers_every_human_message(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        assert w.bot is not None
        moderator(w)
        # a plain message in a mention-only channel is not a question
        plain = await w.discord.user_message(w.general, w.alice, "hello there")
        await quiet(w)
        assert await reply_turn(w, plain.id) is None

        mode = {"option": "answer_mode", "value": "all"}
        await command(w, w.general, w.bob, "settings set", mode)
        w.gemini.script(Reply(chunks=["Hi alice!"]))
        question = await w.discord.user_message(w.general, w.alice, "hello again")
        assert await w.reply_done(question.id) == ["Hi alice!"]
        assert w.gemini.requests[-1].question_text().startswith("[alice] hello again")
        reply = w.discord.bot_messages(w.general)[-1]
        assert reply.reply_to == question.id

        # never: @everyone / @here, or a message for someone else
        before = len(w.gemini.requests)
        others = [
            await w.discord.user_message(w.general, w.alice, "@everyone meeting at 5"),
            await w.discord.user_message(w.general, w.alice, "@here anyone around?"),
            await w.discord.user_message(
                w.general, w.alice, f"{w.bob.mention} did you see it?", mentions=[w.bob]
            ),
        ]
        await quiet(w)
        assert len(w.gemini.requests) == before + 1  # only the marker
        for message in others:
            assert await reply_turn(w, message.id) is None
        # other bots are never answered, even here
        robot = w.discord.add_user("robot", bot=True)
        w.discord.add_member(w.guild, robot)
        await w.discord.user_message(w.general, robot, "beep")
        await quiet(w)
        assert len(w.gemini.requests) == before + 2

        # a thread inherits the channel's mode
        thread = w.discord.add_thread(w.general, "side talk", owner=w.alice)
        w.gemini.script(Reply(chunks=["In the thread."]))
        question = await w.discord.user_message(thread, w.alice, "and here?")
        assert await w.reply_done(question.id) == ["In the thread."]
        no_pings(w.discord)


async def test_a_mention_of_others_but_not_the_bot_is_never_a_question(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        w.gemini.script(Reply(chunks=["First answer."]))
        first, _ = await ask(w, w.general, w.alice, "first question")
        reply = w.discord.bot_messages(w.general)[-1]
        # a reply to the bot that is addressed to bob is not for the bot
        aside = await w.discord.user_message(
            w.general, w.alice, f"{w.bob.mention} look at this", mentions=[w.bob], reply_to=reply
        )
        # @everyone with the bot's mention is not answered either
        everyone = await w.discord.user_message(
            w.general,
            w.alice,
            f"@everyone {w.discord.bot_user.mention} say hi",
            mentions=[w.discord.bot_user],
        )
        await quiet(w)
        assert await reply_turn(w, aside.id) is None
        assert await reply_turn(w, everyone.id) is None
        # a mention of the bot and of someone else is a question
        w.gemini.script(Reply(chunks=["Both of you."]))
        both = await w.mention(w.general, w.alice, f"tell {w.bob.mention} hi")
        assert await w.reply_done(both.id) == ["Both of you."]
        assert "tell @bob hi" in w.gemini.requests[-1].question_text()
        assert first.id
        no_pings(w.discord)


# --- auto-threads ------------------------------------------------------------------------------


async def test_auto_thread_opens_a_thread_that_inherits_the_persona(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        assert w.bot is not None
        moderator(w)
        bot = w.discord.bot_user
        threads = w.discord.add_text_channel(
            w.guild,
            "help",
            overwrites=[w.discord.overwrite(bot, allow=Perm.CREATE_PUBLIC_THREADS)],
        )
        await command(w, threads, w.bob, "settings set", {"option": "auto_thread", "value": "on"})
        await command(w, threads, w.bob, "persona", {"instruction": "You are a pirate."})
        await command(w, threads, w.bob, "model", {"name": "gemini-2.5-pro"})

        w.gemini.script(Reply(chunks=["Arr, ", "a list is mutable."]))
        question = await w.mention(threads, w.alice, "What is   a Python list?\nThanks")
        contents = await w.reply_done(question.id)
        assert contents == ["Arr, a list is mutable."]
        thread = w.discord.channels[question.id]  # a thread from a message has its id
        assert thread.is_thread and thread.parent_id == threads.id
        assert thread.name == "What is a Python list? Thanks"
        [answer] = w.discord.bot_messages(thread)
        assert answer.content == "Arr, a list is mutable." and answer.reply_to is None
        # nothing in the channel but the answers to the two commands
        assert not [m for m in w.discord.bot_messages(threads) if m.interaction_id is None]
        request = w.gemini.requests[-1]
        assert request.system_instruction().startswith("You are a pirate.")
        assert request.model == "gemini-2.5-pro"
        turn = await reply_turn(w, question.id)
        assert turn is not None and turn.channel_id == thread.id and turn.thread_id == thread.id

        # the thread is its own conversation; there a message needs no mention
        w.gemini.script(Reply(chunks=["Arr, ", "tuples are not."]))
        follow = await w.discord.user_message(thread, w.alice, "and a tuple?")
        assert await w.reply_done(follow.id) == ["Arr, tuples are not."]
        request = w.gemini.requests[-1]
        assert request.system_instruction().startswith("You are a pirate.")
        texts = " ".join(request.texts())
        assert "What is a Python list?\nThanks" in texts and "a list is mutable." in texts
        assert (await w.bot.store.load_history(threads.id)) == []
        no_pings(w.discord)


async def test_auto_thread_without_the_permission_answers_in_the_channel(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        moderator(w)
        await command(w, w.general, w.bob, "settings set", {"option": "auto_thread", "value": "on"})
        w.gemini.script(Reply(chunks=["Here."]), Reply(chunks=["Again here."]))
        first = await w.mention(w.general, w.alice, "one")
        assert await w.reply_done(first.id) == ["Here."]
        second = await w.mention(w.general, w.alice, "two")
        assert await w.reply_done(second.id) == ["Again here."]
        said = [m.content for m in w.discord.bot_messages(w.general) if "Auto-threads" in m.content]
        assert said == [
            "-# Auto-threads are on here, but I need the Create Public Threads permission, "
            "so I answer in the channel."
        ]
        assert not [c for c in w.discord.channels.values() if c.is_thread]
        assert not w.discord.calls_for("thread_create")
        no_pings(w.discord)


# --- /forget last ------------------------------------------------------------------------------


async def test_forget_last_removes_only_the_callers_last_exchange(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        assert w.bot is not None
        w.gemini.script(*(Reply(chunks=[f"answer {i}"]) for i in range(3)))
        await ask(w, w.general, w.alice, "alice one")
        await ask(w, w.general, w.alice, "alice two")
        await ask(w, w.general, w.bob, "bob one")
        private, text = await command(w, w.general, w.alice, "forget last")
        assert private and "deleted your last question" in text
        history = await w.bot.store.load_history(w.general.id)
        assert [t.text for t in history] == ["alice one", "answer 0", "bob one", "answer 2"]
        private, text = await command(w, w.random, w.alice, "forget last")
        assert private and text == "There is no question of yours in this conversation to forget."
        w.gemini.script(Reply(chunks=["ok"]))
        await ask(w, w.general, w.alice, "what did I say?")
        texts = " ".join(w.gemini.requests[-1].texts())
        assert "alice one" in texts and "bob one" in texts
        assert "alice two" not in texts and "answer 1" not in texts
        export = await w.bot.store.export_channel(w.general.id, "json")
        assert "alice two" not in export
        no_pings(w.discord)


# --- regenerate ----------------------------------------------------------------------------------


def buttons_of(message: FakeMessage) -> list[str]:
    """The custom ids of the buttons a message shows."""
    return [c.get("custom_id", "") for row in message.components for c in row["components"]]


async def regenerated(w: World, question: FakeMessage, old: Turn) -> Turn:
    """Wait until a newer reply to `question` than `old` is stored as finished."""
    assert w.bot is not None
    store = w.bot.store

    async def newer() -> Turn | None:
        turn = await store.find_turn_by_message(old.message_ids[0])
        if turn is None or turn.id == old.id or turn.status == "streaming":
            return None
        return turn if w.bot and w.bot.inflight.by_message(question.id) is None else None

    for _ in range(500):
        if (turn := await newer()) is not None:
            return turn
        await asyncio.sleep(0.02)
    raise TimeoutError("no regenerated reply")


async def test_regenerate_replaces_the_answer_in_place_and_in_history(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        assert w.bot is not None
        carol = w.discord.add_user("carol")
        mods = w.discord.add_role(w.guild, "mods", permissions=Perm.MANAGE_MESSAGES)
        w.discord.add_member(w.guild, carol, roles=[mods])
        long_answer = ("Joke one is long. " * 120).strip()  # two messages
        w.gemini.script(Reply(chunks=[long_answer[:900], long_answer[900:]]))
        question, contents = await ask(w, w.general, w.alice, "tell me a joke")
        assert len(contents) == 2
        old = await reply_turn(w, question.id)
        assert old is not None
        first, last = (w.discord.message(i) for i in old.message_ids)
        assert buttons_of(first) == [] and buttons_of(last) == ["gemcord:regenerate"]

        refused = await w.discord.click(last, w.bob, "gemcord:regenerate")
        await refused.wait_for_callback()
        assert refused.ephemeral and "Only the person who asked" in refused.original.content  # type: ignore[union-attr]
        assert len(w.gemini.requests) == 1

        w.gemini.script(Reply(chunks=["Joke ", "two."]))
        click = await w.discord.click(last, w.alice, "gemcord:regenerate")
        new = await regenerated(w, question, old)
        assert click.callback_type == 7 and click.callback["data"]["components"] == []  # type: ignore[index]
        again, before = w.gemini.requests[-1], w.gemini.requests[0]
        assert again.contents() == before.contents()  # the same question, the same context
        assert new.text == "Joke two." and new.message_ids == [first.id]
        assert w.discord.message(first.id).content == "Joke two."
        assert w.discord.message(first.id).reply_to == question.id
        assert buttons_of(w.discord.message(first.id)) == ["gemcord:regenerate"]
        assert w.discord.message(last.id).deleted  # the old answer's extra message
        history = await w.bot.store.load_history(w.general.id)
        assert [t.text for t in history] == ["tell me a joke", "Joke two."]
        export = json.loads(await w.bot.store.export_channel(w.general.id, "json"))
        replaced = [t for t in export["turns"] if t["replaced"]]
        assert [t["text"] for t in replaced] == [long_answer]
        markdown = await w.bot.store.export_channel(w.general.id)
        assert "replaced by a regenerated answer" in markdown

        # a moderator may regenerate too; a newer exchange takes the button off
        w.gemini.script(Reply(chunks=["Joke three."]))
        await w.discord.click(w.discord.message(first.id), carol, "gemcord:regenerate")
        new = await regenerated(w, question, new)
        assert new.text == "Joke three."
        w.gemini.script(Reply(chunks=["Tea is nice."]))
        await ask(w, w.general, w.bob, "what about tea?")
        assert "Joke three." in w.gemini.requests[-1].texts("model")
        assert "Joke two." not in " ".join(w.gemini.requests[-1].texts())
        await w.discord.wait_for(lambda: not buttons_of(w.discord.message(first.id)), timeout=5)
        tea = w.discord.bot_messages(w.general)[-1]
        assert buttons_of(tea) == ["gemcord:regenerate"]
        # an /ask answer (the interaction's to edit) gets none, and takes the last one off
        w.gemini.script(Reply(chunks=["Coffee too."]))
        inter = await w.discord.slash_command(w.general, w.alice, "ask", {"prompt": "coffee?"})
        assert await w.interaction_done(inter) == ["Coffee too."]
        assert inter.original is not None and buttons_of(inter.original) == []
        await w.discord.wait_for(lambda: not buttons_of(w.discord.message(tea.id)), timeout=5)
        no_pings(w.discord)


# --- /settings autocomplete ----------------------------------------------------------------------


async def test_settings_values_and_models_are_offered_and_checked(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        assert w.bot is not None
        moderator(w)
        typing = await w.discord.autocomplete(
            w.general, w.alice, "settings set", {"option": "scope", "value": ""}, "value"
        )
        await typing.wait_for_callback()
        assert [c["value"] for c in typing.choices or []] == ["channel", "user", "default"]
        typing = await w.discord.autocomplete(w.general, w.alice, "model", {"name": "pro"}, "name")
        await typing.wait_for_callback()
        offered = [c["value"] for c in typing.choices or []]
        assert "gemini-2.5-pro" in offered and all("pro" in n for n in offered)
        assert not [n for n in offered if "embedding" in n]

        # every setting needs Manage Messages to change; its value is checked
        for name, option in OPTIONS.items():
            value = option.choices[-1] if option.choices else "gemini-2.5-pro"
            private, text = await command(
                w, w.general, w.alice, "settings set", {"option": name, "value": value}
            )
            assert private and "Manage Messages" in text, name
        assert await w.bot.store.get_channel_settings(w.general.id) == ChannelSettings(w.general.id)
        private, text = await command(
            w, w.general, w.bob, "settings set", {"option": "auto_thread", "value": "maybe"}
        )
        assert private and text == "`auto_thread` can be `off`, `on` or `default`."

        # persona and model through /settings set: the same checks as /persona and /model
        private, text = await command(
            w, w.general, w.alice, "settings set", {"option": "model", "value": "gemini-2.5-pro"}
        )
        assert private and "Manage Messages" in text
        private, text = await command(
            w, w.general, w.bob, "settings set", {"option": "model", "value": "gemini-2.5-flahs"}
        )
        assert private and "no model called `gemini-2.5-flahs`" in text
        private, text = await command(
            w, w.general, w.bob, "settings set", {"option": "model", "value": "gemini-2.5-pro"}
        )
        assert not private and text == "This channel now uses `gemini-2.5-pro`."
        private, text = await command(
            w, w.general, w.bob, "settings set", {"option": "persona", "value": "Be terse."}
        )
        assert not private and text == "Persona updated for this channel."
        _, text = await command(w, w.general, w.alice, "settings show")
        assert "`model`: gemini-2.5-pro —" in text and "`persona`: Be terse. —" in text
        w.gemini.script(Reply(chunks=["ok"]))
        await ask(w, w.general, w.alice, "hi")
        request = w.gemini.requests[-1]
        assert request.model == "gemini-2.5-pro"
        assert request.system_instruction().startswith("Be terse.")
        no_pings(w.discord)


# --- message actions ----------------------------------------------------------------------------


async def test_ask_gemini_about_a_message_with_a_modal(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        assert w.bot is not None
        menus = {(c["name"], c["type"]) for c in w.discord.commands(w.guild)}
        assert {("Ask Gemini about this", 3), ("Summarize from here", 3)} <= menus
        note = await w.discord.user_message(
            w.general,
            w.bob,
            "The meeting moved to Friday at 3pm, see the map",
            attachments=[w.discord.attachment("map.png", png())],
        )
        opened = await w.discord.message_command(w.general, w.alice, "Ask Gemini about this", note)
        await opened.wait_for_callback()
        modal = opened.modal
        assert modal is not None and modal["title"] == "Ask Gemini about this message"
        assert not w.gemini.requests and not w.discord.bot_messages(w.general)

        w.gemini.script(Reply(chunks=["On Friday ", "at 3pm."]))
        submitted = await w.discord.submit_modal(opened, {"question": "When is the meeting?"})
        assert await w.interaction_done(submitted) == ["On Friday at 3pm."]
        assert not submitted.ephemeral
        request = w.gemini.requests[-1]
        asked = request.question_text() or ""
        assert asked.startswith('[alice] (replying to bob: "The meeting moved to Friday at 3pm')
        assert asked.endswith("When is the meeting?")
        [content] = [c for c in request.contents() if c.get("role") == "user"]
        assert any("inlineData" in p or "inline_data" in p for p in content["parts"])
        history = await w.bot.store.load_history(w.general.id)
        assert [t.role for t in history] == ["user", "model"]
        assert history[0].images and history[1].text == "On Friday at 3pm."
        no_pings(w.discord)


async def test_summarize_from_here_is_private_and_stays_out_of_history(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        assert w.bot is not None
        await w.discord.user_message(w.general, w.bob, "an older message")
        start = await w.discord.user_message(w.general, w.alice, "shall we ship on Monday?")
        await w.discord.user_message(w.general, w.bob, "no, tests are red")
        await w.discord.user_message(w.general, w.alice, "then Tuesday")
        w.gemini.script(Reply(chunks=["Shipping moved ", "to Tuesday."]))
        inter = await w.discord.message_command(w.general, w.bob, "Summarize from here", start)
        assert await w.interaction_done(inter) == ["Shipping moved to Tuesday."]
        assert inter.ephemeral and all(m.ephemeral for m in inter.messages)
        request = w.gemini.requests[-1]
        assert request.roles() == ["user"]  # the channel's conversation is not sent
        asked = request.question_text() or ""
        lines = [
            "[alice] shall we ship on Monday?",
            "[bob] no, tests are red",
            "[alice] then Tuesday",
        ]
        assert "\n".join(lines) in asked and "older message" not in asked
        assert await w.bot.store.load_history(w.general.id) == []
        export = await w.bot.store.export_channel(w.general.id, "json")
        assert "Tuesday" not in export
        w.gemini.script(Reply(chunks=["ok"]))
        await ask(w, w.general, w.alice, "anything new?")
        assert "Summarize" not in " ".join(w.gemini.requests[-1].texts())
        assert not [
            m
            for m in w.discord.bot_messages(w.general)
            if "Tuesday" in m.content and not m.ephemeral
        ]
        no_pings(w.discord)


def test_thread_names_fit_discord() -> None:
    assert thread_name("  what\nis  this? ", "alice") == "what is this?"
    assert thread_name("", "alice") == "alice's question"
    long = thread_name("word " * 40, "alice")
    assert len(long) <= 100 and long.endswith("word…")


async def test_help_describes_the_ways_to_talk(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        private, text = await command(w, w.general, w.alice, "help")
        assert private and len(text) <= 2000
        for words in ("Regenerate", "Ask Gemini about this", "Summarize from here", "`scope`"):
            assert words in text, words
        assert "`auto_thread`" in text and "`answer_mode`" in text and "`last`" in text
