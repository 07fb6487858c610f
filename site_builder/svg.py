"""The pages' charts as SVG files, drawn by hand: line charts, horizontal bars and
waterfalls. A chart takes a few milliseconds where matplotlib takes tens, and the
long-running builder does not carry matplotlib's ~45 MB (issue 18's memory goal), so
every line chart comes in each of the pages' time ranges (24 h, 7 d, 30 d, all) and the
page switches between them without a rebuild. A line chart carries its own "as of", its
axes end at the page's time, and a dollar axis spans at least MIN_SPAN of its level (a
$2 move on $10,000 does not fill the plot). Text is escaped (labels are user text);
colours are presentation attributes (the pages' CSP allows no inline style). Floats
appear only here, at the chart edge."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from xml.sax.saxutils import escape as xml_escape

from site_builder import fmt

INK = "#1f2933"
MUTED = "#7b8794"
GRID = "#e4e7eb"
EXEC = "#2563eb"
SHADOW = "#d97706"
GAIN = "#15803d"
LOSS = "#b91c1c"
PALETTE = (EXEC, SHADOW, "#7c3aed", "#0d9488", "#db2777", "#65a30d", "#475569")
W, H = 1200.0, 320.0
HALF = 600.0  # the width of a chart that sits beside another
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
class Series:
    label: str
    times: Sequence[datetime]
    values: Sequence[float]
    color: str = EXEC
    dashed: bool = False


@dataclass(frozen=True)
class Axis:
    lo: float
    hi: float
    ticks: list[float]

    @property
    def step(self) -> float:
        """The distance between ticks."""
        return self.ticks[1] - self.ticks[0] if len(self.ticks) > 1 else 1.0

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
        digits = 0 if step >= 1 and float(step).is_integer() else 2  # 2.5 steps: cents
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
    width: float = W,
) -> bytes:
    """One chart of time series from `since` (or the first point) to `until`, as SVG;
    `unit` is "usd", "ratio" (shown as %) or "price" (a probability); `width` is W or HALF."""
    cut = [
        Series(s.label, *_window(s, since, until), color=s.color, dashed=s.dashed) for s in series
    ]
    drawn = [s for s in cut if s.times]
    out = _open(width, H, title)
    out.append(
        f'<text x="4" y="{H - 6:.0f}" font-size="11" fill="{MUTED}">'
        f"as of {until:%Y-%m-%d %H:%M} UTC</text>"
    )
    if not drawn:
        return _empty(out, width, H, "no data in this range yet")
    first = min(s.times[0] for s in drawn)
    t0 = since if since is not None and since > first else first
    if until - t0 < timedelta(minutes=30):
        t0 = until - timedelta(minutes=30)
    plot_w = width - LEFT - RIGHT
    span = (until - t0).total_seconds()

    def x(t: datetime) -> float:
        return LEFT + plot_w * (t - t0).total_seconds() / span

    axis = value_axis([v for s in drawn for v in s.values], unit, zero)
    step = axis.step
    for v in axis.ticks:
        y = axis.y(v)
        out.append(
            f'<line x1="{LEFT:.0f}" x2="{width - RIGHT:.0f}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{GRID}"/><text x="{LEFT - 8:.0f}" y="{y + 4:.1f}" text-anchor="end" '
            f'fill="{MUTED}">{_label(v, unit, step)}</text>'
        )
    ticks, tstep = time_ticks(t0, until, 8 if width >= W else 5)
    previous = None
    for t in ticks:
        tx = x(t)
        anchor = "end" if tx > width - RIGHT - 40 else ("start" if tx < LEFT + 40 else "middle")
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
                f'<line x1="{LEFT:.0f}" x2="{width - RIGHT:.0f}" y1="{y0:.1f}" y2="{y0:.1f}" '
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
            legend_x = _legend(out, legend_x, s.label, s.color, dash)
    return _close(out, plot_w)


def _legend(out: list[str], x: float, label: str, color: str, dash: str) -> float:
    """A series' key in the legend row at `x`; returns where the next one goes."""
    out.append(
        f'<line x1="{x:.0f}" x2="{x + 22:.0f}" y1="36" y2="36" stroke="{color}" '
        f'stroke-width="2"{dash}/><text x="{x + 28:.0f}" y="40" fill="{INK}">'
        f"{escape(label)}</text>"
    )
    return x + 40 + 8 * len(label)


def _close(out: list[str], plot_w: float) -> bytes:
    """The plot's frame, and the end of the chart."""
    out.append(
        f'<rect x="{LEFT:.0f}" y="{TOP:.0f}" width="{plot_w:.0f}" height="{H - TOP - BOTTOM:.0f}" '
        f'fill="none" stroke="{GRID}"/></svg>'
    )
    return "".join(out).encode()


def _open(width: float, height: float, title: str, x: float = LEFT) -> list[str]:
    """The start of a chart: the SVG element, a white ground and the title at `x`."""
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}" {FONT} font-size="13">',
        f'<rect width="{width:.0f}" height="{height:.0f}" fill="#fff"/>',
        f'<text x="{x:.0f}" y="22" font-weight="bold" font-size="15" fill="{INK}">'
        f"{escape(title)}</text>",
    ]


def _empty(out: list[str], width: float, height: float, message: str) -> bytes:
    """A chart with nothing to draw: a labelled frame, never a broken image."""
    out.append(
        f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" fill="{MUTED}">'
        f"{escape(message)}</text></svg>"
    )
    return "".join(out).encode()


def _cut(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


def _amount(v: float, unit: str, signed: bool = False) -> str:
    """A bar's own value: dollars as the pages write them (`fmt.usd`; a + on gains if
    `signed`), or a percentage."""
    if unit == "ratio":
        return f"{v * 100:.1f}%".replace("-", "−")
    return fmt.usd(round(v * fmt.MICROS), signed)


ROW = 24.0  # a horizontal bar's row
TITLE_MAX = 200  # a tooltip's characters (a label is user text: bounded)
LABEL_W = 190.0  # the bars' label column
VALUE_W = 84.0  # the bars' value column


def bars(
    title: str,
    items: Sequence[tuple[str, float]],
    *,
    unit: str = "usd",
    color: str = EXEC,
    width: float = HALF,
) -> bytes:
    """Horizontal bars in the given order (largest first, at the top), each with its
    value at the right; a negative value is drawn left of zero in the loss colour.
    `unit` is "usd" or "ratio". Labels are user text: escaped, cut to the label column
    (the whole label is the bar's tooltip)."""
    top, bottom = 44.0, 30.0
    height = top + bottom + ROW * max(len(items), 1)
    out = _open(width, height, title, 12.0)
    if not items:
        return _empty(out, width, height, "no data yet")
    axis = value_axis([v for _, v in items], unit, zero=True)
    left, right = LABEL_W, width - VALUE_W
    span = (axis.hi - axis.lo) or 1.0

    def x(v: float) -> float:
        return left + (right - left) * (v - axis.lo) / span

    step = axis.step
    for v in axis.ticks:
        out.append(
            f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{top - 4:.0f}" '
            f'y2="{height - bottom:.0f}" stroke="{GRID}"/><text x="{x(v):.1f}" '
            f'y="{height - bottom + 18:.0f}" text-anchor="middle" font-size="11" '
            f'fill="{MUTED}">{_label(v, unit, step)}</text>'
        )
    x0 = x(0.0)
    most = int((LABEL_W - 16) / 7)
    for i, (label, v) in enumerate(items):
        y = top + ROW * i
        a, b = sorted((x0, x(v)))
        out.append(
            f"<g><title>{escape(_cut(label, TITLE_MAX))}: {_amount(v, unit)}</title>"
            f'<text x="{LABEL_W - 8:.0f}" y="{y + ROW * 0.65:.1f}" text-anchor="end" '
            f'fill="{INK}">{escape(_cut(label, most))}</text>'
            f'<rect x="{a:.1f}" y="{y + ROW * 0.15:.1f}" width="{max(b - a, 1.0):.1f}" '
            f'height="{ROW * 0.7:.1f}" fill="{LOSS if v < 0 else color}"/>'
            f'<text x="{width - 8:.0f}" y="{y + ROW * 0.65:.1f}" text-anchor="end" '
            f'fill="{INK}">{_amount(v, unit)}</text></g>'
        )
    out.append(
        f'<line x1="{x0:.1f}" x2="{x0:.1f}" y1="{top - 4:.0f}" y2="{height - bottom:.0f}" '
        f'stroke="{MUTED}"/></svg>'
    )
    return "".join(out).encode()


WATERFALL_H = 360.0
WATERFALL_BOTTOM = 104.0  # room for the step names, slanted


def waterfall(
    title: str,
    start: tuple[str, float],
    steps: Sequence[tuple[str, float]],
    end: tuple[str, float],
    *,
    width: float = W,
) -> bytes:
    """A waterfall in USD: the `start` bar, each step floating from the running total
    (a loss down in the loss colour, a gain up in the gain colour), then the `end` bar,
    each with its amount. Steps of zero are left out; with nothing at all, a labelled
    empty frame. The bars are drawn from the totals, so the steps end where `end` is
    only if the caller's figures add up (SPEC §10's waterfall does, to the micro)."""
    height, top, bottom = WATERFALL_H, 44.0, WATERFALL_BOTTOM
    out = _open(width, height, title)
    shown = [(label, v) for label, v in steps if v]
    if not (start[1] or end[1] or shown):
        return _empty(out, width, height, "no attributed copy attempts yet")
    bars_ = [(start[0], 0.0, start[1], SHADOW)]
    level = start[1]
    for label, v in shown:
        bars_.append((label, level, v, GAIN if v > 0 else LOSS))
        level += v
    bars_.append((end[0], 0.0, end[1], EXEC))
    ends = [b + h for _, b, h, _ in bars_] + [b for _, b, _, _ in bars_]
    lo, hi = min(0.0, *ends), max(0.0, *ends)
    pad = (hi - lo) * 0.12 or 1.0  # room for the amounts above and below the bars
    axis = value_axis([lo - (pad if lo < 0 else 0.0), hi + pad], "usd", zero=True)
    span = (axis.hi - axis.lo) or 1.0

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1 - (v - axis.lo) / span)

    step = axis.step
    for v in axis.ticks:
        out.append(
            f'<line x1="{LEFT:.0f}" x2="{width - RIGHT:.0f}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            f'stroke="{GRID}"/><text x="{LEFT - 8:.0f}" y="{y(v) + 4:.1f}" text-anchor="end" '
            f'fill="{MUTED}">{_label(v, "usd", step)}</text>'
        )
    slot = (width - LEFT - RIGHT) / len(bars_)
    font = 12 if slot >= 60 else 10
    for i, (label, b, h, colour) in enumerate(bars_):
        cx = LEFT + slot * (i + 0.5)
        y1, y2 = sorted((y(b), y(b + h)))
        amount_y = y1 - 5  # above the bar (below it, a loss's would meet the step names)
        ly = height - bottom + 16
        out.append(
            f"<g><title>{escape(_cut(label, TITLE_MAX))}: {_amount(h, 'usd', signed=True)}</title>"
            f'<rect x="{cx - slot * 0.35:.1f}" y="{y1:.1f}" width="{slot * 0.7:.1f}" '
            f'height="{max(y2 - y1, 1.0):.1f}" fill="{colour}"/>'
            f'<text x="{cx:.1f}" y="{amount_y:.1f}" text-anchor="middle" font-size="{font}" '
            f'fill="{INK}">{_amount(h, "usd", signed=True)}</text>'
            f'<text x="{cx:.1f}" y="{ly:.1f}" text-anchor="end" font-size="{font}" '
            f'fill="{INK}" transform="rotate(-35 {cx:.1f} {ly:.1f})">'
            f"{escape(_cut(label, 26))}</text></g>"
        )
    out.append(
        f'<line x1="{LEFT:.0f}" x2="{width - RIGHT:.0f}" y1="{y(0.0):.1f}" y2="{y(0.0):.1f}" '
        f'stroke="{MUTED}"/></svg>'
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


@dataclass(frozen=True)
class Curve:
    """A line over the ladder's delays: one value (or None: not known) per delay."""

    label: str
    values: Sequence[float | None]
    color: str = EXEC
    dashed: bool = False


def decay(
    title: str,
    delays_s: Sequence[float],
    curves: Sequence[Curve],
    *,
    unit: str = "ratio",
    marker_s: float | None = None,
    width: float = HALF,
) -> bytes:
    """The "alpha decay" chart (SPEC §12): values against the ladder's delays, spaced
    evenly (0, 2, 5, 10, 30, 60 s are not read on a linear scale), a value not known
    leaving a gap; `marker_s` (the half-life) is a dashed vertical line placed between
    its delays."""
    out = _open(width, H, title)
    known = [v for c in curves for v in c.values if v is not None]
    if not delays_s or not known:
        return _empty(out, width, H, "no data: no copies with a full ladder in the sweep")
    plot_w = width - LEFT - RIGHT
    n = len(delays_s)

    def x(i: float) -> float:
        return LEFT + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    axis = value_axis(known, unit, zero=True)
    for v in axis.ticks:
        y = axis.y(v)
        out.append(
            f'<line x1="{LEFT:.0f}" x2="{width - RIGHT:.0f}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{GRID}"/><text x="{LEFT - 8:.0f}" y="{y + 4:.1f}" text-anchor="end" '
            f'fill="{MUTED}">{_label(v, unit, axis.step)}</text>'
        )
    for i, d in enumerate(delays_s):
        anchor = "start" if i == 0 else ("end" if i == n - 1 else "middle")
        out.append(
            f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{TOP:.0f}" y2="{H - BOTTOM:.0f}" '
            f'stroke="{GRID}"/><text x="{x(i):.1f}" y="{H - BOTTOM + 18:.0f}" '
            f'text-anchor="{anchor}" fill="{MUTED}">+{d:g} s</text>'
        )
    if axis.lo <= 0 <= axis.hi:
        y0 = axis.y(0.0)
        out.append(
            f'<line x1="{LEFT:.0f}" x2="{width - RIGHT:.0f}" y1="{y0:.1f}" y2="{y0:.1f}" '
            f'stroke="{MUTED}"/>'
        )
    if marker_s is not None and n > 1 and delays_s[0] <= marker_s <= delays_s[-1]:
        j = max(i for i, d in enumerate(delays_s[:-1]) if d <= marker_s)
        lo, hi = delays_s[j], delays_s[j + 1]
        mx = x(j + (marker_s - lo) / (hi - lo))
        out.append(
            f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{TOP:.0f}" y2="{H - BOTTOM:.0f}" '
            f'stroke="{LOSS}" stroke-dasharray="4 3"/><text x="{mx + 4:.1f}" '
            f'y="{TOP + 14:.0f}" fill="{LOSS}" font-size="11">half-life {marker_s:g} s</text>'
        )
    legend_x = LEFT
    for c in curves:
        dash = ' stroke-dasharray="7 4"' if c.dashed else ""
        run: list[str] = []
        for i, val in enumerate([*c.values, None]):
            if val is not None:
                run.append(f"{x(i):.1f},{axis.y(val):.1f}")
                out.append(
                    f'<circle cx="{x(i):.1f}" cy="{axis.y(val):.1f}" r="3" fill="{c.color}">'
                    f"<title>{escape(c.label)} +{delays_s[i]:g} s: {_amount(val, unit)}</title>"
                    "</circle>"
                )
            elif run:
                if len(run) > 1:
                    out.append(
                        f'<polyline points="{" ".join(run)}" fill="none" stroke="{c.color}" '
                        f'stroke-width="2" stroke-linejoin="round"{dash}/>'
                    )
                run = []
        legend_x = _legend(out, legend_x, c.label, c.color, dash)
    return _close(out, plot_w)
