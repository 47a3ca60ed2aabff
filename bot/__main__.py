"""Composition root: settings, logging, HTTP session, database, bot; then run until stopped.

`python -m bot` runs the bot.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from bot.app import run_until_signalled
from bot.docs import model_table_block
from bot.logs import configure_logging
from bot.settings import Settings, describe_settings_error


def load_settings() -> Settings | None:
    """Read the settings, printing what is missing or wrong instead of a traceback."""
    try:
        return Settings()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError as error:
        print(describe_settings_error(error), file=sys.stderr)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen command."""
    parser = argparse.ArgumentParser(prog="python -m bot", description="imagine-bot")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="run the bot (the default)")
    commands.add_parser("models", help="print the model table the README shows")
    args = parser.parse_args(argv)
    if args.command == "models":
        print(model_table_block())
        return 0
    settings = load_settings()
    if settings is None:
        return 2
    configure_logging(
        settings.log_level,
        [settings.discord_token.get_secret_value(), settings.cometapi_key.get_secret_value()],
    )
    return asyncio.run(run_until_signalled(settings))


if __name__ == "__main__":
    sys.exit(main())
