"""Notification fan-out: N alerts queued on four HTTP channels (webhook with its
signature, Slack, Discord, Telegram) and the log, delivered by the outbox to loopback
receivers that check each platform's format; prints messages/s (goal: ≥ 100).

    .venv/bin/python -m benchmarks.notify_fanout [--alerts 250] [--budget-s 60]

A scratch database; the receivers answer at once, so this measures Oculus's side (claim,
send, record per message). Stops by itself after the alerts or the time budget.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import scratch
from common.domain import rules
from common.runtime import settings
from common.store import db, outbox
from common.upstream import channels
from tests.notify_fakes import FakeReceivers

SECRET = b"bench-secret"
CHANNELS = ("hook", "team", "chat", "tg", "log")


def channel_map(base: str) -> dict[str, rules.Channel]:
    def ch(name: str, kind: str, **options: object) -> rules.Channel:
        return rules.Channel(name, kind, dict(options), rate_per_min=0)  # no cap

    return {
        "log": rules.LOG,
        "hook": ch("hook", "webhook", url=f"{base}/webhook/in", secret_env="SECRET"),
        "team": ch("team", "slack", webhook_url_env="SLACK"),
        "chat": ch("chat", "discord", webhook_url_env="DISCORD"),
        "tg": ch("tg", "telegram", bot_token_env="TG", chat_id=42),
    }


def queue(conn: db.Conn, alerts: int, now: datetime) -> int:
    n = 0
    with conn.transaction():
        for t in range(alerts):
            for name in CHANNELS:
                mid = outbox.message_id(t, t, name)
                body = outbox.payload(
                    message_id=mid,
                    rule="bench_rule",
                    severity=("info", "warn", "error", "critical")[t % 4],
                    state="FIRING" if t % 2 == 0 else "RESOLVED",
                    labels={"user": f"0x{t:040x}"},
                    value=t * 1.5,
                    message=f"alert {t} on {name}",
                    at=now,
                )
                n += outbox.enqueue(
                    conn, message_id=mid, channel=name, alert_id=None, payload=body, now=now
                )
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--alerts", type=int, default=250, help="alerts, each on 5 channels")
    p.add_argument("--budget-s", type=float, default=60.0, help="stop after this long")
    args = p.parse_args(argv)
    s = settings.get()
    with (
        scratch.scratch_database(db.server_url(s), "bench_notify") as url,
        FakeReceivers(webhook_secret=SECRET) as fake,
        tempfile.TemporaryDirectory() as tmp,
        db.connect(url, autocommit=True) as conn,
    ):
        env = {
            "SECRET": SECRET.decode(),
            "SLACK": f"{fake.base}/slack/T/B/x",
            "DISCORD": f"{fake.base}/discord/1/t",
            "TG": "123456:" + "a" * 30,
        }
        sset = s.model_copy(update={"telegram_api_url": fake.base, "var_dir": Path(tmp)})
        queued = queue(conn, args.alerts, datetime.now(UTC))
        config = outbox.Config(max_rows=queued, lease_s=max(120.0, 4 * args.budget_s))
        deadline = time.monotonic() + args.budget_s
        with channels.Senders(sset, env=env) as senders:
            began = time.perf_counter()
            counts = outbox.deliver(
                conn,
                channel_map(fake.base),
                senders.send,
                lambda: datetime.now(UTC),
                config,
                stop=lambda: time.monotonic() > deadline,
            )
            took = time.perf_counter() - began
        bad = sum(1 for r in fake.received if r.problems)
        sent = counts.get("sent", 0)
        print(f"queued {queued} messages ({args.alerts} alerts x {len(CHANNELS)} channels)")
        print(f"delivered {sent} in {took:.2f} s: {sent / took:.0f} messages/s; counts {counts}")
        print(f"receivers got {len(fake.received)} HTTP requests, {bad} with format problems")
    return 0 if sent == queued and bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
