"""The outbox delivered to loopback receivers that check each platform's format: every
channel type, email batched over STARTTLS with AUTH, 429s and 5xx retried as asked,
DEAD after the last attempt, per-channel rate caps, misconfigured channels beside good
ones, and two notifiers never sending one row."""

from __future__ import annotations

import email.utils
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from common.domain import delivery, rules
from common.runtime import settings
from common.store import db, outbox
from common.upstream import channels
from tests import notify_fakes
from tests.notify_fakes import FakeReceivers, Scripted

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
SECRET = b"hook-secret-0123"
TOKEN = "123456:ABCdefGHIjklMNOpqrSTUvwx-yz_0123"
ENV = {
    "HOOK_SECRET": SECRET.decode(),
    "SLACK_URL": "",  # set per test: the fake's port
    "DISCORD_URL": "",
    "TG_TOKEN": TOKEN,
    "SMTP_USER": "alerts",
    "SMTP_PASSWORD": "s3cret",
}


@pytest.fixture
def fake() -> Iterator[FakeReceivers]:
    with FakeReceivers(webhook_secret=SECRET) as receivers:
        yield receivers


def channel_map(base: str, **rate: int) -> dict[str, rules.Channel]:
    def ch(name: str, kind: str, **options: Any) -> rules.Channel:
        return rules.Channel(name, kind, options, rate_per_min=rate.get(name, 60))

    return {
        "log": rules.LOG,
        "hook": ch("hook", "webhook", url=f"{base}/webhook/in", secret_env="HOOK_SECRET"),
        "team": ch("team", "slack", webhook_url_env="SLACK_URL"),
        "chat": ch("chat", "discord", webhook_url_env="DISCORD_URL"),
        "tg": ch("tg", "telegram", bot_token_env="TG_TOKEN", chat_id=-100123),
    }


def make_senders(fake: FakeReceivers, tmp_path: Path) -> channels.Senders:
    env = {
        **ENV,
        "SLACK_URL": f"{fake.base}/slack/T000/B000/XXXX",
        "DISCORD_URL": f"{fake.base}/discord/1234/tokentoken",
    }
    s = settings.Settings(telegram_api_url=fake.base, var_dir=tmp_path, http_timeout_s=5)
    return channels.Senders(s, env=env)


def config(**over: Any) -> outbox.Config:
    base: dict[str, Any] = {
        "policy": delivery.Policy(max_attempts=3, base_s=10, cap_s=600),
        "lease_s": 60,
        "email_batch_s": 60,
        "jitter": lambda: 1.0,  # the whole backoff step: exact expectations
    }
    return outbox.Config(**{**base, **over})


def put(conn: db.Conn, channel: str, n: int = 1, at: datetime = T0, **fields: Any) -> list[str]:
    """Queues n messages on a channel; returns their ids."""
    ids = []
    for i in range(n):
        mid = outbox.message_id(None, 1000 + i + len(ids_seen(conn)), channel)
        body = outbox.payload(
            message_id=mid,
            rule=fields.get("rule", "listener_down"),
            severity=fields.get("severity", "critical"),
            state=fields.get("state", "FIRING"),
            labels=fields.get("labels", {"user": "0xabc"}),
            value=fields.get("value", 0),
            message=fields.get("message", "listener down for 2m"),
            at=at,
        )
        assert outbox.enqueue(
            conn, message_id=mid, channel=channel, alert_id=None, payload=body, now=at
        )
        ids.append(mid)
    return ids


def ids_seen(conn: db.Conn) -> list[str]:
    return [r["message_id"] for r in conn.execute("SELECT message_id FROM notification")]


def rows(conn: db.Conn, channel: str | None = None) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT * FROM notification WHERE %(c)s::text IS NULL OR channel = %(c)s ORDER BY id",
        {"c": channel},
    ).fetchall()


def attempts(conn: db.Conn, channel: str | None = None) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT * FROM notification_attempt WHERE %(c)s::text IS NULL OR channel = %(c)s"
        " ORDER BY id",
        {"c": channel},
    ).fetchall()


def run(
    conn: db.Conn,
    chans: dict[str, rules.Channel],
    send: outbox.Send,
    at: datetime,
    **over: Any,
) -> dict[str, int]:
    return outbox.deliver(conn, chans, send, lambda: at, config(**over))


def test_every_http_channel_delivers_in_its_platforms_format(
    conn: db.Conn, fake: FakeReceivers, tmp_path: Path
) -> None:
    chans = channel_map(fake.base)
    for name in ("hook", "team", "chat", "tg", "log"):
        put(conn, name, labels={"user": "0xabc", "scope": "<all>"}, message="a <b> & c")
    with make_senders(fake, tmp_path) as senders:
        counts = run(conn, chans, senders.send, T0)
    assert counts == {"sent": 5}
    assert sorted(r.kind for r in fake.received) == ["discord", "slack", "telegram", "webhook"]
    assert [r.problems for r in fake.received] == [[], [], [], []]
    hook = fake.of("webhook")[0]
    assert hook.json()["id"] == hook.headers["x-oculus-id"] == rows(conn, "hook")[0]["message_id"]
    assert hook.headers["x-oculus-signature"].startswith("sha256=")
    assert fake.of("telegram")[0].json()["chat_id"] == "-100123"
    assert all(r["status"] == "SENT" and r["attempts"] == 1 for r in rows(conn))
    assert [a["ok"] for a in attempts(conn)] == [True] * 5
    lines = (tmp_path / "log" / "alerts.jsonl").read_text().splitlines()
    assert len(lines) == 1 and '"id": "oc-' in lines[0]
    # a second run is a no-op
    with make_senders(fake, tmp_path) as senders:
        assert run(conn, chans, senders.send, T0 + timedelta(minutes=5)) == {}
    assert len(fake.received) == 4


def test_a_wrong_webhook_secret_fails_the_signature_check(
    conn: db.Conn, fake: FakeReceivers, tmp_path: Path
) -> None:
    fake.webhook_secret = b"another secret"
    put(conn, "hook")
    with make_senders(fake, tmp_path) as senders:
        assert run(conn, channel_map(fake.base), senders.send, T0) == {"failed": 1}
    assert fake.of("webhook")[0].problems == ["bad or missing X-Oculus-Signature"]
    (a,) = attempts(conn)
    assert a["status"] == 400 and "Signature" in a["error"]


@pytest.mark.parametrize(
    ("kind", "channel", "answer", "wait_s"),
    [
        ("discord", "chat", notify_fakes.discord_429(2.5), 2.5),
        ("telegram", "tg", notify_fakes.telegram_429(17), 17),
        ("slack", "team", Scripted(429, "rate_limited", {"retry-after": "30"}), 30),
        ("webhook", "hook", Scripted(429, None, {"retry-after": "HTTP-DATE"}), 120),
    ],
)
def test_a_429s_retry_after_is_honoured(
    conn: db.Conn,
    fake: FakeReceivers,
    tmp_path: Path,
    kind: str,
    channel: str,
    answer: Scripted,
    wait_s: float,
) -> None:
    if answer.headers.get("retry-after") == "HTTP-DATE":
        later = datetime.now(UTC) + timedelta(seconds=wait_s)
        answer.headers["retry-after"] = email.utils.format_datetime(later, usegmt=True)
    fake.script(kind, answer)
    put(conn, channel, 2)
    with make_senders(fake, tmp_path) as senders:
        counts = run(conn, channel_map(fake.base), senders.send, T0)
    # the first 429 rests the channel: its second message goes back, not sent
    assert counts == {"failed": 1, "released": 1}
    assert len(fake.of(kind)) == 1
    first, second = rows(conn, channel)
    assert first["attempts"] == 1 and first["status"] == "PENDING"
    assert abs((first["next_at"] - T0).total_seconds() - wait_s) <= 1.5  # an HTTP-date: whole s
    assert second["attempts"] == 0 and second["next_at"] == first["next_at"]
    (a,) = attempts(conn)
    assert a["status"] == 429 and abs(a["retry_after_s"] - wait_s) <= 1.5
    # due again: both go
    with make_senders(fake, tmp_path) as senders:
        assert run(conn, channel_map(fake.base), senders.send, first["next_at"]) == {"sent": 2}
    assert all(r["status"] == "SENT" for r in rows(conn))


def test_5xx_backs_off_doubling_then_gives_up_dead_with_every_attempt_recorded(
    conn: db.Conn, fake: FakeReceivers, tmp_path: Path
) -> None:
    fake.script("webhook", *[Scripted(503, "down")] * 3)
    (mid,) = put(conn, "hook")
    chans = channel_map(fake.base)
    at = T0
    waits = []
    with make_senders(fake, tmp_path) as senders:
        for _ in range(3):
            run(conn, chans, senders.send, at)
            (row,) = rows(conn)
            waits.append((row["next_at"] - at).total_seconds())
            at = row["next_at"]
        # nothing more: it is DEAD
        assert run(conn, chans, senders.send, at + timedelta(days=1)) == {}
    (row,) = rows(conn)
    assert row["status"] == "DEAD" and row["attempts"] == 3 and "HTTP 503" in row["last_error"]
    assert waits[:2] == [10, 20]  # base 10 s, doubled; jitter 1.0 = the whole step
    assert [a["status"] for a in attempts(conn)] == [503, 503, 503]
    assert [r.json()["id"] for r in fake.of("webhook")] == [mid] * 3


def test_a_connection_refused_is_a_failed_attempt_too(
    conn: db.Conn, tmp_path: Path, fake: FakeReceivers
) -> None:
    port = notify_fakes.free_port()
    chans = {"hook": rules.Channel("hook", "webhook", {"url": f"http://127.0.0.1:{port}/x"})}
    put(conn, "hook")
    with make_senders(fake, tmp_path) as senders:
        assert run(conn, chans, senders.send, T0) == {"failed": 1}
    (a,) = attempts(conn)
    assert a["status"] is None and "ConnectError" in a["error"]


def test_the_rate_cap_defers_without_counting_attempts(
    conn: db.Conn, fake: FakeReceivers, tmp_path: Path
) -> None:
    chans = channel_map(fake.base, team=2)
    put(conn, "team", 5)
    put(conn, "hook", 3)  # another channel is not held back
    with make_senders(fake, tmp_path) as senders:
        counts = run(conn, chans, senders.send, T0)
        assert counts == {"sent": 5, "deferred": 3}
        assert len(fake.of("slack")) == 2 and len(fake.of("webhook")) == 3
        held = [r for r in rows(conn, "team") if r["status"] == "PENDING"]
        assert [r["attempts"] for r in held] == [0, 0, 0]
        assert {r["next_at"] for r in held} == {T0 + timedelta(minutes=1)}
        # 30 s on: not due; at the minute: two more
        assert run(conn, chans, senders.send, T0 + timedelta(seconds=30)) == {}
        assert run(conn, chans, senders.send, T0 + timedelta(minutes=1)) == {
            "sent": 2,
            "deferred": 1,
        }
    assert len(attempts(conn, "team")) == 4


def test_a_misconfigured_channel_never_stops_the_others(
    conn: db.Conn, fake: FakeReceivers, tmp_path: Path
) -> None:
    chans = {
        **channel_map(fake.base),
        "nosecret": rules.Channel("nosecret", "slack", {"webhook_url_env": "UNSET_VAR"}),
        "pager": rules.Channel("pager", "pagerduty", {}),
        "badurl": rules.Channel("badurl", "webhook", {"url": "ftp://example.org/x"}),
        "badmail": rules.Channel("badmail", "email", {"host": "h", "to": "nobody"}),
    }
    for name in ("nosecret", "pager", "gone", "badurl", "badmail", "hook"):
        put(conn, name)
    with make_senders(fake, tmp_path) as senders:
        counts = run(conn, chans, senders.send, T0 + timedelta(minutes=2))
    assert counts == {"sent": 1, "failed": 5}
    assert [r.problems for r in fake.received] == [[]]
    errors = {a["channel"]: a["error"] for a in attempts(conn) if not a["ok"]}
    assert errors == {
        "nosecret": "channel 'nosecret': environment variable UNSET_VAR (webhook_url_env) is"
        " not set",
        "pager": "channel 'pager': unknown type 'pagerduty' (one of log, email, telegram,"
        " discord, slack, webhook)",
        "gone": "channel 'gone' is not configured in rules.yaml (channels:)",
        "badurl": "channel 'badurl': not an http(s) URL",
        "badmail": "channel 'badmail': option 'to' is not an address or a list of addresses",
    }
    assert {r["channel"]: r["status"] for r in rows(conn)}["gone"] == "PENDING"


def test_a_row_whose_payload_went_bad_is_given_up_at_once(
    conn: db.Conn, fake: FakeReceivers, tmp_path: Path
) -> None:
    put(conn, "hook", 2)
    conn.execute(
        "UPDATE notification SET payload = '{\"id\": 1}'"
        " WHERE id = (SELECT min(id) FROM notification)"
    )
    with make_senders(fake, tmp_path) as senders:
        assert run(conn, channel_map(fake.base), senders.send, T0) == {"dead": 1, "sent": 1}
    bad = rows(conn)[0]
    assert bad["status"] == "DEAD" and bad["last_error"].startswith("bad payload")


def test_enqueue_is_idempotent_per_message_id_and_checks_the_payload(conn: db.Conn) -> None:
    mid = outbox.message_id(4, 9, "hook")
    body = outbox.payload(
        message_id=mid,
        rule="r",
        severity="warn",
        state="RESOLVED",
        labels={},
        value=None,
        message="m",
        at=T0,
    )
    kwargs: dict[str, Any] = {"message_id": mid, "channel": "hook", "alert_id": None, "now": T0}
    assert outbox.enqueue(conn, payload=body, **kwargs) is True
    assert outbox.enqueue(conn, payload=body, **kwargs) is False
    (row,) = rows(conn)
    assert row["payload"] == body and row["next_at"] == T0 and row["status"] == "PENDING"
    with pytest.raises(ValueError, match="is not the message_id"):
        outbox.enqueue(conn, payload={**body, "id": "other"}, **kwargs)
    with pytest.raises(ValueError, match="severity"):
        outbox.payload(
            message_id=mid,
            rule="r",
            severity="loud",
            state="FIRING",
            labels={},
            value=1.5,
            message="",
            at=T0,
        )


def test_a_row_another_notifier_holds_is_skipped(
    conn: db.Conn, db_url: str, fake: FakeReceivers, tmp_path: Path
) -> None:
    put(conn, "hook", 2)
    with db.connect(db_url) as other, other.transaction():
        held = other.execute(
            "SELECT id FROM notification ORDER BY id LIMIT 1 FOR UPDATE"
        ).fetchone()
        assert held is not None
        with make_senders(fake, tmp_path) as senders:
            assert run(conn, channel_map(fake.base), senders.send, T0) == {"sent": 1}
    assert [r["status"] for r in rows(conn)] == ["PENDING", "SENT"]
    assert rows(conn)[0]["attempts"] == 0


def test_a_lease_that_lapsed_is_recorded_as_a_lost_attempt_and_sent_again(
    conn: db.Conn, fake: FakeReceivers, tmp_path: Path
) -> None:
    (mid,) = put(conn, "hook")
    # a notifier claimed it (attempt counted, lease 60 s) and died before recording
    with conn.transaction():
        outbox.lease(conn, [r["id"] for r in rows(conn)], T0 + timedelta(seconds=60))
    with make_senders(fake, tmp_path) as senders:
        assert run(conn, channel_map(fake.base), senders.send, T0 + timedelta(seconds=30)) == {}
        counts = run(conn, channel_map(fake.base), senders.send, T0 + timedelta(seconds=60))
    assert counts == {"lost": 1, "sent": 1}
    (row,) = rows(conn)
    assert row["status"] == "SENT" and row["attempts"] == 2
    lost, ok = attempts(conn)
    assert not lost["ok"] and "may have been delivered" in lost["error"] and ok["ok"]
    assert [r.json()["id"] for r in fake.received] == [mid]


def test_a_stop_releases_the_claimed_rows_unsent(
    conn: db.Conn, fake: FakeReceivers, tmp_path: Path
) -> None:
    put(conn, "hook", 3)
    sent: list[str] = []

    def send(ch: rules.Channel, msgs: list[delivery.Message]) -> delivery.Outcome:
        sent.append(msgs[0].id)
        return delivery.Outcome(ok=True, status=204)

    stops = iter([False, False, True])
    counts = outbox.deliver(
        conn, channel_map(fake.base), send, lambda: T0, config(), stop=lambda: next(stops, True)
    )
    assert counts == {"sent": 1, "released": 2}
    assert [(r["status"], r["attempts"], r["next_at"]) for r in rows(conn)][1:] == [
        ("PENDING", 0, T0),
        ("PENDING", 0, T0),
    ]


def test_a_sender_that_raises_is_a_failed_attempt(conn: db.Conn, fake: FakeReceivers) -> None:
    put(conn, "hook")

    def broken(ch: rules.Channel, msgs: list[delivery.Message]) -> delivery.Outcome:
        raise RuntimeError("bug")

    assert run(conn, channel_map(fake.base), broken, T0) == {"failed": 1}
    assert attempts(conn)[0]["error"] == "RuntimeError: bug"


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[notify_fakes.SMTPFake]:
    with notify_fakes.SMTPFake(tmp_path) as server:
        yield server


def mail_channel(smtp: notify_fakes.SMTPFake, **over: Any) -> rules.Channel:
    options = {
        "host": "127.0.0.1",
        "port": smtp.port,
        "security": "starttls",
        "from": "oculus@example.org",
        "to": ["ops@example.org", "oncall@example.org"],
        "username_env": "SMTP_USER",
        "password_env": "SMTP_PASSWORD",
        "ca_file": str(smtp.cert),
        **over,
    }
    return rules.Channel("mail", "email", options)


def test_three_alerts_within_a_minute_go_in_one_email_over_starttls_with_auth(
    conn: db.Conn, smtp: notify_fakes.SMTPFake, fake: FakeReceivers, tmp_path: Path
) -> None:
    chans = {"mail": mail_channel(smtp)}
    ids = put(conn, "mail", 1, at=T0, severity="warn")
    ids += put(conn, "mail", 1, at=T0 + timedelta(seconds=20), severity="critical")
    ids += put(conn, "mail", 1, at=T0 + timedelta(seconds=50), severity="info", state="RESOLVED")
    with make_senders(fake, tmp_path) as senders:
        # the batch waits a minute from its oldest alert
        assert run(conn, chans, senders.send, T0 + timedelta(seconds=50)) == {"deferred": 3}
        assert smtp.mails == []
        assert run(conn, chans, senders.send, T0 + timedelta(seconds=60)) == {"sent": 3}
    (mail,) = smtp.mails
    assert mail.tls and mail.authenticated_as == "alerts"
    assert mail.rcpt == ["ops@example.org", "oncall@example.org"]
    assert mail.message["Subject"] == "[Oculus] 3 alerts, worst critical (2 firing, 1 resolved)"
    assert mail.message["X-Oculus-Ids"] == " ".join(ids)
    body = mail.message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert all(f"id: {i}" in body for i in ids)
    assert all(r["status"] == "SENT" for r in rows(conn))
    assert {a["status"] for a in attempts(conn)} == {250}


def test_email_refused_without_tls_or_with_a_wrong_password(
    conn: db.Conn, smtp: notify_fakes.SMTPFake, fake: FakeReceivers, tmp_path: Path
) -> None:
    put(conn, "plain")
    put(conn, "wrongpw")
    put(conn, "untrusted")
    chans = {
        "plain": mail_channel(smtp, security="none", username_env=None, password_env=None),
        "wrongpw": mail_channel(smtp, password_env="HOOK_SECRET"),
        "untrusted": mail_channel(smtp, ca_file=None),
    }
    chans = {k: rules.Channel(k, v.type, {**v.options}) for k, v in chans.items()}
    with make_senders(fake, tmp_path) as senders:
        counts = run(conn, chans, senders.send, T0 + timedelta(minutes=1))
    assert counts == {"failed": 3} and smtp.mails == []
    errors = {a["channel"]: (a["status"], a["error"]) for a in attempts(conn)}
    assert errors["plain"][0] == 530  # STARTTLS required first
    assert errors["wrongpw"][0] == 535
    assert "CERTIFICATE_VERIFY_FAILED" in errors["untrusted"][1]


def test_an_smtp_4xx_is_retried_and_the_batch_resent_whole(
    conn: db.Conn, smtp: notify_fakes.SMTPFake, fake: FakeReceivers, tmp_path: Path
) -> None:
    smtp.failures.append(451)
    chans = {"mail": mail_channel(smtp)}
    put(conn, "mail", 2)
    with make_senders(fake, tmp_path) as senders:
        assert run(conn, chans, senders.send, T0 + timedelta(minutes=1)) == {"failed": 2}
        (retry_at,) = {r["next_at"] for r in rows(conn)}
        assert run(conn, chans, senders.send, retry_at) == {"sent": 2}
    assert len(smtp.mails) == 1 and [a["status"] for a in attempts(conn)] == [451, 451, 250, 250]
