"""The server report's chart: images per UTC day, stacked by model, as a PNG drawn with Pillow.

Drawing is CPU work: the cog runs `daily_chart_png` in a thread, never on the event loop.
"""

from __future__ import annotations

import io
import math
from datetime import date
from typing import Final

from PIL import Image, ImageDraw, ImageFont

from bot.core.catalog import CATALOG
from bot.ledger.reports import DailySeries

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


def daily_chart_png(series: DailySeries, title: str) -> bytes:
    """Draw images per day stacked by model, with axes, a legend and the title; return PNG."""
    width, height = CHART_SIZE
    image = Image.new("RGB", CHART_SIZE, BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    plot_left, plot_right = _LEFT, width - _RIGHT
    plot_top, plot_bottom = _TOP, height - _BOTTOM
    plot_width = plot_right - plot_left

    per_bar, bars = _buckets(series, plot_width // 2)
    unit = "day" if per_bar == 1 else f"{per_bar} days"
    draw.text((plot_left, 12), f"{title}: images per {unit} (UTC)", fill=_INK, font=font)

    peak = max((sum(counts.values()) for _, counts in bars), default=0)
    top_value = _nice_ceiling(peak)
    for tick in range(_Y_TICKS + 1):
        value = top_value * tick // _Y_TICKS
        y = plot_bottom - (plot_bottom - plot_top) * tick / _Y_TICKS
        draw.line([(plot_left, y), (plot_right, y)], fill=_GRID)
        draw.text((plot_left - 8, y), f"{value:,}", fill=_INK, font=font, anchor="rm")
    draw.line([(plot_left, plot_top), (plot_left, plot_bottom)], fill=_INK)
    draw.line([(plot_left, plot_bottom), (plot_right, plot_bottom)], fill=_INK)

    if peak == 0:
        draw.text(
            ((plot_left + plot_right) / 2, (plot_top + plot_bottom) / 2),
            "No images in this period",
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
            bars[index][0].strftime("%m-%d"),
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
