"""Message actions (right-click a message → Apps): "Ask Gemini about this" opens a form for
the question and answers it with that message's text and files; "Summarize from here"
summarizes the channel from that message on, only for the person who asked."""

from __future__ import annotations

import asyncio
import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import Gemcord
from bot.checks import allowed_here
from bot.cogs.chat import Chat, prompt_text
from bot.conversation import Quote
from bot.sink import NO_PINGS

log = logging.getLogger(__name__)

ASK_MENU = "Ask Gemini about this"
SUMMARY_MENU = "Summarize from here"
SUMMARY_MESSAGES = 100
"""Messages a summary covers at most: the chosen one and the ones after it (one history page)."""
SUMMARY_CHARS = 30_000
"""Characters of conversation a summary sends at most (about 7,500 tokens)."""
FETCH_WAIT = 2.0
"""Seconds the history fetch may take: an interaction must be answered within 3."""
QUESTION_INPUT = "question"
NOT_HERE = "I'm not enabled in this channel."


def transcript(messages: list[discord.Message], bot_id: int) -> tuple[str, int]:
    """The messages as "[name] text" lines, oldest first, within :data:`SUMMARY_CHARS`; and how
    many fit. Files are named; messages with nothing to show are skipped."""
    lines: list[str] = []
    size = 0
    for count, message in enumerate(messages):
        text = prompt_text(message, bot_id) if message.author.id != bot_id else message.content
        files = ", ".join(a.filename for a in message.attachments)
        if files:
            text = f"{text} (files: {files})".strip()
        if not text:
            continue
        line = f"[{message.author.display_name}] {text}"
        if size + len(line) > SUMMARY_CHARS and lines:
            return "\n".join(lines), count
        lines.append(line[:SUMMARY_CHARS])
        size += len(line) + 1
    return "\n".join(lines), len(messages)


def summary_request(channel_name: str, body: str, shown: int, total: int) -> str:
    """The question a summary sends: what to do, then the conversation."""
    more = "" if shown == total else f" (the first {shown} of the {total} messages I picked)"
    return (
        f"Summarize this part of the conversation in #{channel_name}{more}: the main points, "
        "decisions and open questions, briefly, naming who said what where it matters.\n\n"
        f"{body}"
    )


class AskModal(discord.ui.Modal):
    """The form "Ask Gemini about this" opens: one question about the chosen message."""

    def __init__(self, chat: Chat, message: discord.Message) -> None:
        super().__init__(title="Ask Gemini about this message", timeout=900)
        self.chat = chat
        self.message = message
        self.question: discord.ui.TextInput[AskModal] = discord.ui.TextInput(
            custom_id=QUESTION_INPUT,
            style=discord.TextStyle.paragraph,
            placeholder="What would you like to know about it?",
            max_length=4000,
        )
        self.add_item(discord.ui.Label(text="Your question", component=self.question))

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Answer in the channel, with the message's text and files as context."""
        text = self.question.value.strip()
        if not text:
            await interaction.response.send_message(
                "Ask me something: the question is empty.",
                ephemeral=True,
                allowed_mentions=NO_PINGS,
            )
            return
        bot_id = interaction.client.user.id if interaction.client.user else 0
        message = self.message
        quote = Quote(
            message_id=message.id,
            author_name=message.author.display_name,
            text=prompt_text(message, bot_id) or message.content,
            by_bot=message.author.id == bot_id,
        )
        await self.chat.answer_interaction(
            interaction, text, list(message.attachments), quote=quote
        )


class Actions(commands.Cog):
    """The two message actions; questions go through the Chat cog like every other."""

    def __init__(self, bot: Gemcord) -> None:
        self.bot = bot
        self.menus = [
            app_commands.ContextMenu(name=ASK_MENU, callback=self.ask_about),
            app_commands.ContextMenu(name=SUMMARY_MENU, callback=self.summarize),
        ]

    async def cog_load(self) -> None:
        """Register the menus (synced with the slash commands)."""
        for menu in self.menus:
            self.bot.tree.add_command(menu)

    async def cog_unload(self) -> None:
        """Unregister the menus."""
        for menu in self.menus:
            self.bot.tree.remove_command(menu.name, type=menu.type)

    def _chat(self) -> Chat:
        chat = self.bot.get_cog("Chat")
        assert isinstance(chat, Chat), "the Chat cog is loaded first"
        return chat

    async def ask_about(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Open the question form (the answer comes with its submission)."""
        if not allowed_here(self.bot.settings, interaction.channel, interaction.user):
            await _private(interaction, NOT_HERE)
            return
        await interaction.response.send_modal(AskModal(self._chat(), message))

    async def summarize(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Summarize from `message` on (up to :data:`SUMMARY_MESSAGES`), privately."""
        channel = interaction.channel
        if not allowed_here(self.bot.settings, channel, interaction.user):
            await _private(interaction, NOT_HERE)
            return
        try:
            later = await asyncio.wait_for(_after(channel, message), FETCH_WAIT)
        except (discord.HTTPException, TimeoutError) as exc:
            log.info("could not read the history of channel %s: %s", interaction.channel_id, exc)
            await _private(
                interaction,
                "I couldn't read this channel's messages (I need Read Message History here).",
            )
            return
        messages = [message, *later][:SUMMARY_MESSAGES]
        bot_id = self.bot.user.id if self.bot.user else 0
        body, shown = transcript(messages, bot_id)
        if not body:
            await _private(interaction, "There is nothing to summarize from that message on.")
            return
        name = getattr(channel, "name", None) or "this conversation"
        text = summary_request(name, body, shown, len(messages))
        await self._chat().answer_interaction(interaction, text, [], private=True)


async def _after(channel: object, message: discord.Message) -> list[discord.Message]:
    """The messages after `message`, oldest first (one page)."""
    history = channel.history(  # type: ignore[attr-defined]
        limit=SUMMARY_MESSAGES - 1, after=message, oldest_first=True
    )
    return [m async for m in history]


async def _private(interaction: discord.Interaction, text: str) -> None:
    await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_PINGS)


async def setup(bot: Gemcord) -> None:
    """Extension entry point."""
    await bot.add_cog(Actions(bot))
