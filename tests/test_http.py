"""The HTTP edge: token bucket, retries with backoff on 5xx and connection errors,
429 slowing the bucket and opening the breaker, 4xx returned at once, non-JSON bodies
kept for the quarantine. Driven through httpx.MockTransport with a fake clock."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime

import httpx
import pytest

from common import http, settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def make(
    handler: Callable[[httpx.Request], httpx.Response], **overrides: object
) -> tuple[http.Upstreams, FakeClock]:
    clock = FakeClock()
    s = settings.Settings(
        data_api_url="http://data.test",
        clob_url="http://clob.test",
        gamma_url="http://gamma.test",
        **overrides,  # type: ignore[arg-type]
    )
    ups = http.make_upstreams(
        s, transport=httpx.MockTransport(handler), clock=clock, sleep=clock.sleep
    )
    return ups, clock


def test_json_numbers_become_exact_decimals() -> None:
    ups, _ = make(lambda r: httpx.Response(200, text='[{"price": 0.709999959, "size": 5}]'))
    rows = ups.data_api.get("/trades")
    assert rows == [{"price": Decimal("0.709999959"), "size": 5}]


def test_5xx_is_retried_with_growing_backoff_then_gives_up() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(503, text="down")

    ups, clock = make(handler, http_max_retries=3)
    ups.data_api.jitter = lambda: 1.0  # worst case of the full jitter
    with pytest.raises(http.UpstreamUnavailable, match="HTTP 503 after 4 tries"):
        ups.data_api.get("/trades", {"user": "x"})
    assert len(calls) == 4
    assert clock.slept == [0.25, 0.5, 1.0]
    assert ups.data_api.stats["http_5xx"] == 4


def test_transient_failures_recover() -> None:
    answers = iter(
        [httpx.ConnectError("refused"), httpx.Response(502), httpx.Response(200, json=[])]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    ups, _ = make(handler)
    assert ups.clob.get("/book") == []
    assert ups.clob.stats == {"requests": 3, "transport_errors": 1, "http_5xx": 1}


def test_4xx_is_not_retried() -> None:
    ups, _ = make(lambda r: httpx.Response(404, json={"error": "No orderbook exists"}))
    with pytest.raises(http.UpstreamStatusError) as info:
        ups.clob.get("/book", {"token_id": "1"})
    assert info.value.status == 404
    assert ups.clob.stats["requests"] == 1


def test_429_slows_the_bucket_then_the_breaker_opens_and_fails_fast() -> None:
    ups, clock = make(
        lambda r: httpx.Response(429, headers={"retry-after": "2"}),
        breaker_threshold=3,
        breaker_open_s=15,
        http_max_retries=5,
    )
    with pytest.raises(http.BreakerOpen):
        ups.data_api.get("/trades")
    assert ups.data_api.stats["http_429"] == 3
    assert ups.data_api.bucket.rate == pytest.approx(20 / 8)
    assert min(clock.slept) >= 2.0  # Retry-After honoured between tries
    # While open: no request leaves the process.
    with pytest.raises(http.BreakerOpen, match="breaker open"):
        ups.data_api.get("/trades")
    assert ups.data_api.stats["requests"] == 3
    # Other upstreams are unaffected.
    assert not ups.clob.breaker.is_open
    clock.now += 16
    with pytest.raises(http.BreakerOpen):
        ups.data_api.get("/trades")
    assert ups.data_api.stats["requests"] == 6


def test_a_single_429_is_retried_and_the_rate_recovers() -> None:
    answers = iter([httpx.Response(429), httpx.Response(200, json={"ok": True})])
    ups, _ = make(lambda r: next(answers))
    assert ups.gamma.get("/markets") == {"ok": True}
    assert ups.gamma.bucket.rate == pytest.approx(10 * 1.1)
    assert not ups.gamma.breaker.is_open


def test_token_bucket_paces_after_the_burst() -> None:
    clock = FakeClock()
    bucket = http.TokenBucket(rate=20, burst=40, clock=clock)
    waits = [bucket.reserve() for _ in range(45)]
    assert waits[:40] == [0.0] * 40
    assert waits[40:] == pytest.approx([0.05, 0.10, 0.15, 0.20, 0.25])
    clock.now += 10  # refills to the burst, not beyond
    assert [bucket.reserve() for _ in range(40)] == [0.0] * 40
    assert bucket.reserve() > 0


def test_requests_are_paced_by_the_bucket() -> None:
    ups, clock = make(lambda r: httpx.Response(200, json=[]), rate_limit_rps=10, rate_limit_burst=2)
    for _ in range(5):
        ups.clob.get("/midpoint")
    assert clock.slept == pytest.approx([0.1, 0.1, 0.1])


def test_non_json_body_is_kept_for_the_quarantine() -> None:
    ups, _ = make(lambda r: httpx.Response(200, text="<html>cloudflare</html>"))
    with pytest.raises(http.BadPayload) as info:
        ups.gamma.get("/markets")
    assert info.value.text == "<html>cloudflare</html>"


# Retry-After (issue 13, item 7): a huge, infinite or garbled value must not open the
# breaker for ever; the HTTP-date form counts from the answer's own Date.
NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2", 2.0),
        ("0.5", 0.5),
        ("0", 0.0),
        ("inf", None),
        ("Infinity", None),
        ("nan", None),
        ("1e400", None),  # overflows to inf
        ("-5", None),
        ("soon", None),
        ("", None),
        ("999999999", 300.0),
        ("Fri, 01 May 2026 12:01:00 GMT", 60.0),
        ("Fri, 01 May 2026 13:00:00 GMT", 300.0),
        ("Fri, 01 May 2026 11:00:00 GMT", 0.0),  # already past
        ("Fri, 31 Feb 2026 25:61:00 GMT", None),
    ],
)
def test_retry_after_is_finite_non_negative_and_clamped(value: str, seconds: float | None) -> None:
    assert http.parse_retry_after(value, NOW) == seconds


def test_retry_after_inf_opens_the_breaker_for_five_minutes_at_most() -> None:
    ups, clock = make(
        lambda r: httpx.Response(429, headers={"retry-after": "inf"}),
        breaker_threshold=1,
        breaker_open_s=15,
    )
    with pytest.raises(http.BreakerOpen):
        ups.data_api.get("/trades")
    assert ups.data_api.breaker.is_open
    clock.now += 301
    assert not ups.data_api.breaker.is_open


def test_retry_after_date_is_read_against_the_answers_date() -> None:
    sent = format_datetime(NOW, usegmt=True)
    later = format_datetime(NOW + timedelta(seconds=120), usegmt=True)
    ups, clock = make(
        lambda r: httpx.Response(429, headers={"retry-after": later, "date": sent}),
        breaker_threshold=1,
        breaker_open_s=15,
    )
    with pytest.raises(http.BreakerOpen):
        ups.data_api.get("/trades")
    assert ups.data_api.breaker.open_until == pytest.approx(clock.now + 120)


def test_breaker_clamps_what_it_is_given() -> None:
    clock = FakeClock()
    breaker = http.Breaker(open_s=15, threshold=1, clock=clock)
    assert breaker.record_429(math.inf)
    assert breaker.open_until == clock.now + 300
    assert breaker.record_429(math.nan)
    assert breaker.open_until == clock.now + 15
