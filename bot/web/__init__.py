"""The web chat (`gemcord web`): a chat page and a WebSocket on the same reply engine as Discord."""
