"""The charts' geometry: what the SVG templates draw."""

from __future__ import annotations

from decimal import Decimal

from routing import charts


def test_columns_scale_to_the_highest_and_label_at_most_eight_buckets():
    values = [Decimal(n) for n in range(30)]
    bars = charts.columns([f"d{n}" for n in range(30)], values, [""] * 30)
    assert bars[29]["height"] == charts.PLOT
    assert bars[29]["y"] == 0
    assert bars[0]["height"] == 0
    labelled = [bar["label"] for bar in bars if bar["label"]]
    assert labelled == ["d0", "d4", "d8", "d12", "d16", "d20", "d24", "d28"]


def test_columns_of_nothing_are_flat_not_a_division_by_zero():
    bars = charts.columns(["a", "b"], [Decimal(0), Decimal(0)], ["", ""])
    assert [bar["height"] for bar in bars] == [0, 0]


def test_share_bars_of_no_calls_are_none():
    assert charts.share_bars([("m", 0)], {"m": "#fff"}) == []


def test_models_keep_their_colour_and_colours_wrap_around():
    palette = charts.colours([f"m{n}" for n in range(10)])
    assert palette["m0"] == palette["m8"] == charts.PALETTE[0]
    assert len(set(palette.values())) == len(charts.PALETTE)


def test_latency_lines_break_at_buckets_without_calls():
    lines, top = charts.latency_lines(
        {"m": [(100, 200), None, (50, 400), (60, 300)]}, ["a", "b", "c", "d"], {"m": "#fff"}
    )
    assert top == 400
    [line] = lines
    assert len(line.p50) == 2  # a, then c-d
    assert line.p50[1].count(",") == 2
    assert [dot["label"] for dot in line.dots] == ["a", "c", "d"]
    # The highest p95 is the top of the plot.
    assert line.p95[1].split(" ")[0].endswith(",0.0")
