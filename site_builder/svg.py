"""Time-series line charts as SVG files, drawn by hand: a few milliseconds each where
matplotlib takes tens, so every line chart comes in each of the pages' time ranges (24 h,
7 d, 30 d, all) and the page switches between them without a rebuild. The picture
carries its own "as of", its axes end at the page's time, and a dollar axis spans at
least MIN_SPAN of its level (a $2 move on $10,000 does not fill the plot). Text is
escaped; colours are presentation attributes (the pages' CSP allows no inline style)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from xml.sax.saxutils import escape as xml_escape

from site_builder.charts import GAIN, GRID, INK, LOSS, MUTED, Series

W, H = 1200.0, 320.0
LEFT, RIGHT, TOP, BOTTOM = 78.0, 16.0, 44.0, 40.0
MIN_SPAN = 0.005
FONT = 'font-family="DejaVu Sans, system-ui, sans-serif"'
RANGES: tuple[tuple[str, timedelta | None], ...] = (
    ("24h", timedelta(hours=24)),
    ("7d", timedelta(days=7)),
    ("30d", timedelta(days=30)),
    ("all", None),
)
RANGE_LABELS = {"24h": "24 h", "7d": "7 d", "30d": "30 d", "all": "all"}
_TIME_STEPS = (
    timedelta(minutes=5), timedelta(minutes=15), timedelta(minutes=30), timedelta(hours=1),
    timedelta(hours=2), timedelta(hours=3), timedelta(hours=6), timedelta(hours=12),
    timedelta(days=1), timedelta(days=2), timedelta(days=7), timedelta(days=14),
    timedelta(days=30), timedelta(days=91), timedelta(days=182), timedelta(days=365),
)  # fmt: skip
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def escape(text: str) -> str:
    """Text for an SVG: escaped, without the characters XML forbids (a hostile outcome
    name must not break the file)."""
    return xml_escape(_NOT_XML.sub("", text))


@dataclass(frozen=True)
class Axis:
    lo: float
    hi: float
    ticks: list[float]

    def y(self, v: float) -> float:
        span = (self.hi - self.lo) or 1.0
        return TOP + (H - TOP - BOTTOM) * (1 - (v - self.lo) / span)


def nice_step(span: float, count: int = 5) -> float:
    """A 1, 2, 2.5 or 5 × 10^k step that cuts `span` into about `count` parts."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / count
    power: float = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0):
        if m * power >= raw:
            return m * power
    return 10.0 * power


def value_axis(values: Sequence[float], unit: str, zero: bool) -> Axis:
    lo, hi = min(values), max(values)
    if zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if unit == "price":  # prices live in [0, 1]: at least 0.05 of span
        if hi - lo < 0.05:
            lo = min(max(0.0, (hi + lo) / 2 - 0.025), 0.95)
            hi = lo + 0.05
    elif unit == "usd" and not zero:  # at least MIN_SPAN of the level, and $1
        want = max(abs(hi) * MIN_SPAN, abs(lo) * MIN_SPAN, 1.0)
        if hi - lo < want:
            mid = (hi + lo) / 2
            lo, hi = mid - want / 2, mid + want / 2
    if hi - lo <= 0:
        lo, hi = lo - (abs(lo) * 0.01 or 0.01), hi + (abs(hi) * 0.01 or 0.01)
    step = nice_step(hi - lo)
    first = math.floor(lo / step) * step
    last = math.ceil(hi / step) * step
    ticks = [first + i * step for i in range(round((last - first) / step) + 1)]
    return Axis(first, last, ticks)


def _label(v: float, unit: str, step: float) -> str:
    if unit == "price":  # a probability: three decimals show a tick
        return f"{v:.3f}" if step < 0.01 else f"{v:.2f}"
    if unit == "ratio":
        digits = max(0, min(4, -math.floor(math.log10(step * 100)) if step else 0))
        text = f"{v * 100:.{digits}f}%"
    else:
        digits = 0 if step >= 1 else 2
        text = f"${abs(v):,.{digits}f}"
        text = ("−" if v < 0 and float(f"{abs(v):.{digits}f}") else "") + text
    return text.replace("-", "−")


def time_ticks(t0: datetime, t1: datetime, most: int = 8) -> tuple[list[datetime], timedelta]:
    span = t1 - t0
    step = next((s for s in _TIME_STEPS if span / s <= most), _TIME_STEPS[-1])
    seconds = step.total_seconds()
    start = (t0 - EPOCH).total_seconds()
    first = EPOCH + timedelta(seconds=math.ceil(start / seconds) * seconds)
    out = []
    t = first
    while t <= t1:
        out.append(t)
        t += step
    return out, step


def _time_label(t: datetime, step: timedelta, previous: datetime | None) -> str:
    if step >= timedelta(days=1):
        return f"{t:%b %d}"
    if previous is None or previous.date() != t.date():
        return f"{t:%b %d} {t:%H:%M}"
    return f"{t:%H:%M}"


def _thin(times: Sequence[datetime], values: Sequence[float], width: float) -> list[int]:
    """Indexes to draw: per pixel column its first, lowest, highest and last points (a
    spike survives), in time order."""
    n = len(times)
    if n <= 2 * width:
        return list(range(n))
    t0, t1 = times[0], times[-1]
    span = (t1 - t0).total_seconds() or 1.0
    columns: dict[int, list[int]] = {}
    for i, t in enumerate(times):
        columns.setdefault(int((t - t0).total_seconds() / span * width), []).append(i)
    keep: set[int] = set()
    for idx in columns.values():
        low = min(idx, key=lambda i: values[i])
        high = max(idx, key=lambda i: values[i])
        keep |= {idx[0], idx[-1], low, high}
    return sorted(keep)


def lines(
    title: str,
    series: Sequence[Series],
    *,
    until: datetime,
    since: datetime | None = None,
    unit: str = "usd",
    zero: bool = False,
    fill_below: bool = False,
) -> bytes:
    """One chart of time series from `since` (or the first point) to `until`, as SVG;
    `unit` is "usd", "ratio" (shown as %) or "price" (a probability)."""
    cut = [
        Series(s.label, *_window(s, since, until), color=s.color, dashed=s.dashed) for s in series
    ]
    drawn = [s for s in cut if s.times]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W:.0f} {H:.0f}" '
        f'width="{W:.0f}" height="{H:.0f}" {FONT} font-size="13">',
        f'<rect width="{W:.0f}" height="{H:.0f}" fill="#fff"/>',
        f'<text x="{LEFT:.0f}" y="22" font-weight="bold" font-size="15" fill="{INK}">'
        f"{escape(title)}</text>",
        f'<text x="4" y="{H - 6:.0f}" font-size="11" fill="{MUTED}">'
        f"as of {until:%Y-%m-%d %H:%M} UTC</text>",
    ]
    if not drawn:
        out.append(
            f'<text x="{W / 2:.0f}" y="{H / 2:.0f}" text-anchor="middle" fill="{MUTED}">'
            "no data in this range yet</text></svg>"
        )
        return "".join(out).encode()
    first = min(s.times[0] for s in drawn)
    t0 = since if since is not None and since > first else first
    if until - t0 < timedelta(minutes=30):
        t0 = until - timedelta(minutes=30)
    plot_w = W - LEFT - RIGHT
    span = (until - t0).total_seconds()

    def x(t: datetime) -> float:
        return LEFT + plot_w * (t - t0).total_seconds() / span

    axis = value_axis([v for s in drawn for v in s.values], unit, zero)
    step = axis.ticks[1] - axis.ticks[0] if len(axis.ticks) > 1 else 1.0
    for v in axis.ticks:
        y = axis.y(v)
        out.append(
            f'<line x1="{LEFT:.0f}" x2="{W - RIGHT:.0f}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{GRID}"/><text x="{LEFT - 8:.0f}" y="{y + 4:.1f}" text-anchor="end" '
            f'fill="{MUTED}">{_label(v, unit, step)}</text>'
        )
    ticks, tstep = time_ticks(t0, until)
    previous = None
    for t in ticks:
        tx = x(t)
        anchor = "end" if tx > W - RIGHT - 40 else ("start" if tx < LEFT + 40 else "middle")
        out.append(
            f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{TOP:.0f}" y2="{H - BOTTOM:.0f}" '
            f'stroke="{GRID}"/><text x="{tx:.1f}" y="{H - BOTTOM + 18:.0f}" '
            f'text-anchor="{anchor}" fill="{MUTED}">{_time_label(t, tstep, previous)}</text>'
        )
        previous = t
    if zero or fill_below:
        y0 = axis.y(0.0) if axis.lo <= 0 <= axis.hi else None
        if y0 is not None:
            out.append(
                f'<line x1="{LEFT:.0f}" x2="{W - RIGHT:.0f}" y1="{y0:.1f}" y2="{y0:.1f}" '
                f'stroke="{MUTED}"/>'
            )
    legend_x = LEFT
    for s in drawn:
        keep = _thin(s.times, s.values, plot_w)
        points = " ".join(f"{x(s.times[i]):.1f},{axis.y(s.values[i]):.1f}" for i in keep)
        if fill_below and axis.lo <= 0 <= axis.hi:
            y0 = axis.y(0.0)
            xs = [x(s.times[i]) for i in keep]
            area = f"{xs[0]:.1f},{y0:.1f} {points} {xs[-1]:.1f},{y0:.1f}"
            out.append(
                f'<clipPath id="up"><rect x="{LEFT:.0f}" y="{TOP:.0f}" width="{plot_w:.0f}" '
                f'height="{y0 - TOP:.1f}"/></clipPath>'
                f'<clipPath id="down"><rect x="{LEFT:.0f}" y="{y0:.1f}" width="{plot_w:.0f}" '
                f'height="{H - BOTTOM - y0:.1f}"/></clipPath>'
                f'<polygon points="{area}" fill="{GAIN}" fill-opacity="0.15" clip-path="url(#up)"/>'
                f'<polygon points="{area}" fill="{LOSS}" fill-opacity="0.15" '
                f'clip-path="url(#down)"/>'
            )
        dash = ' stroke-dasharray="7 4"' if s.dashed else ""
        if len(keep) == 1:
            i = keep[0]
            out.append(
                f'<circle cx="{x(s.times[i]):.1f}" cy="{axis.y(s.values[i]):.1f}" r="4" '
                f'fill="{s.color}"/>'
            )
        else:
            out.append(
                f'<polyline points="{points}" fill="none" stroke="{s.color}" '
                f'stroke-width="2" stroke-linejoin="round"{dash}/>'
            )
        if s.label:
            out.append(
                f'<line x1="{legend_x:.0f}" x2="{legend_x + 22:.0f}" y1="36" y2="36" '
                f'stroke="{s.color}" stroke-width="2"{dash}/><text x="{legend_x + 28:.0f}" '
                f'y="40" fill="{INK}">{escape(s.label)}</text>'
            )
            legend_x += 40 + 8 * len(s.label)
    out.append(
        f'<rect x="{LEFT:.0f}" y="{TOP:.0f}" width="{plot_w:.0f}" height="{H - TOP - BOTTOM:.0f}" '
        f'fill="none" stroke="{GRID}"/></svg>'
    )
    return "".join(out).encode()


def _window(
    s: Series, since: datetime | None, until: datetime
) -> tuple[list[datetime], list[float]]:
    """The series' points from `since` to `until`."""
    times, values = [], []
    for t, v in zip(s.times, s.values, strict=True):
        if (since is None or t >= since) and t <= until:
            times.append(t)
            values.append(v)
    return times, values
