"""Translations and locale formats: gettext catalogs read with Babel, chosen per reader.

Discord-free on purpose: the glue picks the reader's locale and hands a `Messages` to the
renderers; this module only loads the `.po` catalogs, looks strings up, checks their
placeholders and formats numbers, money and dates the way each language writes them.

Messages use str.format's named placeholders (`{limit}`), never positional ones, so a
translation may reorder them.
"""

from __future__ import annotations

import gettext
import io
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Final

from babel import Locale
from babel.dates import format_date, format_datetime, format_skeleton
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal

SOURCE_LANGUAGE: Final = "en"
"""The language the source strings are written in (every msgid)."""
LANGUAGES: Final = ("en", "ja", "de")
LOCALES_DIR: Final = Path(__file__).resolve().parent / "locales"
DOMAIN: Final = "messages"


def N_(message: str) -> str:
    """Mark a string for the catalog without translating it here (it is looked up later)."""
    return message


def placeholders(template: str) -> frozenset[str]:
    """The named fields of a str.format template: `{used} of {limit}` -> {used, limit}."""
    return frozenset(
        name.partition(".")[0].partition("[")[0]
        for _, name, _, _ in string.Formatter().parse(template)
        if name is not None
    )


def language_of(locale: str | None) -> str | None:
    """Our language for a Discord locale ("ja", "de", "en-US"), or None when we have none."""
    if not locale:
        return None
    base = locale.replace("_", "-").split("-")[0].lower()
    return base if base in LANGUAGES else None


def choose_language(member_locale: str | None, server_locale: str | None) -> str:
    """The member's language if we have it, else the server's, else English."""
    return language_of(member_locale) or language_of(server_locale) or SOURCE_LANGUAGE


class CatalogError(ValueError):
    """A catalog the bot cannot use: a translation's placeholders differ from its message's."""


@dataclass(frozen=True, slots=True)
class Messages:
    """One language's translations and formats; read-only once built."""

    language: str
    translations: gettext.NullTranslations = field(default_factory=gettext.NullTranslations)

    def gettext(self, message: str, /, **values: object) -> str:
        """The translation of `message` with its placeholders filled in."""
        return self.translations.gettext(message).format(**values)

    def ngettext(self, singular: str, plural: str, n: int, /, **values: object) -> str:
        """The form of `singular`/`plural` for `n`; `{n}` is `n` in the locale's digits."""
        template = self.translations.ngettext(singular, plural, n)
        return template.format(n=self.number(n), **values)

    def lookup(self, message: str) -> str | None:
        """The translation of `message`, or None when the catalog has none (or it is English)."""
        translated = self.translations.gettext(message)
        return None if translated == message else translated

    def number(self, value: float) -> str:
        """A number with the locale's grouping and decimal signs: 1234.5 -> "1.234,5" in de."""
        return format_decimal(value, locale=self.language)

    def decimal(self, value: float, digits: int = 1) -> str:
        """A number with exactly `digits` decimals ("4.2" s, "4,2" s in de)."""
        return format_decimal(value, format=f"#,##0.{'0' * digits}", locale=self.language)

    def _money(self, amount: float, fraction: str) -> str:
        # The locale's own currency pattern (where the sign goes, which separators), with
        # the fraction digits we want in place of the currency's two.
        standard = Locale.parse(self.language).currency_formats["standard"].pattern
        pattern = standard.split(";")[0].replace("0.00", f"0.{fraction}")
        return format_currency(
            amount, "USD", format=pattern, locale=self.language, currency_digits=False
        )

    def usd(self, amount: float) -> str:
        """US dollars in the locale's way, with sub-cent precision for small amounts.

        Cents suffice from $10; a few images cost fractions of a cent, so smaller amounts
        show four decimals (as the English reports always did).
        """
        return self._money(amount, "00" if amount >= 10 or amount == 0 else "0000")

    def price(self, amount: float) -> str:
        """A unit price with only the digits it has: $4, $0.04, $0.016 (0,016 $ in de)."""
        return self._money(amount, "#" * 10)

    def day(self, value: date) -> str:
        """A calendar day as the locale writes it: 2026/11/01 in ja, 01.11.2026 in de.

        English keeps ISO 8601 (2026-11-01), the form its reports and the command line
        have always printed and operators script against.
        """
        if self.language == SOURCE_LANGUAGE:
            return value.isoformat()
        return format_date(value, format="medium", locale=self.language)

    def iso_day(self, text: str) -> str:
        """A stored YYYY-MM-DD day, localized; text that is not such a day is kept."""
        try:
            return self.day(date.fromisoformat(text[:10]))
        except ValueError:
            return text

    def month_day(self, value: date) -> str:
        """A day without its year, for a chart's axis: 11-01 / 11/1 / 01.11."""
        if self.language == SOURCE_LANGUAGE:
            return value.strftime("%m-%d")
        return format_skeleton("MMdd", value, locale=self.language)

    def minute(self, moment: datetime) -> str:
        """A UTC date and time to the minute (English: 2026-11-01 13:05, as before)."""
        if self.language == SOURCE_LANGUAGE:
            return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
        return format_datetime(moment, format="short", tzinfo=UTC, locale=self.language)


def _compiled(catalog: Catalog) -> gettext.GNUTranslations:
    """The catalog as GNU gettext reads it: plural rules and all, with no .mo on disk."""
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


def _forms(value: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """A message's id or translation as its forms: one, or one per plural form."""
    if value is None:
        return ("",)
    return (value,) if isinstance(value, str) else tuple(value)


def placeholder_problems(catalog: Catalog) -> list[str]:
    """Translations whose placeholders differ from their message's: they would not format."""
    problems: list[str] = []
    for message in catalog:
        if not message.id:
            continue  # the header
        ids, texts = _forms(message.id), _forms(message.string)
        # Every plural form carries the plural msgid's fields ({n} included).
        expected = placeholders(ids[-1])
        for text in texts:
            if text and placeholders(text) != expected:
                problems.append(
                    f"{ids[0][:60]!r}: placeholders {sorted(placeholders(text))} "
                    f"instead of {sorted(expected)}"
                )
    return problems


def catalog_problems(catalog: Catalog) -> list[str]:
    """Everything a shipped catalog must not have: fuzzy or missing translations, and
    placeholders that differ. The tests hold the catalogs to it."""
    problems: list[str] = []
    for message in catalog:
        if not message.id:
            continue
        shown = _forms(message.id)[0][:60]
        if message.fuzzy:
            problems.append(f"{shown!r} is fuzzy")
        if not all(_forms(message.string)):
            problems.append(f"{shown!r} has no translation")
    return problems + placeholder_problems(catalog)


def read_catalog(path: Path, language: str) -> Catalog:
    """A .po file as a Babel catalog."""
    with path.open("rb") as file:
        return read_po(file, locale=language, domain=DOMAIN)


@dataclass(frozen=True, slots=True)
class Localizer:
    """Every language's `Messages`, loaded once at start and handed to whoever renders."""

    catalogs: Mapping[str, Messages]

    @classmethod
    def load(cls, folder: Path = LOCALES_DIR, languages: Iterable[str] = LANGUAGES) -> Localizer:
        """Read and check `<folder>/<language>/LC_MESSAGES/messages.po` for each language."""
        found: dict[str, Messages] = {}
        for language in languages:
            if language == SOURCE_LANGUAGE:
                found[language] = Messages(language)
                continue
            path = folder / language / "LC_MESSAGES" / f"{DOMAIN}.po"
            catalog = read_catalog(path, language)
            # A wrong placeholder would fail mid-message, so it stops the start. A missing or
            # fuzzy translation only shows the English (gettext skips it); the tests refuse
            # both in the shipped catalogs.
            problems = placeholder_problems(catalog)
            if problems:
                raise CatalogError(f"{path}: " + "; ".join(problems[:5]))
            found[language] = Messages(language, _compiled(catalog))
        return cls(MappingProxyType(found))

    @property
    def english(self) -> Messages:
        """The source language."""
        return self.catalogs[SOURCE_LANGUAGE]

    def messages(self, language: str) -> Messages:
        """One language's messages; English for a language not loaded."""
        return self.catalogs.get(language) or self.english

    def choose(self, member_locale: str | None, server_locale: str | None) -> Messages:
        """The member's language first, then the server's, then English."""
        return self.messages(choose_language(member_locale, server_locale))
