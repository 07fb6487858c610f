"""The HTTP edge: token bucket, retries with backoff on 5xx and connection errors,
429 slowing the bucket and opening the breaker, 4xx returned at once, non-JSON bodies
kept (as a bounded prefix) for the quarantine, answers over the size cap refused unread.
Driven through httpx.MockTransport with a fake clock, and a real loopback server for
what only a network does (a huge body, a drip)."""

from __future__ import annotations

import hashlib
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from http import server as httpd

import httpx
import pytest

from common.runtime import settings
from common.store import db, users
from common.upstream import http

MiB = 1024 * 1024


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
        ups.data_api.get("/activity")
    assert ups.data_api.stats["http_429"] == 3
    assert ups.data_api.bucket.rate == pytest.approx(20 / 8)
    assert min(clock.slept) >= 2.0  # Retry-After honoured between tries
    # While open: no request leaves the process.
    with pytest.raises(http.BreakerOpen, match="breaker open"):
        ups.data_api.get("/activity")
    assert ups.data_api.stats["requests"] == 3
    # Other upstreams are unaffected.
    assert not ups.clob.breaker.is_open
    clock.now += 16
    with pytest.raises(http.BreakerOpen):
        ups.data_api.get("/activity")
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


# Body cap (issue 13, item 4): a huge answer is refused after reading at most the cap,
# and a reject keeps a bounded prefix of the body, not all of it.
class Body(httpx.SyncByteStream):
    """A JSON body of `total` bytes (`[`, spaces, `]`) made as the client pulls it;
    `pulled` counts what it took."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total, self.chunk, self.pulled = total, chunk, 0

    def __iter__(self) -> Iterator[bytes]:
        while self.pulled < self.total:
            n = min(self.chunk, self.total - self.pulled)
            part = b" " * n
            if self.pulled == 0:
                part = b"[" + part[1:]
            if self.pulled + n == self.total:
                part = part[:-1] + b"]"
            self.pulled += n
            yield part


def test_an_answer_over_the_cap_is_refused_after_reading_only_the_cap() -> None:
    body = Body(50 * MiB)
    ups, _ = make(lambda r: httpx.Response(200, stream=body), http_max_body_bytes=MiB)
    with pytest.raises(http.BadPayload, match="cap") as info:
        ups.data_api.get("/trades")
    assert MiB < info.value.size <= MiB + body.chunk
    assert body.pulled == info.value.size  # the rest was never asked for
    read = b"[" + b" " * (info.value.size - 1)
    assert info.value.sha256 == hashlib.sha256(read).hexdigest()
    assert info.value.text == read[: http.PREFIX_BYTES].decode()
    assert info.value.truncated
    assert ups.data_api.stats["requests"] == 1  # not retried


def test_a_content_length_over_the_cap_is_refused_before_reading() -> None:
    body = Body(50 * MiB)
    ups, _ = make(
        lambda r: httpx.Response(200, headers={"content-length": str(body.total)}, stream=body),
        http_max_body_bytes=MiB,
    )
    with pytest.raises(http.BadPayload, match="Content-Length 52428800") as info:
        ups.clob.post("/books", [{"token_id": "1"}])
    assert body.pulled == 0
    assert (info.value.text, info.value.size, info.value.truncated) == ("", 0, True)


def test_a_non_json_reject_keeps_a_prefix_a_size_and_a_hash() -> None:
    page = "<html>" + "x" * MiB + "</html>"
    ups, _ = make(lambda r: httpx.Response(200, text=page))
    with pytest.raises(http.BadPayload, match="not JSON") as info:
        ups.gamma.get("/markets")
    assert info.value.text == page[: http.PREFIX_BYTES]
    assert info.value.size == len(page)
    assert info.value.sha256 == hashlib.sha256(page.encode()).hexdigest()
    assert info.value.truncated


def test_an_error_body_is_read_up_to_a_prefix_only() -> None:
    body = Body(50 * MiB)
    ups, _ = make(lambda r: httpx.Response(400, stream=body))
    with pytest.raises(http.UpstreamStatusError) as info:
        ups.clob.get("/book")
    assert info.value.status == 400
    assert len(info.value.body) == http.PREFIX_BYTES
    assert body.pulled <= http.PREFIX_BYTES + body.chunk


# A real loopback server: what the network does, not what a MockTransport does.
class Served:
    def __init__(self, url: str) -> None:
        self.url = url
        self.sent = 0  # body bytes the server managed to write
        self.requests = threading.Event()  # set at the first request
        self.done = threading.Event()  # set when a handler returns
        self.release = threading.Event()  # set at exit: handlers that wait give up


@contextmanager
def serving(write: Callable[[Served, httpd.BaseHTTPRequestHandler], None]) -> Iterator[Served]:
    """Runs a threaded HTTP server on loopback whose every request is answered by
    `write(served, handler)`; yields what it saw."""
    served: Served

    class Handle(httpd.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.requests.set()
            try:
                write(served, self)
            except OSError:  # the client went away
                pass
            finally:
                served.done.set()

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = httpd.ThreadingHTTPServer(("127.0.0.1", 0), Handle)
    server.daemon_threads = True
    served = Served(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        served.release.set()
        server.shutdown()
        server.server_close()


def send_huge(total: int) -> Callable[[Served, httpd.BaseHTTPRequestHandler], None]:
    def write(served: Served, h: httpd.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("content-type", "application/json")
        h.end_headers()  # no Content-Length: the body ends when the server closes
        chunk = b" " * (64 * 1024)
        h.wfile.write(b"[")
        while served.sent < total and not served.release.is_set():
            h.wfile.write(chunk)
            served.sent += len(chunk)

    return write


def real(url: str, **overrides: object) -> http.Upstreams:
    s = settings.Settings(data_api_url=url, clob_url=url, gamma_url=url, **overrides)  # type: ignore[arg-type]
    return http.make_upstreams(s)


def test_a_huge_answer_from_a_real_server_is_cut_at_the_cap() -> None:
    with serving(send_huge(100 * MiB)) as served:
        ups = real(served.url, http_max_body_bytes=MiB)
        with ups, pytest.raises(http.BadPayload, match="cap") as info:
            ups.data_api.get("/trades")
        assert served.done.wait(10), "the server kept sending after the client closed"
    assert info.value.size <= MiB + 64 * 1024
    # What the server got out is the cap plus the two sockets' buffers, not 200 MiB.
    # Sent = the cap plus what the two sockets buffer (loopback autotuning may grow the
    # receive buffer to tcp_rmem's max, 32 MiB on Linux by default): not 100 MiB.
    assert served.sent < 40 * MiB


# Deadline and stop (issue 13, item 6): httpx's timeouts are per read, so a server that
# drips a byte a second never trips them; and SIGTERM must end a request in flight.
def drip(every_s: float, for_s: float) -> Callable[[Served, httpd.BaseHTTPRequestHandler], None]:
    """Answers 200 and a JSON body one byte per `every_s`, ending after `for_s` (so a
    client that does not give up still finishes, and the test with it)."""

    def write(served: Served, h: httpd.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("content-type", "application/json")
        h.end_headers()
        h.wfile.write(b"[")
        h.wfile.flush()
        end = time.monotonic() + for_s
        while time.monotonic() < end and not served.release.wait(every_s):
            h.wfile.write(b" ")
            h.wfile.flush()
            served.sent += 1
        h.wfile.write(b"]")

    return write


def silent(served: Served, h: httpd.BaseHTTPRequestHandler) -> None:
    """Reads the request and answers nothing until the test ends."""
    served.release.wait(30)


def test_a_drip_ends_at_the_deadline_and_is_not_retried() -> None:
    with serving(drip(every_s=0.05, for_s=10)) as served:
        ups = real(served.url, http_deadline_s=1.0)
        started = time.monotonic()
        with ups, pytest.raises(http.UpstreamUnavailable, match=r"within 1\.0s") as info:
            ups.data_api.get("/activity")
        took = time.monotonic() - started
    assert 1.0 <= took < 3.0
    assert "bytes read" in str(info.value)
    assert ups.data_api.stats == {"requests": 1, "deadline": 1}


def stopping_after(halt: http.Halt, served: Served, delay_s: float) -> threading.Thread:
    """Requests a stop (from another thread) `delay_s` after the server saw a request."""

    def stop() -> None:
        if served.requests.wait(10):
            time.sleep(delay_s)
        halt.request()

    thread = threading.Thread(target=stop, daemon=True)
    thread.start()
    return thread


def test_a_stop_ends_a_drip_between_chunks() -> None:
    halt = http.Halt()
    with serving(drip(every_s=0.05, for_s=10)) as served:
        s = settings.Settings(data_api_url=served.url)
        with http.make_upstreams(s, halt=halt) as ups:
            stopping_after(halt, served, 0.3)
            started = time.monotonic()
            with pytest.raises(http.Stopped):
                ups.data_api.get("/activity")
            assert time.monotonic() - started < 1.5
            with pytest.raises(http.Stopped):  # and no other request starts
                ups.data_api.get("/activity")
    assert ups.data_api.stats == {"requests": 1}


def test_a_signal_ends_a_request_waiting_on_a_silent_server() -> None:
    # The read timeout (20 s here) is all that would end this wait: the signal handler
    # (what jobs.StopFlag installs) must break it at once.
    halt = http.Halt()
    previous = signal.signal(signal.SIGUSR1, lambda *_: halt.request())
    try:
        with serving(silent) as served:
            s = settings.Settings(data_api_url=served.url, http_timeout_s=20)
            with http.make_upstreams(s, halt=halt) as ups:
                killer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR1))
                started = time.monotonic()
                killer.start()
                with pytest.raises(http.Stopped):
                    ups.data_api.get("/activity")
                assert time.monotonic() - started < 2.0
                killer.join()
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_stop_cuts_the_backoff_short() -> None:
    halt = http.Halt()
    s = settings.Settings(data_api_url="http://data.test", http_max_retries=3)
    transport = httpx.MockTransport(lambda r: httpx.Response(503))
    with http.make_upstreams(s, transport=transport, halt=halt) as ups:
        ups.data_api.backoff_base_s = ups.data_api.backoff_cap_s = 20.0
        ups.data_api.jitter = lambda: 1.0
        threading.Timer(0.3, halt.request).start()
        started = time.monotonic()
        with pytest.raises(http.Stopped):
            ups.data_api.get("/trades")
        assert time.monotonic() - started < 1.5
    assert ups.data_api.stats == {"requests": 1, "http_5xx": 1}


def test_stopped_is_not_an_upstream_error() -> None:
    # Callers that catch UpstreamError move on (simulate decides without a book, poll
    # marks the user failed): a shutdown must not pass for the upstream's fault.
    assert not issubclass(http.Stopped, http.UpstreamError)


def test_poll_stops_promptly_on_sigterm_during_a_drip(db_url: str) -> None:
    with db.connect(db_url, autocommit=True) as conn:
        users.add(conn, "0x" + "ab" * 20, "dripped", [], datetime.now(UTC))
    with serving(drip(every_s=0.2, for_s=20)) as served:
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "OCULUS_DATA_API_URL": served.url,
            "OCULUS_CLOB_URL": served.url,
            "OCULUS_GAMMA_URL": served.url,
        }
        env.pop("OCULUS_CLOCK_URL", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "functions.poll", "--once"],
            cwd=settings.ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert served.requests.wait(30), "poll made no request"
            time.sleep(0.5)  # well into the drip
            assert proc.poll() is None
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            log = proc.communicate(timeout=5)[1].decode()
            took = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    assert took < 2.0, log
    assert proc.returncode == 1  # a --once run that did not finish
    assert "Stopped" in log
    with db.connect(db_url, autocommit=True) as conn:
        run = conn.execute("SELECT status, error FROM job_run WHERE job = 'poll'").fetchone()
    assert run is not None and run["status"] == "FAILED" and "Stopped" in run["error"]
