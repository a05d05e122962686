"""gemcord: a Discord bot that answers with Google Gemini and streams each reply live."""

__version__ = "0.1.0"
