"""The server report's chart: images per UTC day, stacked by model, as a PNG drawn with Pillow.

Drawing is CPU work: the cog runs `daily_chart_png` in a thread, never on the event loop.
Labels are in the reader's language when a font can draw it: Pillow's built-in font has
Latin letters only, so Japanese needs a CJK font installed (Noto CJK, IPA Gothic...); without
one the chart falls back to English rather than draw empty boxes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Final

from PIL import Image, ImageDraw, ImageFont

from bot.core.catalog import CATALOG
from bot.i18n import SOURCE_LANGUAGE, Messages
from bot.ledger.reports import DailySeries

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

CHART_SIZE: Final = (960, 480)
BACKGROUND: Final = (255, 255, 255)
_INK: Final = (40, 40, 40)
_GRID: Final = (225, 225, 225)
# Okabe-Ito: distinguishable with the common colour-vision deficiencies. A model keeps its
# colour in every chart because the colour follows its place in the catalog.
_PALETTE: Final = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (213, 94, 0),
    (0, 114, 178),
    (204, 121, 167),
    (240, 228, 66),
)
_OTHER: Final = (153, 153, 153)
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 190, 44, 56
_Y_TICKS: Final = 5
_X_LABELS: Final = 8
_FONT_SIZE: Final = 10
# Where Debian's and Ubuntu's CJK font packages put their fonts (fonts-noto-cjk,
# fonts-ipafont-gothic, fonts-droid-fallback), in order of preference.
CJK_FONTS: Final = (
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/opentype/ipafont-gothic/ipagp.ttf"),
    Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"),
)
# Pillow's built-in font covers Latin-1 and Latin Extended-A/B (German's umlauts and ß).
_LATIN_END: Final = 0x0250


def model_colour(model: str) -> tuple[int, int, int]:
    """The colour of a model's bars and legend box."""
    names = list(CATALOG)
    if model in names:
        return _PALETTE[names.index(model) % len(_PALETTE)]
    return _OTHER


def _nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is at least `value` (and at least 5)."""
    value = max(value, _Y_TICKS)
    magnitude = int(10 ** math.floor(math.log10(value)))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def _buckets(series: DailySeries, bars: int) -> tuple[int, list[tuple[date, dict[str, int]]]]:
    """Group days so there is at most `bars` bars; return days per bar and each bar's counts."""
    per_bar = max(1, math.ceil(len(series.days) / bars))
    grouped: list[tuple[date, dict[str, int]]] = []
    for start in range(0, len(series.days), per_bar):
        days = series.days[start : start + per_bar]
        counts = {
            model: sum(series.images.get((day, model), 0) for day in days)
            for model in series.models
        }
        grouped.append((days[0], counts))
    return per_bar, grouped


def font_for(texts: Iterable[str], cjk_fonts: Iterable[Path] = CJK_FONTS) -> Font | None:
    """A font that draws every character of `texts`, or None when none is installed."""
    if all(ord(char) < _LATIN_END for text in texts for char in text):
        return ImageFont.load_default(_FONT_SIZE)
    for path in cjk_fonts:
        if path.is_file():
            return ImageFont.truetype(str(path), _FONT_SIZE)
    return None


def _heading(tr: Messages, title: str, per_bar: int) -> str:
    if per_bar == 1:
        return tr.gettext("{title}: images per day (UTC)", title=title)
    return tr.ngettext(
        "{title}: images per {n} day (UTC)",
        "{title}: images per {n} days (UTC)",
        per_bar,
        title=title,
    )


def daily_chart_png(
    series: DailySeries,
    title: str,
    *,
    tr: Messages | None = None,
    fallback: tuple[str, Messages] | None = None,
) -> bytes:
    """Draw images per day stacked by model, with axes, a legend and the title; return PNG.

    `title` is in `tr`'s language (English by default); `fallback` is the title and the
    language to draw in when no installed font has `tr`'s letters.
    """
    tr = tr or Messages(SOURCE_LANGUAGE)
    width, height = CHART_SIZE
    plot_left, plot_right = _LEFT, width - _RIGHT
    plot_top, plot_bottom = _TOP, height - _BOTTOM
    plot_width = plot_right - plot_left
    per_bar, bars = _buckets(series, plot_width // 2)

    heading = _heading(tr, title, per_bar)
    empty = tr.gettext("No images in this period")
    font = font_for((heading, empty, *series.models))
    if font is None and fallback is not None:
        title, tr = fallback
        heading, empty = _heading(tr, title, per_bar), tr.gettext("No images in this period")
    font = font or ImageFont.load_default(_FONT_SIZE)

    image = Image.new("RGB", CHART_SIZE, BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((plot_left, 12), heading, fill=_INK, font=font)

    peak = max((sum(counts.values()) for _, counts in bars), default=0)
    top_value = _nice_ceiling(peak)
    for tick in range(_Y_TICKS + 1):
        value = top_value * tick // _Y_TICKS
        y = plot_bottom - (plot_bottom - plot_top) * tick / _Y_TICKS
        draw.line([(plot_left, y), (plot_right, y)], fill=_GRID)
        draw.text((plot_left - 8, y), tr.number(value), fill=_INK, font=font, anchor="rm")
    draw.line([(plot_left, plot_top), (plot_left, plot_bottom)], fill=_INK)
    draw.line([(plot_left, plot_bottom), (plot_right, plot_bottom)], fill=_INK)

    if peak == 0:
        draw.text(
            ((plot_left + plot_right) / 2, (plot_top + plot_bottom) / 2),
            empty,
            fill=_INK,
            font=font,
            anchor="mm",
        )
    slot = plot_width / max(len(bars), 1)
    scale = (plot_bottom - plot_top) / top_value
    for index, (_, counts) in enumerate(bars):
        left = plot_left + index * slot + slot * 0.1
        right = max(left, plot_left + (index + 1) * slot - slot * 0.1 - 1)
        base = float(plot_bottom)
        for model in series.models:
            count = counts.get(model, 0)
            if count == 0:
                continue
            top = base - count * scale
            draw.rectangle([(left, top), (right, base - 1)], fill=model_colour(model))
            base = top

    label_every = max(1, math.ceil(len(bars) / _X_LABELS))
    for index in range(0, len(bars), label_every):
        x = plot_left + (index + 0.5) * slot
        draw.line([(x, plot_bottom), (x, plot_bottom + 4)], fill=_INK)
        draw.text(
            (x, plot_bottom + 8),
            tr.month_day(bars[index][0]),
            fill=_INK,
            font=font,
            anchor="mt",
        )
    if bars:
        years = sorted({bar[0].year for bar in bars})
        span = str(years[0]) if len(years) == 1 else f"{years[0]}-{years[-1]}"
        draw.text(
            ((plot_left + plot_right) / 2, height - 14), span, fill=_INK, font=font, anchor="mm"
        )

    legend_x, legend_y = plot_right + 20, plot_top
    for model in series.models:
        draw.rectangle(
            [(legend_x, legend_y), (legend_x + 12, legend_y + 12)], fill=model_colour(model)
        )
        draw.text((legend_x + 20, legend_y + 6), model, fill=_INK, font=font, anchor="lm")
        legend_y += 20

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
