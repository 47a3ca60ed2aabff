"""The README's model table is the catalog's."""

from __future__ import annotations

from pathlib import Path

from bot.docs import model_table_block

ROOT = Path(__file__).parents[1]


def test_readme_model_table_is_generated_from_the_catalog() -> None:
    """Edit bot/catalog.py, then paste `python -m bot models` into the README."""
    assert model_table_block() in (ROOT / "README.md").read_text(encoding="utf-8")


def test_env_example_lists_every_setting() -> None:
    """Each setting has a line in .env.example."""
    from bot.settings import Settings

    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    for name in Settings.model_fields:
        assert f"\n{name.upper()}=" in text, name
