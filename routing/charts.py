"""Geometry of the Routing page's charts, drawn server-side as SVG by the templates:
no chart library and nothing fetched at run time, and the figures a test reads are
the ones the page draws."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

# Each chart's own viewBox, near the size its card draws it at, so that its text
# is drawn at the size it says: the spend and latency charts fill a wide card, the
# model mix a narrow one.
WIDTH = 960
HEIGHT = 180
AXIS = 20  # room under the plot for the bucket labels
PLOT = HEIGHT - AXIS
MIX_WIDTH = 420
MIX_LABEL = 170  # room left of the bars for the model's name
MAX_LABELS = 8  # more would overlap: label every n-th bucket
# Distinct on the dark theme; a model keeps its colour in every chart of a page.
PALETTE = ("#4aa3ff", "#f5a524", "#3ecf8e", "#e5484d", "#b07cff", "#2ec4c4", "#e879c6", "#9aa5b1")


def colours(models: list[str]) -> dict[str, str]:
    return {model: PALETTE[n % len(PALETTE)] for n, model in enumerate(models)}


def _label_every(count: int) -> int:
    return max(1, -(-count // MAX_LABELS))


def columns(labels: list[str], values: list[Decimal], titles: list[str]) -> list[dict[str, Any]]:
    """One column per bucket, the highest at the plot's full height."""
    top = max(values, default=Decimal(0)) or Decimal(1)
    width = WIDTH / max(len(values), 1)
    every = _label_every(len(values))
    bars = []
    for n, (label, value, title) in enumerate(zip(labels, values, titles, strict=True)):
        height = float(value / top) * PLOT
        bars.append(
            {
                "x": round(n * width + min(4, width / 8), 1),
                "width": round(width - 2 * min(4, width / 8), 1),
                "height": round(height, 1),
                "y": round(PLOT - height, 1),
                "label": label if n % every == 0 else "",
                "label_x": round(n * width + min(4, width / 8), 1),
                "title": title,
            }
        )
    return bars


@dataclass(frozen=True)
class ShareBar:
    """One model's share of the calls, as a horizontal bar with its label."""

    model: str
    share: Decimal  # percent
    calls: int
    colour: str
    y: int
    width: float


SHARE_ROW = 22


def share_bars(rows: list[tuple[str, int]], palette: dict[str, str]) -> list[ShareBar]:
    """(model, calls) rows as bars whose length is the model's share of all calls."""
    total = sum(calls for _, calls in rows)
    if not total:
        return []
    return [
        ShareBar(
            model=model,
            share=Decimal(calls * 100) / total,
            calls=calls,
            colour=palette[model],
            y=n * SHARE_ROW,
            width=round(calls / total * (MIX_WIDTH - MIX_LABEL - 50), 1),
        )
        for n, (model, calls) in enumerate(rows)
    ]


@dataclass(frozen=True)
class LatencyLine:
    """A model's p50 (solid) and p95 (dashed) per bucket: polyline segments, broken
    where a bucket had no calls of the model."""

    model: str
    colour: str
    p50: list[str]  # each a polyline's points
    p95: list[str]
    dots: list[dict[str, Any]]  # one per bucket with calls, for its tooltip


def latency_lines(
    series: dict[str, list[tuple[int, int] | None]], labels: list[str], palette: dict[str, str]
) -> tuple[list[LatencyLine], int]:
    """The lines, and the top of the scale in ms (the highest p95)."""
    top = max((point[1] for points in series.values() for point in points if point), default=0)
    scale = top or 1
    step = WIDTH / max(len(labels), 1)
    lines = []
    for model, points in series.items():
        p50: list[list[str]] = [[]]
        p95: list[list[str]] = [[]]
        dots = []
        for n, point in enumerate(points):
            if point is None:
                p50.append([])
                p95.append([])
                continue
            x = round(n * step + step / 2, 1)
            y50 = round(PLOT - point[0] / scale * PLOT, 1)
            y95 = round(PLOT - point[1] / scale * PLOT, 1)
            p50[-1].append(f"{x},{y50}")
            p95[-1].append(f"{x},{y95}")
            dots.append({"x": x, "y": y50, "label": labels[n], "p50": point[0], "p95": point[1]})
        lines.append(
            LatencyLine(
                model=model,
                colour=palette[model],
                p50=[" ".join(s) for s in p50 if s],
                p95=[" ".join(s) for s in p95 if s],
                dots=dots,
            )
        )
    return lines, top


def axis_labels(labels: list[str]) -> list[dict[str, Any]]:
    """The bucket labels under a line chart, every n-th one."""
    step = WIDTH / max(len(labels), 1)
    every = _label_every(len(labels))
    return [
        {"x": round(n * step + 2, 1), "label": label}
        for n, label in enumerate(labels)
        if n % every == 0
    ]
