"""rules.yaml (SPEC §11): channels, threshold rules and SQL rules, parsed and checked
with each error's line, and the alert lifecycle's pure steps. Pure: the rules job
(functions/rules.py) reads the file and the metrics, this decides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CHANNEL_TYPES = ("log", "email", "telegram", "discord", "slack", "webhook")
SEVERITIES = ("info", "warn", "error", "critical")


@dataclass(frozen=True)
class Channel:
    """A delivery channel: its name in rules.yaml, its type, and its options as written
    (secrets are never here: only the names of the environment variables that hold
    them, `*_env`). `rate_per_min` caps its deliveries a minute."""

    name: str
    type: str
    options: dict[str, Any] = field(default_factory=dict)
    rate_per_min: int = 60
    line: int = 0


LOG = Channel("log", "log", {}, rate_per_min=0)  # always there; 0: no cap
