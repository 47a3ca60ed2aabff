"""The catalogs: complete, placeholders intact, the template current, the reader's language."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import discord
import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.pofile import read_po, write_po
from discord import app_commands
from discord.ext import commands

from bot.charts import daily_chart_png, font_for
from bot.core.catalog import CATALOG, OUTPUT_FORMATS
from bot.glue.cogs.actions import ResultActions
from bot.glue.cogs.admin import AdminCog
from bot.glue.cogs.imagine import ImagineCog
from bot.glue.cogs.usage import UsageCog
from bot.glue.report_embeds import PERIOD_LABELS, window_label
from bot.glue.translator import CatalogTranslator
from bot.i18n import (
    LOCALES_DIR,
    CatalogError,
    Localizer,
    Messages,
    catalog_problems,
    choose_language,
    placeholders,
)
from bot.ledger.periods import Period
from bot.ledger.reports import DailySeries, date_window, usd, window_for
from bot.ledger.results import HISTORY_MAX

BOT = Path(__file__).resolve().parents[1] / "bot"
TEMPLATE = LOCALES_DIR / "messages.pot"
TRANSLATED = ("ja", "de")

MessageId = str | tuple[str, ...]


def _key(message_id: Any) -> MessageId:
    return message_id if isinstance(message_id, str) else tuple(message_id)


def read(path: Path, locale: str | None = None) -> Catalog:
    with path.open("rb") as file:
        return read_po(file, locale=locale)


def ids(catalog: Catalog) -> set[MessageId]:
    return {_key(message.id) for message in catalog if message.id}


def po(language: str) -> Path:
    return LOCALES_DIR / language / "LC_MESSAGES" / "messages.po"


@pytest.fixture(scope="module")
def localizer() -> Localizer:
    return Localizer.load()


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_template_message_has_a_translation(language: str) -> None:
    """Each msgid of the template is in the language's catalog, translated and not fuzzy."""
    catalog = read(po(language), language)
    messages = {_key(message.id): message for message in catalog if message.id}
    missing = ids(read(TEMPLATE)) - set(messages)
    assert missing == set()
    untranslated = [
        key
        for key, message in messages.items()
        if message.fuzzy
        or not all(message.string if isinstance(message.string, tuple) else [message.string])
    ]
    assert untranslated == []
    # Nothing stale either: the catalog holds exactly the template's messages.
    assert set(messages) == ids(read(TEMPLATE))


@pytest.mark.parametrize("language", TRANSLATED)
def test_each_translation_has_the_placeholders_of_its_message(language: str) -> None:
    """`{limit}` in the English means `{limit}` in the translation, no more, no fewer."""
    catalog = read(po(language), language)
    assert catalog_problems(catalog) == []
    for message in catalog:
        if not message.id:
            continue
        source = _key(message.id)
        expected = placeholders(source if isinstance(source, str) else source[-1])
        forms = _key(message.string or "")
        for form in (forms,) if isinstance(forms, str) else forms:
            assert placeholders(form) == expected, (source, form)


def test_the_template_holds_every_marked_string_of_the_source() -> None:
    """pybabel's extraction of bot/ gives exactly the template's messages: it is current."""
    extracted: set[MessageId] = set()
    for _, _, message, _, _ in extract_from_dir(
        str(BOT), method_map=[("**.py", "python")], keywords=DEFAULT_KEYWORDS
    ):
        extracted.add(_key(message))
    template = ids(read(TEMPLATE))
    assert extracted - template == set(), "run pybabel extract (README, Languages)"
    assert template - extracted == set(), "the template has messages the source no longer marks"


def _write_german(folder: Path, catalog: Catalog) -> None:
    (folder / "de" / "LC_MESSAGES").mkdir(parents=True)
    with (folder / "de" / "LC_MESSAGES" / "messages.po").open("wb") as file:
        write_po(file, catalog)


def test_a_catalog_with_a_wrong_placeholder_stops_the_start(tmp_path: Path) -> None:
    """The check the bot runs at start: a renamed placeholder would break a message later."""
    catalog = Catalog(locale="de")
    catalog.add("{used} of {limit}", "{benutzt} von {limit}")
    _write_german(tmp_path, catalog)
    with pytest.raises(CatalogError) as caught:
        Localizer.load(tmp_path, ("en", "de"))
    assert "{used} of {limit}" in str(caught.value)


def test_a_fuzzy_or_missing_translation_reads_english_and_fails_the_checks(
    tmp_path: Path,
) -> None:
    """At run time the reader gets the English; the catalog check still names both."""
    catalog = Catalog(locale="de")
    catalog.add("Model", "Modell", flags=["fuzzy"])
    catalog.add("Size", "")
    catalog.add("Quality", "Qualität")
    _write_german(tmp_path, catalog)
    german = Localizer.load(tmp_path, ("en", "de")).messages("de")
    assert [german.gettext(text) for text in ("Model", "Size", "Quality")] == [
        "Model",
        "Size",
        "Qualität",
    ]
    problems = catalog_problems(read(tmp_path / "de" / "LC_MESSAGES" / "messages.po", "de"))
    assert problems == ["'Model' is fuzzy", "'Size' has no translation"]


@pytest.mark.parametrize(
    ("member", "server", "language"),
    [
        ("ja", "de", "ja"),
        ("de", "ja", "de"),
        ("en-US", "de", "en"),
        ("en-GB", "ja", "en"),
        ("fr", "de", "de"),
        ("pt-BR", "ja", "ja"),
        ("fr", "es-ES", "en"),
        ("fr", None, "en"),
        (None, "de", "de"),
        (None, None, "en"),
    ],
)
def test_the_members_language_first_then_the_servers_then_english(
    member: str | None, server: str | None, language: str, localizer: Localizer
) -> None:
    """A member whose locale we have gets it; otherwise the server's; otherwise English."""
    assert choose_language(member, server) == language
    assert localizer.choose(member, server).language == language


def test_lookups_and_plurals_follow_the_language(localizer: Localizer) -> None:
    """German has two forms, Japanese one; English is the source itself."""
    de, ja, en = (localizer.messages(code) for code in ("de", "ja", "en"))
    assert de.ngettext("{n} image", "{n} images", 1) == "1 Bild"
    assert de.ngettext("{n} image", "{n} images", 1234) == "1.234 Bilder"
    assert ja.ngettext("{n} image", "{n} images", 3) == "画像3枚"
    assert en.ngettext("{n} image", "{n} images", 1) == "1 image"
    assert ja.gettext("Model") == "モデル"
    assert en.gettext("Model") == "Model"


@pytest.mark.parametrize(
    ("language", "number", "money", "cents", "day"),
    [
        ("en", "1,234.5", "$1,234.50", "$0.0400", "2026-11-01"),
        ("de", "1.234,5", "1.234,50\xa0$", "0,0400\xa0$", "01.11.2026"),
        ("ja", "1,234.5", "$1,234.50", "$0.0400", "2026/11/01"),
    ],
)
def test_numbers_money_and_days_follow_the_locale(
    language: str, number: str, money: str, cents: str, day: str, localizer: Localizer
) -> None:
    """Babel's signs per locale: 1.234,5 and 1.234,50 $ in German; English as it always was."""
    tr = localizer.messages(language)
    assert tr.number(1234.5) == number
    assert tr.usd(1234.5) == money
    assert tr.usd(0.04) == cents
    assert tr.day(date(2026, 11, 1)) == day


@pytest.mark.parametrize("amount", [0, 0.0001, 0.04, 0.0123, 9.9999, 10, 1234.5, 1_000_000])
def test_english_money_reads_exactly_as_the_ledgers(amount: float) -> None:
    """The English Discord texts did not change: Messages.usd is the ledger's usd() in English."""
    assert Messages("en").usd(amount) == usd(amount)


def test_period_names_are_the_ledgers_labels() -> None:
    """window_label recognises a named period by the ledger's label: they must stay equal."""
    assert dict(PERIOD_LABELS) == {period: period.label for period in Period}


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (date(2026, 11, 1), date(2026, 11, 30)),
        (date(2026, 11, 5), date(2026, 11, 5)),
        (date(2026, 11, 1), None),
        (None, date(2026, 11, 30)),
        (None, None),
    ],
)
def test_a_windows_label_in_english_is_the_ledgers_and_in_german_uses_german_days(
    start: date | None, end: date | None, localizer: Localizer
) -> None:
    """Date windows: the same words as the ledger in English; German days in German."""
    window = date_window(start, end)
    assert window_label(localizer.english, window) == window.label
    german = window_label(localizer.messages("de"), window)
    if start is not None:
        assert start.strftime("%d.%m.%Y") in german
    if start and end and start != end:
        assert german == "01.11.2026 bis 30.11.2026 (UTC)"


def test_named_periods_are_translated(localizer: Localizer) -> None:
    """The last 30 days reads as such in each language."""
    window = window_for(Period.DAYS_30, datetime(2026, 11, 30, tzinfo=UTC))
    assert window_label(localizer.messages("de"), window) == "die letzten 30 Tage"
    assert window_label(localizer.messages("ja"), window) == "過去30日間"


class RecordingTranslator(app_commands.Translator):
    """Answers like the bot's translator and remembers every string discord.py asked for."""

    def __init__(self, inner: CatalogTranslator) -> None:
        self.inner = inner
        self.asked: set[str] = set()

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        self.asked.add(string.message)
        return await self.inner.translate(string, locale, context)


@pytest.fixture
async def tree(localizer: Localizer) -> AsyncIterator[app_commands.CommandTree[Any]]:
    """The bot's real commands on a tree (the cogs are built but never run)."""
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.none())
    service: Any = object()
    imagine = ImagineCog(service, "dall-e-3", fetcher=object(), localizer=localizer)  # type: ignore[arg-type]
    await bot.add_cog(imagine)
    bot.tree.add_command(imagine.remix_menu)
    await bot.add_cog(ResultActions(service, imagine, "dall-e-3", localizer))
    await bot.add_cog(UsageCog(service, localizer))
    await bot.add_cog(AdminCog(service, localizer))
    yield bot.tree
    await bot.close()


# Read the same in every language: model names and file formats.
NOT_TRANSLATED = frozenset(CATALOG) | frozenset(OUTPUT_FORMATS)


async def test_every_string_the_command_tree_localizes_is_in_the_catalog(
    tree: app_commands.CommandTree[Any], localizer: Localizer
) -> None:
    """A new option, choice or description not marked for the catalog fails here."""
    recorder = RecordingTranslator(CatalogTranslator(localizer))
    payloads = [
        await command.get_translated_payload(tree, recorder) for command in tree.get_commands()
    ]
    template = {key for key in ids(read(TEMPLATE)) if isinstance(key, str)}
    assert recorder.asked - template - NOT_TRANSLATED == set()
    imagine = next(payload for payload in payloads if payload["name"] == "imagine")
    assert imagine["name_localizations"] == {"ja": "画像生成", "de": "bild-erstellen"}
    assert set(imagine["description_localizations"]) == {"ja", "de"}


async def test_only_japanese_and_german_get_localizations(localizer: Localizer) -> None:
    """English locales and languages without a catalog keep Discord's default (the English)."""
    translator = CatalogTranslator(localizer)
    context: app_commands.TranslationContextTypes = app_commands.TranslationContext(
        location=app_commands.TranslationContextLocation.other, data=None
    )
    text = app_commands.locale_str("usage")
    assert await translator.translate(text, discord.Locale.japanese, context) == "利用状況"
    assert await translator.translate(text, discord.Locale.german, context) == "nutzung"
    for locale in (discord.Locale.american_english, discord.Locale.british_english):
        assert await translator.translate(text, locale, context) is None
    assert await translator.translate(text, discord.Locale.french, context) is None


def test_the_history_description_names_its_maximum(tree: app_commands.CommandTree[Any]) -> None:
    """The catalog cannot fill a description in, so the text must keep up with HISTORY_MAX."""
    history = tree.get_command("history")
    assert isinstance(history, app_commands.Command)
    assert f"at most {HISTORY_MAX})" in str(history.parameters[0].description)


def test_japanese_chart_labels_need_a_cjk_font() -> None:
    """Pillow's own font has Latin letters only: German draws with it, Japanese needs more."""
    assert font_for(["Bilder pro Tag für Größe"], cjk_fonts=()) is not None
    assert font_for(["画像の数"], cjk_fonts=()) is None
    assert font_for(["画像の数"], cjk_fonts=(Path("/nonexistent/font.ttc"),)) is None


@pytest.mark.parametrize("language", ["en", "ja", "de"])
def test_the_chart_draws_in_every_language(language: str, localizer: Localizer) -> None:
    """With the English fallback, a chart comes out whatever fonts the machine has."""
    day = date(2026, 11, 1)
    series = DailySeries((day,), ("dall-e-3",), {(day, "dall-e-3"): 3})
    tr = localizer.messages(language)
    data = daily_chart_png(series, "x", tr=tr, fallback=("x", localizer.english))
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
