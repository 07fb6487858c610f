"""Notify (seconds 27 and 57, and at once when the rules job queues a message): delivers
the notification outbox (SPEC §11) on the channels of rules.yaml (OCULUS_RULES_PATH;
the built-in `log` channel always exists). Every attempt is recorded; failures are
retried with backoff (a 429's Retry-After honoured) until OCULUS_NOTIFY_MAX_ATTEMPTS;
each channel keeps to its rate_per_min; an email channel sends one message per batch.
Run by hand: python -m functions.notify --once."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from common.domain import delivery, rules
from common.runtime import jobs, settings
from common.store import db, outbox
from common.upstream import channels as senders

log = logging.getLogger(__name__)


class ChannelsUnreadable(ValueError):
    """rules.yaml exists but its channels cannot be read."""


def parse_channels(text: str) -> dict[str, rules.Channel]:
    """Returns the channels of a rules.yaml text (`rules.parse`), the built-in `log`
    included; ChannelsUnreadable when the file is not usable at all. A channel with a
    bad type or option is kept with its problem: its deliveries report it."""
    parsed = rules.parse(text)
    if parsed.broken:
        raise ChannelsUnreadable("; ".join(str(e) for e in parsed.errors))
    return parsed.channels


def load_channels(path: Path) -> dict[str, rules.Channel]:
    """Returns the channels of the rules file at `path` (only `log` when there is none);
    ChannelsUnreadable when it cannot be read."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {"log": rules.LOG}
    except (OSError, UnicodeDecodeError) as exc:
        raise ChannelsUnreadable(f"{path}: {exc}") from exc
    return parse_channels(text)


def config(s: settings.Settings) -> outbox.Config:
    return outbox.Config(
        policy=delivery.Policy(
            max_attempts=s.notify_max_attempts,
            base_s=s.notify_backoff_base_s,
            cap_s=s.notify_backoff_cap_s,
        ),
        lease_s=s.notify_lease_s,
        email_batch_s=s.notify_email_batch_s,
        max_rows=s.notify_max_per_run,
    )


def run_once(conn: db.Conn, ctx: jobs.Context) -> int:
    s = ctx.settings
    only_known = False
    try:
        channels = load_channels(s.rules_path)
    except ChannelsUnreadable as exc:
        # an edit in progress must not burn attempts: deliver on `log` only meanwhile
        log.error("notify: rules file unreadable (%s); delivering on log only", exc)
        ctx.details["rules_error"] = str(exc)[:500]
        channels, only_known = {"log": rules.LOG}, True
    with senders.Senders(s) as send:
        counts = outbox.deliver(
            conn,
            channels,
            send.send,
            ctx.clock,
            config(s),
            stop=lambda: ctx.stop.stopped,
            only_known=only_known,
        )
    for key, n in counts.items():
        ctx.count(key, n)
    return sum(counts.get(k, 0) for k in ("sent", "failed", "dead"))


def main(argv: list[str] | None = None) -> int:
    p = jobs.parser("notify", __doc__ or "")
    args = p.parse_args(argv)
    return jobs.main("notify", args, run_once)


if __name__ == "__main__":
    sys.exit(main())
