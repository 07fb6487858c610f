"""Jinja2 with autoescape and StrictUndefined (a missing context field is an error, not
an empty cell), and the filters that turn integer micros into what a person reads."""

from __future__ import annotations

import functools
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2

from site_builder import svg
from site_builder.fmt import MICROS, usd
from site_builder.pages import alerts, common

TEMPLATES = Path(__file__).resolve().parent / "templates"


def usd_short(micros: int | None) -> str:
    """Large amounts compactly: $12.3k, $1.25M."""
    if micros is None:
        return "–"
    value = micros / MICROS
    sign = "−" if value < 0 else ""
    value = abs(value)
    if value >= 1_000_000:
        return f"{sign}${value / 1_000_000:.2f}M"
    if value >= 10_000:
        return f"{sign}${value / 1_000:.1f}k"
    return f"{sign}${value:,.2f}"


def price(micros: int | None) -> str:
    """470_000 → "0.470" (prices are probabilities; three decimals show a tick)."""
    return "–" if micros is None else f"{micros / MICROS:.3f}"


def shares(micros: int | None) -> str:
    return "–" if micros is None else f"{micros / MICROS:,.2f}"


def pct(value: float | None, digits: int = 1, signed: bool = False) -> str:
    """0.1234 → "12.3%"."""
    if value is None:
        return "–"
    shown = f"{value * 100:.{digits}f}"
    if float(shown) == 0:  # -0.001 % shown to two places is 0.00 %, not −0.00 %
        return f"{abs(float(shown)):.{digits}f}%"
    sign = "+" if signed and value > 0 else ""
    return f"{sign}{shown}%".replace("-", "−")


def plain(value: float | int) -> str:
    """A number for a form field: no exponent, no trailing zeros (0.015, 10000)."""
    return f"{value:.6f}".rstrip("0").rstrip(".")


def bps(value: int | None) -> str:
    """Basis points as a percentage: 250 → "2.50%"."""
    return "–" if value is None else f"{value / 100:.2f}%"


def when(value: datetime | None) -> str:
    """UTC, to the second; the page's script adds "N s ago" beside it."""
    return "–" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def iso(value: datetime | None) -> str:
    return "" if value is None else value.isoformat()


def ms(value: float | None) -> str:
    if value is None:
        return "–"
    if value == float("inf"):
        return "> 5 min"  # beyond the last histogram edge
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def lag_bound(value: float | None) -> str:
    """A histogram quantile as the bound it is: "≤ 2.00 s", or "> 5 min" past the edges."""
    if value is None:
        return "–"
    return ms(value) if value == float("inf") else f"≤ {ms(value)}"


def size(n: int) -> str:
    """Bytes for people: 8.0 kB, 10.5 MB, 1.97 GB."""
    if n >= 1 << 30:
        return f"{n / (1 << 30):.2f} GB"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MB"
    return f"{n / 1024:.1f} kB"


def isotime(text: str) -> str:
    """An ISO timestamp string (from a JSON report) as `when` shows times."""
    return when(datetime.fromisoformat(text))


def short(text: str | None, width: int = 60) -> str:
    if not text:
        return "–"
    return text if len(text) <= width else text[: width - 1] + "…"


def wallet(text: str | None) -> str:
    return "–" if not text else f"{text[:6]}…{text[-4:]}"


def sign_class(value: float | int | None) -> str:
    """CSS class for a gain or loss."""
    if value is None or value == 0:
        return ""
    return "pos" if value > 0 else "neg"


def to_json(value: Any) -> str:
    """JSON for a <script type="application/json"> block (safe inside HTML)."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,  # a block tag at a line end must not eat the space after it
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters.update(
        p50=lambda h: common.quantile(h, 0.5),
        p95=lambda h: common.quantile(h, 0.95),
        usd=usd,
        usd_short=usd_short,
        price=price,
        shares=shares,
        pct=pct,
        bps=bps,
        plain=plain,
        when=when,
        iso=iso,
        ms=ms,
        lag_bound=lag_bound,
        short=short,
        size=size,
        isotime=isotime,
        wallet=wallet,
        sign_class=sign_class,
        to_json=to_json,
    )
    env.globals["range_labels"] = svg.RANGE_LABELS
    env.globals["silence_body"] = alerts.silence_body
    return env


def page(template: str, **context: Any) -> str:
    """Renders one page template."""
    return environment().get_template(template).render(**context)
