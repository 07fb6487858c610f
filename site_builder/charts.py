"""PNG charts drawn with matplotlib's object API on Agg (never pyplot: the builder is a
long-running process and pyplot keeps global figure state). Every function returns PNG
bytes; an empty series draws a labelled "no data yet" frame rather than a broken image.
Floats appear only here, at the chart edge."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import matplotlib

matplotlib.use("Agg")

from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

INK = "#1f2933"
MUTED = "#7b8794"
GRID = "#e4e7eb"
EXEC = "#2563eb"
SHADOW = "#d97706"
GAIN = "#15803d"
LOSS = "#b91c1c"
PALETTE = (EXEC, SHADOW, "#7c3aed", "#0d9488", "#db2777", "#65a30d", "#475569")
WIDE = (12.0, 3.2)
HALF = (5.8, 2.8)

matplotlib.rcParams.update(
    {
        "font.family": "DejaVu Sans",
        "font.size": 9,
        "axes.edgecolor": GRID,
        "axes.labelcolor": INK,
        "axes.titlesize": 10,
        "axes.titleweight": "bold",
        "axes.titlelocation": "left",
        "xtick.color": MUTED,
        "ytick.color": MUTED,
        "svg.hashsalt": "oculus",
    }
)


@dataclass(frozen=True)
class Series:
    label: str
    times: Sequence[datetime]
    values: Sequence[float]
    color: str = EXEC
    dashed: bool = False


def _num(t: datetime) -> float:
    """matplotlib's date number of a datetime (its date2num is untyped)."""
    value: float = mdates.date2num(t)  # type: ignore[no-untyped-call]
    return value


def _figure(
    size: tuple[float, float], margins: tuple[float, float, float, float] | None = None
) -> tuple[Figure, Axes]:
    """A figure with one axis. `margins` (left, bottom, right, top, in inches) fixes the
    layout, which costs a third of the time of matplotlib's constrained layout; charts
    whose labels are user text (bars) keep the constrained layout."""
    fig = Figure(figsize=size, dpi=100, layout=None if margins else "constrained")
    FigureCanvasAgg(fig)
    if margins:
        left, bottom, right, top = margins
        width, height = size
        fig.subplots_adjust(
            left=left / width, bottom=bottom / height, right=1 - right / width, top=1 - top / height
        )
    ax = fig.add_subplot()
    ax.grid(True, color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _empty(ax: Axes, title: str, message: str = "no data yet") -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", color=MUTED, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _dollar_formatter(ax: Axes, axis: str = "y") -> FuncFormatter:
    """Dollars with as many digits as the axis's span needs (a $9,999.83–$10,000.04 range
    must not read "$10.0k" on every tick)."""

    def fmt(value: float, _: object = None) -> str:
        low, high = ax.get_ylim() if axis == "y" else ax.get_xlim()
        span = abs(high - low)
        sign = "−" if value < 0 else ""
        value = abs(value)
        if span >= 20_000 and value >= 1_000_000:
            return f"{sign}${value / 1_000_000:.2f}M"
        if span >= 2_000 and value >= 10_000:
            return f"{sign}${value / 1_000:.1f}k"
        digits = 0 if span >= 20 else max(2, min(4, math.ceil(-math.log10(span / 8 or 1e-9))))
        return f"{sign}${value:,.{digits}f}"

    return FuncFormatter(fmt)


def _percent_formatter(ax: Axes) -> FuncFormatter:
    """Percentages with two decimals on a narrow axis (a 0.3 % drawdown must not read
    "-0.0%" on every tick), one otherwise."""

    def fmt(value: float, _: object = None) -> str:
        low, high = ax.get_ylim()
        digits = 2 if abs(high - low) < 0.05 else 1
        text = f"{value * 100:.{digits}f}"
        return ("0." + "0" * digits if float(text) == 0 else text).replace("-", "−") + "%"

    return FuncFormatter(fmt)


def _percent(value: float, _: object = None) -> str:
    return f"{value * 100:.1f}%"


MIN_SPAN = 0.005  # an equity axis spans at least 0.5 % of its level (and $1)


def lines(
    title: str,
    series: Sequence[Series],
    *,
    unit: str = "usd",
    size: tuple[float, float] = WIDE,
    zero: bool = False,
    fill_below: bool = False,
    until: datetime | None = None,
) -> bytes:
    """Time series on one axis (unit "usd" or "ratio"), from the first point to `until`
    (the page's time: the axis ends at now, never in the future) or the last point."""
    fig, ax = _figure(size, (0.95, 0.45, 0.45, 0.35))
    drawn = [s for s in series if len(s.times) > 0]
    if not drawn:
        _empty(ax, title)
        return _png(fig)
    ax.set_title(title)
    for s in drawn:
        style = "--" if s.dashed else "-"
        times = [_num(t) for t in s.times]
        marker = "o" if len(times) < 3 else None  # one point draws no line
        ax.plot(times, s.values, style, color=s.color, linewidth=1.6, label=s.label, marker=marker)
        if fill_below:  # gains green, losses red
            above = [v >= 0 for v in s.values]
            below = [v <= 0 for v in s.values]
            ax.fill_between(times, s.values, 0, where=above, color=GAIN, alpha=0.15, lw=0)
            ax.fill_between(times, s.values, 0, where=below, color=LOSS, alpha=0.15, lw=0)
    if zero:
        ax.axhline(0, color=MUTED, linewidth=0.8)
    if unit == "ratio":
        ax.yaxis.set_major_formatter(_percent_formatter(ax))
    else:
        _min_span(ax, [v for s in drawn for v in s.values], zero)
        ax.yaxis.set_major_formatter(_dollar_formatter(ax))
    first = min(min(s.times) for s in drawn)
    last = max(max(s.times) for s in drawn)
    end = max(last, until) if until is not None else last
    if end - first < timedelta(minutes=30):  # a new portfolio: show half an hour, not years
        ax.set_xlim(_num(end - timedelta(minutes=30)), _num(end))
    else:
        ax.set_xlim(_num(first), _num(end))
    locator = mdates.AutoDateLocator(maxticks=10)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    if len(drawn) > 1 or drawn[0].label:
        ax.legend(loc="upper left", frameon=False, ncols=len(drawn))
    if until is not None:  # the picture's own "as of" (a chart may be kept a while), bottom
        # left: the date axis writes its offset ("2026-Nov-20") bottom right
        fig.text(0.005, 0.01, f"as of {until:%Y-%m-%d %H:%M} UTC", ha="left", va="bottom",
                 fontsize=7, color=MUTED)  # fmt: skip
    return _png(fig)


def _min_span(ax: Axes, values: list[float], zero: bool) -> None:
    """Widens a dollar axis to at least MIN_SPAN of its level and $1, so a $2 move on
    $10,000 does not fill the plot (an axis that shows zero is left as drawn)."""
    if not values or zero:
        return
    low, high = min(values), max(values)
    want = max(abs(high) * MIN_SPAN, abs(low) * MIN_SPAN, 1.0)
    if high - low < want:
        middle = (high + low) / 2
        ax.set_ylim(middle - want * 0.6, middle + want * 0.6)


def bars(
    title: str,
    items: Sequence[tuple[str, float]],
    *,
    unit: str = "count",
    size: tuple[float, float] = HALF,
    color: str = EXEC,
) -> bytes:
    """Horizontal bars, largest first at the top (skip reasons, exposure shares)."""
    fig, ax = _figure(size)
    if not items:
        _empty(ax, title)
        return _png(fig)
    ax.set_title(title)
    labels = [label for label, _ in items][::-1]
    values = [value for _, value in items][::-1]
    colors = [(LOSS if v < 0 else color) for v in values]
    ax.barh(range(len(values)), values, color=colors, height=0.7)
    ax.set_yticks(range(len(values)), labels, parse_math=False)  # labels are user text
    ax.grid(False, axis="y")
    if unit == "usd":
        ax.xaxis.set_major_formatter(_dollar_formatter(ax, "x"))
    elif unit == "ratio":
        ax.xaxis.set_major_formatter(FuncFormatter(_percent))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(fig)


def waterfall(
    title: str,
    start: tuple[str, float],
    steps: Sequence[tuple[str, float]],
    end: tuple[str, float],
    *,
    size: tuple[float, float] = WIDE,
) -> bytes:
    """A waterfall in USD: the `start` bar, each step floating from the running total
    (a loss down in the loss colour, a gain up in the gain colour), then the `end` bar.
    Steps of zero are left out; with nothing at all, a "no data yet" frame."""
    fig, ax = _figure(size, (0.8, 1.25, 0.1, 0.55))  # room for the reason codes below
    shown = [(label, v) for label, v in steps if v]
    if not (start[1] or end[1] or shown):
        _empty(ax, title, "no attributed copy attempts yet")
        return _png(fig)
    ax.set_title(title)
    labels = [start[0]]
    bottoms, heights, colors = [0.0], [start[1]], [SHADOW]
    level = start[1]
    for label, v in shown:
        labels.append(label)
        bottoms.append(level)
        heights.append(v)
        colors.append(GAIN if v > 0 else LOSS)
        level += v
    labels.append(end[0])
    bottoms.append(0.0)
    heights.append(end[1])
    colors.append(EXEC)
    xs = range(len(labels))
    ax.bar(xs, heights, bottom=bottoms, color=colors, width=0.7)
    for x, b, h in zip(xs, bottoms, heights, strict=True):
        ax.annotate(
            _usd(h), (x, b + h), ha="center",
            va="bottom" if h >= 0 else "top", fontsize=7, color=INK,
            xytext=(0, 2 if h >= 0 else -2), textcoords="offset points",
        )  # fmt: skip
    ax.axhline(0, color=MUTED, linewidth=0.8)
    tops = [b + h for b, h in zip(bottoms, heights, strict=True)] + bottoms
    lo, hi = min(0.0, *tops), max(0.0, *tops)
    pad = (hi - lo) * 0.18 or 1.0  # room for the amounts above and below the bars
    ax.set_ylim(lo - (pad if lo < 0 else 0.0), hi + pad)
    ax.set_xticks(list(xs), labels, rotation=25, ha="right", parse_math=False, fontsize=8)
    ax.yaxis.set_major_formatter(_dollar_formatter(ax))
    ax.grid(False, axis="x")
    return _png(fig)


def _usd(value: float) -> str:
    sign = "−" if value < 0 else ("+" if value > 0 else "")
    return f"{sign}${abs(value):,.2f}"
