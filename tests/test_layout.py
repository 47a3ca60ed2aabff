"""The seam the code relies on: the generation core and the ledger never import discord."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BOT = Path(__file__).resolve().parents[1] / "bot"
PURE_PACKAGES = ("core", "ledger")


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at any depth of the file."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize(
    "path",
    sorted(p for package in PURE_PACKAGES for p in (BOT / package).rglob("*.py")),
    ids=lambda p: str(p.relative_to(BOT)),
)
def test_core_and_ledger_never_import_discord_or_the_glue(path: Path) -> None:
    """A module of the core or the ledger importing discord (or the glue) breaks the seam."""
    bad = {
        module
        for module in imported_modules(path)
        if module == "discord" or module.startswith(("discord.", "bot.glue"))
    }
    assert bad == set()


def test_the_import_rule_sees_an_import_of_discord(tmp_path: Path) -> None:
    """The check itself: a file that imports discord inside a function is caught."""
    source = tmp_path / "sneaky.py"
    source.write_text("def f():\n    from discord import ui\n    return ui\n")
    assert "discord" in imported_modules(source)
