"""The README's model table is the catalog's."""

from __future__ import annotations

from pathlib import Path

from bot.core.catalog import CATALOG
from bot.docs import model_table, model_table_block

ROOT = Path(__file__).parents[1]


def test_readme_model_table_is_generated_from_the_catalog() -> None:
    """Edit bot/catalog.py, then paste `python -m bot models` into the README."""
    assert model_table_block() in (ROOT / "README.md").read_text(encoding="utf-8")


def test_model_table_says_how_each_model_edits() -> None:
    """The last column: "-" for models that do not edit, else the images, mask and fidelity."""
    lines = model_table().splitlines()
    assert lines[0].rstrip(" |").endswith("| edits")
    rows = {line.split("|")[1].strip(" `"): line.split("|")[-2].strip() for line in lines[2:]}
    assert set(rows) == set(CATALOG)
    assert rows == {
        "dall-e-3": "-",
        "dall-e-2": "-",
        "gpt-image-1": "up to 3 images, mask, fidelity",
        "gpt-image-1-mini": "up to 3 images, mask",
        "gpt-image-1.5": "up to 3 images, mask, fidelity",
        "gpt-image-2": "up to 3 images, mask",
        "qwen-image": "-",
    }


def test_readme_explains_edits_after_the_table() -> None:
    """A paragraph right after the table says how edits work."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    after = text.split(model_table_block(), 1)[1].lstrip()
    assert after.startswith("Edits:")
    for fact in ("25 MB", "4 MB", "input_fidelity", "mask"):
        assert fact in after.split("\n\n", 1)[0]


def test_env_example_lists_every_setting() -> None:
    """Each setting has a line in .env.example."""
    from bot.settings import Settings

    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    for name in Settings.model_fields:
        assert f"\n{name.upper()}=" in text, name
