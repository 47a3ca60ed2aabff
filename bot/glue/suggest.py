"""Autocomplete suggestions for /imagine's size and quality, from the catalog."""

from __future__ import annotations

from typing import Final

from bot.core.catalog import ModelSpec, normalize_size, parse_size
from bot.i18n import SOURCE_LANGUAGE, Messages

# Discord shows at most 25 suggestions, each named in at most 100 characters.
MAX_SUGGESTIONS: Final = 25
MAX_NAME: Final = 100

Suggestion = tuple[str, str]
"""(what the user reads, the value the option takes)."""


def _fit(name: str) -> str:
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 1] + "\u2026"


def _filtered(values: tuple[str, ...], typed: str) -> list[Suggestion]:
    matching = [value for value in values if typed in value.lower()]
    # Nothing matches: show everything, so the user learns what the model takes.
    return [(value, value) for value in (matching or list(values))]


def suggest_sizes(spec: ModelSpec, current: str, tr: Messages | None = None) -> list[Suggestion]:
    """Sizes the model takes that match what the user typed; a typed custom size is checked.

    The words are in `tr`'s language (English by default); why a custom size fails is the
    catalog's English rule.
    """
    tr = tr or Messages(SOURCE_LANGUAGE)
    typed = normalize_size(current)[:20]
    suggestions: list[Suggestion] = []
    dimensions = parse_size(typed)
    if spec.custom_sizes is not None and dimensions is not None and typed not in spec.sizes:
        problem = spec.custom_sizes.problem(*dimensions)
        if problem is None:
            suggestions.append((tr.gettext("{size} (custom size)", size=typed), typed))
        else:
            width, height = spec.custom_sizes.nearest(*dimensions)
            near = f"{width}x{height}"
            text = tr.gettext(
                "{nearest} (nearest allowed: {typed} fails, {problem})",
                nearest=near,
                typed=typed,
                problem=problem,
            )
            suggestions.append((_fit(text), near))
    suggestions.extend(_filtered(spec.sizes, typed))
    return suggestions[:MAX_SUGGESTIONS]


def suggest_qualities(spec: ModelSpec, current: str) -> list[Suggestion]:
    """Quality values the model takes that match what the user typed."""
    if not spec.qualities:
        return []
    return _filtered(spec.qualities, current.strip().lower()[:20])[:MAX_SUGGESTIONS]
