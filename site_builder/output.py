"""What a page's build publishes through: the publisher and the chart cache (a chart is
redrawn only when its inputs change, and a restarted builder remembers which inputs drew
the charts already in public/)."""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from site_builder import publish, render, svg

# Which inputs drew each chart (a dotfile: nginx serves no dotfiles).
MANIFEST = "charts/.manifest.json"


@dataclass
class Site:
    """What a page's publish step needs: the publisher and the chart cache (a chart is
    redrawn only when its inputs change)."""

    publisher: publish.Publisher
    chart_drawn: dict[str, tuple[str, float]] = field(default_factory=dict)  # digest, when
    manifest_dirty: bool = False
    charts_drawn: int = 0
    csv_written: dict[str, tuple[str, float]] = field(default_factory=dict)  # url, when

    def chart(
        self,
        name: str,
        inputs: Any,
        draw: Callable[[], bytes],
        *,
        max_age_s: float = 0.0,
    ) -> str:
        """Publishes charts/<name>.svg if its inputs changed; returns its URL
        (versioned, so a browser fetches the new one). With `max_age_s`, a chart drawn
        less than that long ago is kept even if its inputs moved."""
        path = f"charts/{name}.svg"
        digest = hashlib.sha256(repr(inputs).encode()).hexdigest()[:16]
        drawn = self.chart_drawn.get(path)
        fresh = drawn is not None and time.time() - drawn[1] < max_age_s
        if (
            drawn is not None
            and (drawn[0] == digest or fresh)
            and self.publisher.path(path).exists()
        ):
            return f"/{path}?v={drawn[0]}"
        self.publisher.write(path, draw())
        self.chart_drawn[path] = (digest, time.time())
        self.charts_drawn += 1
        self.manifest_dirty = True
        return f"/{path}?v={digest}"

    def ranged(
        self,
        name: str,
        inputs: Any,
        draw: Callable[[datetime | None], bytes],
        now: datetime,
    ) -> dict[str, str]:
        """A time-series chart in each of the pages' ranges (`svg.RANGES`): range key →
        URL of charts/<name>-<range>.svg, drawn by `draw(since)`. Redrawn when its inputs
        move, and at most once a minute for the time that passes (its window slides)."""
        minute = now.replace(second=0, microsecond=0)
        urls = {}
        for key, span in svg.RANGES:
            since = None if span is None else now - span
            urls[key] = self.chart(
                f"{name}-{key}", (inputs, minute), functools.partial(draw, since)
            )
        return urls

    def load_manifest(self) -> None:
        """Reads which inputs drew the charts already in public/ (a restarted builder
        then redraws only what changed). A missing or unreadable manifest means none."""
        try:
            raw = json.loads(self.publisher.path(MANIFEST).read_text())
            self.chart_drawn = {str(k): (str(v[0]), float(v[1])) for k, v in raw.items()}
        except (OSError, ValueError, TypeError, IndexError, AttributeError):
            self.chart_drawn = {}

    def save_manifest(self) -> None:
        if self.manifest_dirty:
            data = {k: list(v) for k, v in sorted(self.chart_drawn.items())}
            self.publisher.write(MANIFEST, json.dumps(data, separators=(",", ":")))
            self.manifest_dirty = False

    def csv(self, path: str, text: str | Callable[[], str], *, max_age_s: float = 0.0) -> str:
        """Publishes a CSV download; returns its URL (versioned, like a chart's). With
        `max_age_s`, `text` is a callable and a file written less than that long ago is
        kept (a long download need not be rewritten with every build of its page)."""
        kept = self.csv_written.get(path)
        if (
            kept is not None
            and time.time() - kept[1] < max_age_s
            and self.publisher.path(path).exists()
        ):
            return kept[0]
        body = text() if callable(text) else text
        self.publisher.write(path, body)
        url = f"/{path}?v={hashlib.sha256(body.encode()).hexdigest()[:16]}"
        self.csv_written[path] = (url, time.time())
        return url

    def page(self, path: str, template: str, **context: Any) -> None:
        self.publisher.write(path, render.page(template, **context))
