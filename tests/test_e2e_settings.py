"""End to end: `/settings show` and `/settings set` through the real discord.py client."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.discord import Perm
from tests.harness import world


async def test_settings_show_set_and_inherit(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        mods = w.discord.add_role(w.guild, "mods", permissions=Perm.MANAGE_MESSAGES)
        w.discord.add_member(w.guild, w.bob, roles=[mods])
        thread = w.discord.add_thread(w.general, "side talk")
        assert w.bot is not None

        async def run(channel, user, name: str, options: dict | None = None):  # type: ignore[no-untyped-def]
            inter = await w.discord.slash_command(channel, user, name, options or {})
            await inter.wait_for_callback()
            return inter.ephemeral, (inter.original or object()).content  # type: ignore[attr-defined]

        private, text = await run(w.general, w.alice, "settings show")
        assert private
        assert "`search`: off (default)" in text and "`links`: on (default)" in text
        assert "`model`: gemini-2.5-flash (default)" in text

        # only a moderator may change a setting, and only to one of its choices
        private, text = await run(
            w.general, w.alice, "settings set", {"option": "search", "value": "on"}
        )
        assert private and "Manage Messages" in text
        private, text = await run(
            w.general, w.bob, "settings set", {"option": "search", "value": "maybe"}
        )
        assert private and "`on`" in text and "`off`" in text
        assert (await w.bot.store.get_channel_settings(w.general.id)).search is None

        private, text = await run(
            w.general, w.bob, "settings set", {"option": "search", "value": "ON"}
        )
        assert not private and text == "`search` is now `on` in this channel."
        assert (await w.bot.store.get_channel_settings(w.general.id)).search == "on"

        # a thread inherits what it does not set itself; the other channel keeps the default
        _, text = await run(thread, w.alice, "settings show")
        assert "`search`: on —" in text
        _, text = await run(w.random, w.alice, "settings show")
        assert "`search`: off (default)" in text

        await run(w.general, w.bob, "settings set", {"option": "search", "value": "default"})
        assert (await w.bot.store.get_channel_settings(w.general.id)).search is None
