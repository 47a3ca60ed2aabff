"""imagine-bot: CometAPI's image models in Discord servers."""

__version__ = "0.1.0"
