"""A server's blocked words and phrases: matched case- and accent-insensitively, whole words."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Final

MAX_TERM_LENGTH: Final = 100
MAX_TERMS: Final = 500


def normalize(text: str) -> str:
    """Lower case without accents or compatibility forms: a full-width C or an é reads c, e."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(char for char in decomposed if not unicodedata.combining(char))
    return " ".join(stripped.casefold().split())


def check_term(text: str) -> str:
    """A term an admin gave, normalized; ValueError says why it cannot be used."""
    term = normalize(text)
    if not term or not any(char.isalnum() for char in term):
        raise ValueError("a blocked term needs at least one letter or digit")
    if len(term) > MAX_TERM_LENGTH:
        raise ValueError(f"a blocked term has at most {MAX_TERM_LENGTH} characters")
    return term


def find_blocked(prompt: str, terms: Iterable[str]) -> str | None:
    """The first stored (normalized) term that stands in the prompt as whole words, if any.

    "cat" blocks "Cat!" and "CÂT" but not "category"; a phrase matches across any spacing.
    """
    text = normalize(prompt)
    for term in terms:
        words = [re.escape(word) for word in term.split()]
        if re.search(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", text):
            return term
    return None
