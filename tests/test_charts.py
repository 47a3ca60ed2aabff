"""The server chart: a valid PNG of the expected size, bars stacked by model in their colours."""

from __future__ import annotations

import io
from datetime import date, timedelta

import pytest
from PIL import Image

from bot.charts import CHART_SIZE, daily_chart_png, model_colour
from bot.ledger.reports import DailySeries

START = date(2026, 11, 1)


def days(count: int) -> tuple[date, ...]:
    return tuple(START + timedelta(days=offset) for offset in range(count))


def draw(series: DailySeries) -> Image.Image:
    """Render and decode, checking the PNG on the way."""
    data = daily_chart_png(series, "Test server, the last 7 days")
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    return image.convert("RGB")


def columns_with(image: Image.Image, colour: tuple[int, int, int]) -> dict[int, list[int]]:
    """For each x, the y values painted in `colour`."""
    found: dict[int, list[int]] = {}
    width, height = image.size
    pixels = image.load()
    assert pixels is not None
    for x in range(width):
        for y in range(height):
            if pixels[x, y] == colour:
                found.setdefault(x, []).append(y)
    return found


def bars_of(xs: list[int]) -> list[list[int]]:
    """Contiguous runs of x: one run per bar."""
    runs: list[list[int]] = []
    for x in xs:
        if runs and runs[-1][-1] == x - 1:
            runs[-1].append(x)
        else:
            runs.append([x])
    return runs


def test_chart_is_a_png_of_the_expected_size() -> None:
    """Whatever the data, the PNG has the fixed size Discord shows in the embed."""
    series = DailySeries(days(7), ("dall-e-3",), {(START, "dall-e-3"): 3})
    assert draw(series).size == CHART_SIZE == (960, 480)


def test_bars_are_stacked_in_model_colours_and_scaled() -> None:
    """Day 1: 10 dall-e-3 images; day 2: 5 dall-e-3 under 5 gpt-image-1. Heights follow counts."""
    first, second = START, START + timedelta(days=1)
    series = DailySeries(
        days(2),
        ("dall-e-3", "gpt-image-1"),
        {(first, "dall-e-3"): 10, (second, "dall-e-3"): 5, (second, "gpt-image-1"): 5},
    )
    image = draw(series)
    dalle = columns_with(image, model_colour("dall-e-3"))
    gpt = columns_with(image, model_colour("gpt-image-1"))
    # Bars (not the legend boxes, which sit right of the plot) in the plot area.
    plot_right = CHART_SIZE[0] - 190
    dalle_bars = {x: ys for x, ys in dalle.items() if x < plot_right}
    gpt_bars = {x: ys for x, ys in gpt.items() if x < plot_right}
    runs = bars_of(sorted(dalle_bars))
    assert len(runs) == 2
    first_bar, second_bar = runs
    assert first_bar
    assert second_bar
    tall = len(dalle_bars[first_bar[0]])
    short = len(dalle_bars[second_bar[0]])
    assert short * 2 == pytest.approx(tall, abs=2)
    # gpt-image-1 stands on dall-e-3 in the second bar, never in the first.
    column = second_bar[len(second_bar) // 2]
    assert max(gpt_bars[column]) < min(dalle_bars[column])
    assert len(gpt_bars[column]) == pytest.approx(short, abs=2)
    assert not any(x in gpt_bars for x in first_bar)


def test_models_absent_from_the_series_are_not_drawn() -> None:
    """Only the series' models get bars and legend entries."""
    series = DailySeries(days(3), ("qwen-image",), {(START, "qwen-image"): 1})
    image = draw(series)
    assert columns_with(image, model_colour("qwen-image"))
    assert not columns_with(image, model_colour("dall-e-3"))


def test_empty_and_long_series_still_draw() -> None:
    """No images at all, and two years of days (grouped into wider bars), both render."""
    assert draw(DailySeries(days(30), (), {})).size == CHART_SIZE
    long_days = days(800)
    series = DailySeries(long_days, ("gpt-image-2",), {(d, "gpt-image-2"): 2 for d in long_days})
    image = draw(series)
    assert columns_with(image, model_colour("gpt-image-2"))


def test_every_catalog_model_has_its_own_colour() -> None:
    """Colours follow the catalog, so stacked models are told apart."""
    from bot.core.catalog import CATALOG

    colours = [model_colour(name) for name in CATALOG]
    assert len(set(colours)) == len(colours)
    assert model_colour("not-a-model") not in colours
