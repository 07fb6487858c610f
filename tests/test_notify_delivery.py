"""The pure parts of notification delivery: the message and its id, the retry waits,
the rate room, and each platform's body within its documented limits (checked by the
same validators the loopback fakes use)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.domain import delivery
from common.upstream import channels
from functions import notify
from tests import notify_fakes

AT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def payload(**over: Any) -> dict[str, Any]:
    base = {
        "id": "oc-7-ops",
        "rule": "listener_down",
        "severity": "critical",
        "state": "FIRING",
        "labels": {"user": "0xabc"},
        "value": 0,
        "message": "listener down for 2m",
        "at": "2026-05-01T12:00:00Z",
    }
    return {**base, **over}


def test_message_ids_are_stable_and_distinct_per_transition_and_channel() -> None:
    assert delivery.message_id(3, 7, "ops") == delivery.message_id(3, 7, "ops") == "oc-a3-7-ops"
    assert delivery.message_id(None, 7, "ops") == "oc-7-ops"
    ids = {delivery.message_id(3, t, c) for t in (7, 8) for c in ("ops", "team")}
    assert len(ids) == 4


def test_a_payload_round_trips_in_the_contracts_shape() -> None:
    msg = delivery.Message.from_payload(payload(at="2026-05-01T14:00:00+02:00"))
    out = msg.payload()
    assert list(out) == notify_fakes.WEBHOOK_KEYS
    assert out["at"] == "2026-05-01T12:00:00.000Z"  # normalised to UTC
    assert notify_fakes.check_webhook(out, None, b"", {}) == []


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"severity": "fatal"}, "severity"),
        ({"state": "PENDING"}, "state"),
        ({"at": "yesterday"}, "ISO 8601"),
        ({"at": "2026-05-01T12:00:00"}, "time zone"),
        ({"value": float("nan")}, "finite"),
        ({"value": True}, "finite"),
        ({"value": "12"}, "finite"),
        ({"labels": ["a"]}, "labels"),
        ({"id": ""}, "id"),
    ],
)
def test_a_bad_payload_is_refused_with_the_reason(change: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        delivery.Message.from_payload(payload(**change))


def test_retry_after_is_honoured_within_the_cap_and_never_zero() -> None:
    policy = delivery.Policy(max_attempts=5, base_s=10, cap_s=600)
    asked = delivery.Outcome(ok=False, status=429, retry_after_s=42)
    assert delivery.retry_in(1, asked, policy, jitter=0.9) == 42
    zero = delivery.Outcome(ok=False, status=429, retry_after_s=0)
    assert delivery.retry_in(1, zero, policy, 0.5) == delivery.RETRY_MIN_S
    huge = delivery.Outcome(ok=False, status=429, retry_after_s=86_400)
    assert delivery.retry_in(1, huge, policy, 0.5) == 600
    assert delivery.retry_in(5, asked, policy, 0.5) is None  # the fifth failed: DEAD


@given(attempts=st.integers(1, 200), jitter=st.floats(0, 1))
def test_backoff_doubles_is_jittered_between_half_and_whole_and_capped(
    attempts: int, jitter: float
) -> None:
    policy = delivery.Policy(max_attempts=1000, base_s=10, cap_s=3600)
    wait = delivery.retry_in(attempts, delivery.Outcome(ok=False, status=503), policy, jitter)
    step = min(3600, 10 * 2 ** (attempts - 1))
    assert wait is not None and step / 2 <= wait <= step


def test_rate_room_and_when_it_frees() -> None:
    assert delivery.rate_room(0, 999) is None  # no cap
    assert delivery.rate_room(5, 3) == 2
    assert delivery.rate_room(5, 9) == 0
    oldest = AT - timedelta(seconds=50)
    assert delivery.rate_free_at(oldest, AT) == AT + timedelta(seconds=10)


@given(
    message=st.text(max_size=9000),
    labels=st.dictionaries(st.text(max_size=300), st.text(max_size=2000), max_size=40),
    title=st.text(min_size=1, max_size=400),
)
def test_discord_bodies_keep_within_the_embed_limits(
    message: str, labels: dict[str, str], title: str
) -> None:
    msg = delivery.Message.from_payload(payload(message=message, labels=labels, rule=title))
    body = channels.discord_body(msg)
    assert notify_fakes.check_discord(json.loads(json.dumps(body))) == []
    assert body["allowed_mentions"] == {"parse": []}


@pytest.mark.parametrize("char", ["x", "é", "🔥"])
def test_discord_bodies_of_oversized_alerts_are_cut_to_the_limits(char: str) -> None:
    labels = {char * 300 + str(i): char * 2000 for i in range(40)}
    msg = delivery.Message.from_payload(
        payload(rule=char * 400, message=char * 9000, labels=labels, id="oc-" + char * 3000)
    )
    body = channels.discord_body(msg)
    assert notify_fakes.check_discord(json.loads(json.dumps(body))) == []
    embed = body["embeds"][0]
    assert len(embed["fields"]) == 25 and embed["title"].endswith("…")


def test_discord_colours_by_severity_and_green_when_resolved() -> None:
    colours = {
        sev: channels.discord_body(delivery.Message.from_payload(payload(severity=sev)))["embeds"][
            0
        ]["color"]
        for sev in delivery.SEVERITY_RANK
    }
    assert colours == channels.DISCORD_COLOURS and len(set(colours.values())) == 4
    resolved = delivery.Message.from_payload(payload(state="RESOLVED"))
    assert channels.discord_body(resolved)["embeds"][0]["color"] == channels.DISCORD_RESOLVED


@given(message=st.text(max_size=6000))
def test_telegram_text_fits_4096_utf16_units(message: str) -> None:
    text = channels.telegram_text(delivery.Message.from_payload(payload(message=message)))
    assert 1 <= len(text.encode("utf-16-le")) // 2 <= 4096


@pytest.mark.parametrize("char", ["x", "🔥"])
def test_telegram_text_cut_to_4096_utf16_units(char: str) -> None:
    text = channels.telegram_text(delivery.Message.from_payload(payload(message=char * 9000)))
    assert 4000 <= len(text.encode("utf-16-le")) // 2 <= 4096 and text.endswith("…")
    assert (
        notify_fakes.check_telegram(
            f"/bot{'1:' + 'a' * 30}/sendMessage", {"chat_id": 1, "text": text}
        )
        == []
    )


def test_slack_text_escapes_what_slack_reads_as_markup() -> None:
    msg = delivery.Message.from_payload(payload(message="<!channel> a & b > c"))
    text = channels.slack_text(msg)
    assert "&lt;!channel&gt; a &amp; b &gt; c" in text
    assert notify_fakes.check_slack({"text": text}) == []
    assert text.startswith("*FIRING critical: listener_down*")


def test_the_signature_is_hmac_sha256_of_the_raw_body() -> None:
    # RFC 4231 test case 2
    sig = channels.signature(b"Jefe", b"what do ya want for nothing?")
    assert sig == "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_one_email_sums_up_a_batch_and_lists_each_id() -> None:
    msgs = [
        delivery.Message.from_payload(payload(id=f"oc-{i}-mail", severity=sev, state=state))
        for i, (sev, state) in enumerate(
            [("warn", "FIRING"), ("critical", "FIRING"), ("info", "RESOLVED")]
        )
    ]
    mail = channels.email_message(msgs, "oculus@example.org", ["ops@example.org"])
    assert mail["Subject"] == "[Oculus] 3 alerts, worst critical (2 firing, 1 resolved)"
    body = mail.get_content()
    assert all(f"id: oc-{i}-mail" in body for i in range(3))
    assert mail["X-Oculus-Ids"] == "oc-0-mail oc-1-mail oc-2-mail"
    again = channels.email_message(msgs, "oculus@example.org", ["ops@example.org"])
    assert again["Message-ID"] == mail["Message-ID"]  # a resent batch is recognisable


def test_channels_from_rules_yaml_with_the_built_in_log() -> None:
    text = """
channels:
  ops: {type: webhook, url: "https://example.org/hook", secret_env: OCULUS_HOOK_SECRET}
  team: {type: slack, webhook_url_env: OCULUS_SLACK_WEBHOOK, rate_per_min: 5}
  odd: 12
rules: []
"""
    found = notify.parse_channels(text)
    assert set(found) == {"log", "ops", "team", "odd"}
    assert found["ops"].options == {
        "url": "https://example.org/hook",
        "secret_env": "OCULUS_HOOK_SECRET",
    }
    assert found["team"].rate_per_min == 5 and found["log"].rate_per_min == 0
    assert (
        channels.problems(found["odd"], {})
        and "must be a mapping" in channels.problems(found["odd"], {})[0]
    )
    assert channels.problems(found["team"], {}) == [
        "channel 'team': environment variable OCULUS_SLACK_WEBHOOK (webhook_url_env) is not set"
    ]
    assert (
        channels.problems(found["team"], {"OCULUS_SLACK_WEBHOOK": "https://hooks.example/x"}) == []
    )
    with pytest.raises(notify.ChannelsUnreadable):
        notify.parse_channels("channels: [a, b")
    with pytest.raises(notify.ChannelsUnreadable):
        notify.parse_channels("channels: [a, b]")
