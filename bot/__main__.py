"""Composition root: settings, logging, HTTP session, database, bot; then run until stopped.

`python -m bot` runs the bot; `python -m bot report` prints a usage report from the database;
`python -m bot check` says whether the configuration can work.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from pydantic import ValidationError

from bot import report_cli
from bot.app import run_until_signalled
from bot.check import run_checks
from bot.core.pricing import PriceFileError
from bot.docs import model_table_block
from bot.i18n import CatalogError
from bot.ledger.postgres import StorageUnavailable
from bot.ledger.storage import shown
from bot.ledger.store import LedgerInUse
from bot.logs import configure_logging
from bot.settings import (
    ProbeSettings,
    Settings,
    StorageSettings,
    describe_settings_error,
    storage_url,
)


def load_settings() -> Settings | None:
    """Read the settings, printing what is missing or wrong instead of a traceback."""
    try:
        return Settings()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError as error:
        print(describe_settings_error(error), file=sys.stderr)
        return None


def probe_health() -> int:
    """0 when the bot on this host answers /healthz with 200, or has no METRICS_PORT set."""
    try:
        port = ProbeSettings().metrics_port
    except ValidationError as error:
        print(describe_settings_error(error), file=sys.stderr)
        return 2
    if port is None:
        print("METRICS_PORT is not set: no health endpoint to ask")
        return 0
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            print(response.read().decode(errors="replace"))
            return 0
    except urllib.error.HTTPError as error:
        print(error.read().decode(errors="replace"), file=sys.stderr)
    except (urllib.error.URLError, TimeoutError) as error:
        print(f"no answer from {url}: {type(error).__name__}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen command."""
    parser = argparse.ArgumentParser(prog="python -m bot", description="imagine-bot")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="run the bot (the default)")
    commands.add_parser("models", help="print the model table the README shows")
    commands.add_parser("check", help="check the settings, Discord, CometAPI and the database")
    commands.add_parser(
        "healthcheck", help="ask the running bot's /healthz (METRICS_PORT); for containers"
    )
    report_cli.add_arguments(
        commands.add_parser(
            "report", help="print a usage report from the database (needs no Discord token)"
        )
    )
    args = parser.parse_args(argv)
    if args.command == "models":
        print(model_table_block())
        return 0
    if args.command == "healthcheck":
        return probe_health()
    if args.command == "report":
        # Only the database's location: an operator's shell need not hold the bot's secrets.
        try:
            if args.database_url:
                url = args.database_url
            elif args.database:
                url = storage_url(None, args.database)
            else:
                url = StorageSettings().url
        except ValidationError as error:
            print(describe_settings_error(error), file=sys.stderr)
            return 2
        return report_cli.run(args, url)
    settings = load_settings()
    if settings is None:
        return 2
    if args.command == "check":
        results = asyncio.run(run_checks(settings))
        print("\n".join(result.line() for result in results))
        return 0 if all(result.ok for result in results) else 1
    configure_logging(
        settings.log_level, settings.secrets, json_lines=settings.log_format == "json"
    )
    try:
        return asyncio.run(run_until_signalled(settings))
    except CatalogError as error:
        print(f"translation catalogs (bot/locales): {error}", file=sys.stderr)
        return 2
    except PriceFileError as error:
        print(f"PRICE_FILE {settings.price_file}: {error}", file=sys.stderr)
        return 2
    except LedgerInUse as error:
        print(f"{shown(settings.storage_url)}: {error}", file=sys.stderr)
        return 2
    except StorageUnavailable as error:
        print(f"DATABASE_URL: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
