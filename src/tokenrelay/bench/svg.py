"""Line charts as inline SVG, written out by hand: the HTML report needs no plotting library.

A chart is one or more panels stacked over one shared x axis. Each panel has its own y axis,
named with its unit above the plot, so two quantities never share a scale (CPU % and a count
of connections did, once). A y axis starts at zero unless told otherwise: a line that climbs
across the panel has climbed, not moved within a narrow window. Ticks fall on round numbers
(1, 2 or 5 times a power of ten), or on the values given (a sweep's concurrency levels).

Series are polylines, optionally dashed or with a dot at each point. Vertical marks (a phase
beginning) run through every panel. Everything here is a pure function of the data: no I/O,
no scripts, nothing fetched; text is escaped.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")
WIDTH = 720
_LEFT, _RIGHT, _TOP = 64, 16, 30  # room for y tick labels, the right edge, the title
_HEADER = 22  # above each panel: its y axis's name, and its legend
_GAP = 12  # between one panel's plot and the next panel's header
_BOTTOM = 42  # x tick labels and the x axis's name
_CHAR = 6.6  # average width of a 12px sans-serif character, to lay out legends


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    points: Sequence[tuple[float, float]]
    dots: bool = False
    dashed: bool = False
    colour: str | None = None  # default: the palette, by position in the panel


@dataclass(frozen=True, slots=True)
class Axis:
    label: str  # the quantity and its unit: "time to first token (ms)"
    log: bool = False
    from_zero: bool = True  # linear axes only
    ticks: Sequence[float] | None = None  # default: round numbers spanning the data
    limits: tuple[float, float] | None = None  # fixed ends, e.g. (0, 100) for a share


@dataclass(frozen=True, slots=True)
class Panel:
    y: Axis
    series: Sequence[Series]
    height: int = 180


@dataclass(frozen=True, slots=True)
class _Scale:
    """Maps data to pixels along one axis; `ticks` are the data values to label."""

    low: float
    high: float
    start: float  # pixel of `low`
    end: float  # pixel of `high`
    log: bool
    ticks: tuple[float, ...]

    def __call__(self, value: float) -> float:
        if self.log:
            value, low, high = math.log10(value), math.log10(self.low), math.log10(self.high)
        else:
            low, high = self.low, self.high
        return self.start + (value - low) / (high - low) * (self.end - self.start)


def chart(
    title: str,
    x: Axis,
    panels: Sequence[Panel],
    marks: Sequence[tuple[float, str]] = (),
    width: int = WIDTH,
) -> str:
    """One `<svg>` element: the panels stacked top to bottom, sharing `x`."""
    every_x = [p[0] for panel in panels for s in panel.series for p in s.points]
    height = _TOP + sum(_HEADER + p.height + _GAP for p in panels) - _GAP + _BOTTOM
    x_scale = _scale(x, every_x + [m[0] for m in marks], _LEFT, width - _RIGHT, widen=False)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" font-family="system-ui,sans-serif" '
        f'font-size="12">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="{_LEFT}" y="18" font-size="14" font-weight="600">{escape(title)}</text>',
    ]
    top = _TOP
    for panel in panels:
        plot_top = top + _HEADER
        y_values = [p[1] for s in panel.series for p in s.points]
        y_scale = _scale(panel.y, y_values, plot_top + panel.height, plot_top, widen=True)
        parts.append('<g class="panel">')
        parts += _panel(panel, x_scale, y_scale, top, width)
        parts += _marks(marks, x_scale, plot_top, plot_top + panel.height, label=top == _TOP)
        parts.append("</g>")
        top = plot_top + panel.height + _GAP
    bottom = top - _GAP
    parts += _x_labels(x, x_scale, bottom, width)
    parts.append("</svg>")
    return "\n".join(parts)


def _panel(panel: Panel, x: _Scale, y: _Scale, top: float, width: int) -> list[str]:
    plot_top, plot_bottom = top + _HEADER, top + _HEADER + panel.height
    parts = [
        f'<text class="axis-name" x="{_LEFT}" y="{top + 15}" fill="#333">'
        f"{escape(panel.y.label)}</text>"
    ]
    for tick in y.ticks:
        at = _px(y(tick))
        parts.append(
            f'<line x1="{_LEFT}" x2="{width - _RIGHT}" y1="{at}" y2="{at}" stroke="#e5e5e5"/>'
        )
        parts.append(
            f'<text class="y-tick" x="{_LEFT - 6}" y="{at}" dy="0.35em" text-anchor="end" '
            f'fill="#555">{_number(tick, y.ticks)}</text>'
        )
    for tick in x.ticks:
        at = _px(x(tick))
        parts.append(
            f'<line x1="{at}" x2="{at}" y1="{plot_top}" y2="{plot_bottom}" stroke="#e5e5e5"/>'
        )
    parts.append(
        f'<rect x="{_LEFT}" y="{plot_top}" width="{width - _RIGHT - _LEFT}" '
        f'height="{panel.height}" fill="none" stroke="#888"/>'
    )
    legend_right: float = width - _RIGHT
    for index, series in reversed(list(enumerate(panel.series))):
        colour = series.colour or PALETTE[index % len(PALETTE)]
        parts += _series(series, colour, x, y)
        if series.label:  # a panel's only line may go unnamed: the header names it
            legend_right, legend = _legend_entry(series, colour, legend_right, top + 15)
            parts += legend
    return parts


def _series(series: Series, colour: str, x: _Scale, y: _Scale) -> list[str]:
    if not series.points:
        return []
    coordinates = " ".join(f"{_px(x(a))},{_px(y(b))}" for a, b in series.points)
    dash = ' stroke-dasharray="6 4"' if series.dashed else ""
    parts = [
        f'<polyline points="{coordinates}" fill="none" stroke="{colour}" stroke-width="1.8"'
        f' stroke-linejoin="round"{dash}/>'
    ]
    if series.dots:
        parts += [
            f'<circle cx="{_px(x(a))}" cy="{_px(y(b))}" r="3.2" fill="{colour}"/>'
            for a, b in series.points
        ]
    return parts


def _legend_entry(
    series: Series, colour: str, right: float, baseline: float
) -> tuple[float, list[str]]:
    """One legend entry ending at `right`; returns where the next one (to its left) ends."""
    text_width = len(series.label) * _CHAR
    text_x = right - text_width
    line_end = text_x - 5
    dash = ' stroke-dasharray="6 4"' if series.dashed else ""
    parts = [
        f'<line x1="{_px(line_end - 22)}" x2="{_px(line_end)}" y1="{baseline - 4}" '
        f'y2="{baseline - 4}" stroke="{colour}" stroke-width="2.5"{dash}/>',
        f'<text x="{_px(text_x)}" y="{baseline}" fill="#333">{escape(series.label)}</text>',
    ]
    return line_end - 22 - 16, parts


def _marks(
    marks: Sequence[tuple[float, str]], x: _Scale, top: float, bottom: float, label: bool
) -> list[str]:
    parts = []
    for at, text in marks:
        px = x(at)
        parts.append(
            f'<line x1="{_px(px)}" x2="{_px(px)}" y1="{top}" y2="{bottom}" stroke="#999" '
            f'stroke-dasharray="2 3"/>'
        )
        if label:
            parts.append(
                f'<text x="{_px(px + 3)}" y="{top + 13}" fill="#666">{escape(text)}</text>'
            )
    return parts


def _x_labels(x: Axis, scale: _Scale, bottom: float, width: int) -> list[str]:
    parts = [
        f'<text class="x-tick" x="{_px(scale(tick))}" y="{bottom + 16}" text-anchor="middle" '
        f'fill="#555">{_number(tick, scale.ticks)}</text>'
        for tick in scale.ticks
    ]
    middle = (_LEFT + width - _RIGHT) / 2
    parts.append(
        f'<text class="axis-name" x="{middle}" y="{bottom + 34}" text-anchor="middle" '
        f'fill="#333">{escape(x.label)}</text>'
    )
    return parts


def _scale(axis: Axis, values: list[float], start: float, end: float, widen: bool) -> _Scale:
    """Both ends out to whole steps (`widen`, y axes: the top is labelled), or only the low
    end (x axes: they end at their data, as time past the run's end would be blank)."""
    if axis.log:
        return _log_scale(axis, [v for v in values if v > 0], start, end)
    low, high = axis.limits or _span(values, axis.from_zero)
    if axis.ticks is not None:
        return _Scale(low, high, start, end, False, tuple(axis.ticks))
    step = _round_step((high - low) / 5)
    if axis.limits is None:
        low = math.floor(low / step) * step
        if widen:  # with a little headroom: a line along the frame is hard to see
            high = math.ceil((high + (high - low) * 0.03) / step) * step
    first = math.ceil(low / step - 1e-9) * step
    return _Scale(low, high, start, end, False, tuple(_steps(first, high, step)))


def _span(values: list[float], from_zero: bool) -> tuple[float, float]:
    low = min(values, default=0.0)
    high = max(values, default=1.0)
    if from_zero:
        low, high = min(low, 0.0), max(high, 0.0)
    if high - low < 1e-9:  # a flat line: give it room above (and below, unless at zero)
        pad = abs(high) * 0.1 or 1.0
        low, high = (low, high + pad) if from_zero and low == 0 else (low - pad, high + pad)
    return low, high


def _log_scale(axis: Axis, values: list[float], start: float, end: float) -> _Scale:
    if axis.ticks is not None:
        ticks = tuple(t for t in axis.ticks if t > 0)
        low, high = min(ticks, default=1.0) / 1.5, max(ticks, default=10.0) * 1.5
    else:
        low = 10 ** math.floor(math.log10(min(values, default=1.0)))
        high = 10 ** math.ceil(math.log10(max(values, default=10.0)))
        high = high if high > low else low * 10
        ticks = tuple(10**e for e in range(round(math.log10(low)), round(math.log10(high)) + 1))
    return _Scale(low, high, start, end, True, ticks)


def _round_step(rough: float) -> float:
    """1, 2 or 5 times a power of ten, at least `rough`."""
    power = 10.0 ** math.floor(math.log10(rough))
    return next(m * power for m in (1.0, 2.0, 5.0, 10.0) if m * power >= rough * 0.999)


def _steps(low: float, high: float, step: float) -> list[float]:
    count = math.floor((high - low) / step + 1e-9)
    return [round(low + i * step, 12) for i in range(count + 1)]


def _number(value: float, ticks: Sequence[float]) -> str:
    """A tick's label, with as many decimals as the spacing of the ticks needs."""
    spacing = min((abs(b - a) for a, b in itertools.pairwise(ticks)), default=1.0)
    decimals = max(0, -math.floor(math.log10(spacing))) if 0 < spacing < 1 else 0
    if 0 < abs(value) < 1:  # a log axis's 0.1 is not "0"
        decimals = max(decimals, -math.floor(math.log10(abs(value))))
    return f"{value:,.{decimals}f}"


def _px(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")
