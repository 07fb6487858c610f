"""Notification delivery's pure decisions (SPEC §11, channels): the message every
channel carries and its stable id, when a failed attempt is tried again, how many a
channel may still send this minute, when an email channel's batch is due, and the plain
text the chat and mail channels show. No I/O: common/store/outbox.py claims and records,
common/upstream/channels.py sends."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

SEVERITY_RANK = {"info": 0, "warn": 1, "error": 2, "critical": 3}
STATES = ("FIRING", "RESOLVED")
ERROR_MAX_CHARS = 500  # an attempt keeps this much of a receiver's error
RETRY_MIN_S = 1.0  # a Retry-After of 0 still waits this long (no hot loop on a 429)
RATE_WINDOW = timedelta(minutes=1)
EMAIL_BATCH_MAX = 100  # alerts in one email at most; more go in the next message
FIELD_MAX_CHARS = 10_000  # a message text or label value longer than this is cut


def message_id(alert_id: int | None, transition_id: int, channel: str) -> str:
    """Returns the stable id of one transition's message on one channel,
    `oc-<transition id>-<channel>` (`oc-a<alert id>-<transition id>-<channel>` when the
    alert is known): the same inputs give the same id in every run and process, so a
    receiver recognises the one duplicate a crash between sending and recording may
    cause, and the outbox refuses to queue a transition twice on a channel."""
    prefix = "oc" if alert_id is None else f"oc-a{alert_id}"
    return f"{prefix}-{transition_id}-{channel}"


def iso_utc(at: datetime) -> str:
    """Returns `at` as ISO 8601 UTC with a Z (`2026-05-01T12:00:00.123Z`)."""
    if at.tzinfo is None:
        raise ValueError("a naive datetime: pass an aware (UTC) one")
    text = at.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def bound(text: str, limit: int) -> str:
    """Returns `text` cut to `limit` characters, an ellipsis marking a cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


@dataclass(frozen=True)
class Message:
    """One notification as every channel carries it, and the body a generic webhook
    receives: {id, rule, severity, state, labels, value, message, at}."""

    id: str
    rule: str
    severity: str
    state: str
    labels: dict[str, str]
    value: float | int | None
    message: str
    at: str

    @classmethod
    def from_payload(cls, payload: Any) -> Message:
        """Returns the message an outbox payload holds; ValueError saying what is wrong."""
        if not isinstance(payload, dict):
            raise ValueError(f"payload is not an object: {type(payload).__name__}")
        missing = [k for k in ("id", "rule", "severity", "state", "at") if k not in payload]
        if missing:
            raise ValueError(f"payload lacks {', '.join(missing)}")
        texts = {k: payload[k] for k in ("id", "rule", "severity", "state", "at")}
        for key, val in texts.items():
            if not isinstance(val, str) or not val:
                raise ValueError(f"payload {key} is not a non-empty string: {val!r}")
        if payload["severity"] not in SEVERITY_RANK:
            raise ValueError(
                f"payload severity {payload['severity']!r} is not one of {', '.join(SEVERITY_RANK)}"
            )
        if payload["state"] not in STATES:
            raise ValueError(f"payload state {payload['state']!r} is not FIRING or RESOLVED")
        try:
            at = datetime.fromisoformat(payload["at"].replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"payload at is not ISO 8601: {payload['at']!r}") from exc
        if at.tzinfo is None:
            raise ValueError(f"payload at has no time zone: {payload['at']!r}")
        labels = payload.get("labels") or {}
        if not isinstance(labels, dict):
            raise ValueError("payload labels is not an object")
        value = payload.get("value")
        if isinstance(value, bool) or not (
            value is None or (isinstance(value, int | float) and math.isfinite(value))
        ):
            raise ValueError(f"payload value is not a finite number or null: {value!r}")
        message = payload.get("message") or ""
        if not isinstance(message, str):
            raise ValueError("payload message is not a string")
        return cls(
            id=texts["id"],
            rule=texts["rule"],
            severity=texts["severity"],
            state=texts["state"],
            labels={str(k): bound(str(v), FIELD_MAX_CHARS) for k, v in labels.items()},
            value=value,
            message=bound(message, FIELD_MAX_CHARS),
            at=iso_utc(at),
        )

    def payload(self) -> dict[str, Any]:
        """Returns the webhook body, keys in the contract's order."""
        return {
            "id": self.id,
            "rule": self.rule,
            "severity": self.severity,
            "state": self.state,
            "labels": dict(self.labels),
            "value": self.value,
            "message": self.message,
            "at": self.at,
        }

    def headline(self) -> str:
        """`FIRING critical: listener_down` (RESOLVED for a resolution)."""
        return f"{self.state} {self.severity}: {self.rule}"

    def text(self) -> str:
        """Returns the plain text the chat and mail channels show: the headline, the
        message, the value and labels, the time and the id."""
        lines = [self.headline()]
        if self.message:
            lines.append(self.message)
        if self.value is not None:
            lines.append(f"value: {self.value:g}")
        if self.labels:
            lines.append("labels: " + ", ".join(f"{k}={v}" for k, v in self.labels.items()))
        lines.append(f"at: {self.at}")
        lines.append(f"id: {self.id}")
        return "\n".join(lines)


def worst(messages: list[Message]) -> str:
    """Returns the highest severity among `messages` (info when there are none)."""
    return max((m.severity for m in messages), key=SEVERITY_RANK.__getitem__, default="info")


@dataclass(frozen=True)
class Outcome:
    """What one delivery attempt came to: `ok`; the HTTP or SMTP status, if any; the
    error (bounded); the wait a 429 asked for; how long it took; and whether the
    channel is misconfigured (nothing was sent: fix rules.yaml or the environment)."""

    ok: bool
    status: int | None = None
    error: str | None = None
    retry_after_s: float | None = None
    duration_micros: int = 0
    misconfigured: bool = False

    def bounded(self) -> Outcome:
        """Returns the outcome with its error cut to ERROR_MAX_CHARS."""
        if self.error is None or len(self.error) <= ERROR_MAX_CHARS:
            return self
        return Outcome(
            self.ok,
            self.status,
            bound(self.error, ERROR_MAX_CHARS),
            self.retry_after_s,
            self.duration_micros,
            self.misconfigured,
        )


@dataclass(frozen=True)
class Policy:
    """Retries: at most `max_attempts`, the wait doubling from `base_s` up to `cap_s`."""

    max_attempts: int = 10
    base_s: float = 10.0
    cap_s: float = 3600.0


def retry_in(attempts: int, outcome: Outcome, policy: Policy, jitter: float) -> float | None:
    """Returns the seconds until the next try of a notification whose `attempts`-th
    attempt failed with `outcome`, or None when it is given up (max attempts reached).
    A Retry-After is honoured (at least RETRY_MIN_S, at most the cap); otherwise the
    wait is base × 2^(attempts-1), capped, times a jitter in [0.5, 1) (`jitter` in
    [0, 1)), so receivers that failed together are not retried together."""
    if attempts >= policy.max_attempts:
        return None
    if outcome.retry_after_s is not None and math.isfinite(outcome.retry_after_s):
        return min(policy.cap_s, max(RETRY_MIN_S, outcome.retry_after_s))
    step = min(policy.cap_s, policy.base_s * 2.0 ** min(max(attempts - 1, 0), 60))
    return max(RETRY_MIN_S, step * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0)))


def rate_room(rate_per_min: int, used: int) -> int | None:
    """Returns how many more deliveries a channel capped at `rate_per_min` may make
    when it made `used` in the last minute; None when it has no cap (0)."""
    if rate_per_min <= 0:
        return None
    return max(0, rate_per_min - used)


def rate_free_at(oldest_in_window: datetime, now: datetime) -> datetime:
    """Returns when a channel over its cap has room again: a minute after the oldest
    delivery of the window (at least a second from now)."""
    return max(oldest_in_window + RATE_WINDOW, now + timedelta(seconds=RETRY_MIN_S))


def batch_due_at(oldest_created: datetime, window_s: float) -> datetime:
    """Returns when an email channel's batch goes: `window_s` after its oldest alert
    was queued, so the alerts of that span travel in one message."""
    return oldest_created + timedelta(seconds=window_s)
