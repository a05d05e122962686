"""Features of the bot, each loaded as a discord.py extension by `bot.app.Gemcord.setup_hook`."""
