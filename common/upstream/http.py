"""The HTTP edge: one long-lived httpx.Client per process, and per upstream a token
bucket, retries with exponential backoff and full jitter, and a breaker that a 429 opens.

Politeness rules (SPEC §9): each upstream gets `rate_limit_rps` with a burst of
`rate_limit_burst`, and a path with a tighter limit of its own (`rate_limit_paths`, e.g.
the Data API's `/trades`) a second bucket that its requests draw on too. The buckets are
this process's (`TokenBucket`) or, for the jobs, one budget in Postgres that every
process and host shares (`common.store.budget`). A 429 halves the rate of the bucket
it was answered under (floor 1 rps) and is retried after
max(Retry-After, backoff); `breaker_threshold` 429s in a row open the upstream's breaker
for `breaker_open_s` (or Retry-After, if longer, up to 5 minutes), and while it is open
calls fail fast with BreakerOpen so callers move on instead of hammering. Successes
close it and win the rate back 10 % at a time. Connection errors and 5xx are retried
with exponential backoff and full jitter; other 4xx go back to the caller at once as
UpstreamStatusError (a 404 book is an answer).

Bodies are streamed: one longer than `http_max_body_bytes` is refused (BadPayload, not
retried) after reading at most that much, so a runaway answer cannot grow the process.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from common.runtime import settings as settings_mod

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], None]

RETRY_AFTER_MAX_S = 300.0  # the longest wait an upstream's Retry-After can impose
PREFIX_BYTES = 64 * 1024  # what a reject or an error keeps of a body


class UpstreamError(RuntimeError):
    """Base class: the upstream did not give a usable answer."""

    def __init__(self, upstream: str, message: str) -> None:
        super().__init__(f"{upstream}: {message}")
        self.upstream = upstream


class UpstreamStatusError(UpstreamError):
    """A non-retryable HTTP status (4xx other than 429), with the body."""

    def __init__(self, upstream: str, status: int, body: str) -> None:
        super().__init__(upstream, f"HTTP {status}: {body[:200]}")
        self.status = status
        self.body = body


class UpstreamUnavailable(UpstreamError):
    """Retries exhausted on connection errors, 429 or 5xx."""


class BreakerOpen(UpstreamError):
    """The upstream's breaker is open after a 429; try again later."""


class Stopped(Exception):
    """The process is stopping (SIGTERM/SIGINT): the request in flight was abandoned, or
    none was sent. Never retried. Not an UpstreamError on purpose: callers that move on
    past a failing upstream (simulate deciding without a book, poll marking a user
    failed) must not take a shutdown for the upstream's fault."""


class Halt:
    """A process's stop request, which its upstreams obey. `request()` runs in the
    signal handler (jobs.StopFlag): when the main thread is blocked in an upstream's I/O
    or backoff, it raises Stopped right there, as Ctrl-C's KeyboardInterrupt would, since
    a silent server holds a read for the whole read timeout. Other threads see the flag
    between chunks and between sleep slices."""

    def __init__(self) -> None:
        self.requested = False
        self._main_blocked_on: str | None = None  # the upstream the main thread waits on

    def request(self) -> None:
        self.requested = True
        upstream = self._main_blocked_on
        if upstream and threading.current_thread() is threading.main_thread():
            self._main_blocked_on = None  # once: a second signal must not hit the cleanup
            raise Stopped(f"{upstream}: stopping; the request in flight was abandoned")

    def check(self, upstream: str) -> None:
        if self.requested:
            raise Stopped(f"{upstream}: stopping; no request sent")

    @contextlib.contextmanager
    def blocking(self, upstream: str) -> Iterator[None]:
        """Marks the main thread as blocked on `upstream`, where request() may raise
        (httpx and httpcore close what they hold on any exception, as on Ctrl-C)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self._main_blocked_on = upstream
        try:
            self.check(upstream)  # a signal that came just before
            yield
        finally:
            self._main_blocked_on = None

    def sleep(self, seconds: float) -> None:
        """Sleeps in short slices; returns early once a stop is requested."""
        until = time.monotonic() + seconds
        while not self.requested and (left := until - time.monotonic()) > 0:
            time.sleep(min(0.1, left))


HALT = Halt()  # the process's own: jobs.StopFlag's handler requests it


class BadPayload(UpstreamError):
    """The body is unusable: not JSON, or over the size cap. Not retried. `text` keeps
    at most its first PREFIX_BYTES for the quarantine (a reject must not hold a whole
    50 MB answer); `size` and `sha256` are of all that was read; `truncated` says
    `text` is not the whole body."""

    def __init__(
        self,
        upstream: str,
        text: str,
        reason: str,
        *,
        size: int | None = None,
        sha256: str | None = None,
        truncated: bool = False,
    ) -> None:
        super().__init__(upstream, reason)
        data = text.encode()
        cut = len(data) > PREFIX_BYTES
        self.text = data[:PREFIX_BYTES].decode(errors="ignore") if cut else text
        self.size = len(data) if size is None else size
        self.sha256 = sha256 or hashlib.sha256(data).hexdigest()
        self.truncated = truncated or cut

    @classmethod
    def of_body(
        cls, upstream: str, body: bytes | bytearray, reason: str, encoding: str, *, whole: bool
    ) -> BadPayload:
        """Returns the error for raw bytes read (`whole`: the body ended there)."""
        return cls(
            upstream,
            _decode(body[:PREFIX_BYTES], encoding),
            reason,
            size=len(body),
            sha256=hashlib.sha256(body).hexdigest(),
            truncated=not whole or len(body) > PREFIX_BYTES,
        )


class Bucket(Protocol):
    """A request budget: `reserve` takes one token and returns how long to wait before
    using it; a 429 calls `slow_down`, a success `recover`."""

    rate: float

    def reserve(self) -> float: ...
    def slow_down(self) -> None: ...
    def recover(self) -> None: ...


# (name, rate, burst) -> the bucket: one of this process (TokenBucket) or a shared one
BucketFactory = Callable[[str, float, int], Bucket]


@dataclass
class TokenBucket:
    """Thread-safe token bucket whose rate can be lowered and recovers on success."""

    rate: float
    burst: int
    clock: Clock = time.monotonic
    min_rate: float = 1.0
    nominal_rate: float = field(init=False)
    _tokens: float = field(init=False)
    _stamp: float = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.nominal_rate = self.rate
        self._tokens = float(self.burst)
        self._stamp = self.clock()

    def _refill(self, now: float) -> None:
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def reserve(self) -> float:
        """Takes one token; returns how long the caller must wait before using it."""
        with self._lock:
            now = self.clock()
            self._refill(now)
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def slow_down(self) -> None:
        with self._lock:
            self._refill(self.clock())
            self.rate = max(self.min_rate, self.rate / 2)

    def recover(self) -> None:
        with self._lock:
            if self.rate < self.nominal_rate:
                self._refill(self.clock())
                self.rate = min(self.nominal_rate, self.rate * 1.1)


@dataclass
class Breaker:
    """Counts 429s in a row; at `threshold` it opens until `open_until`."""

    open_s: float
    threshold: int = 3
    clock: Clock = time.monotonic
    open_until: float = 0.0
    consecutive: int = 0
    trips: int = 0

    def check(self, upstream: str) -> None:
        remaining = self.open_until - self.clock()
        if remaining > 0:
            raise BreakerOpen(upstream, f"breaker open for {remaining:.1f}s more after 429s")

    def record_429(self, retry_after: float | None) -> bool:
        """Counts one 429; returns True when this one opened the breaker."""
        self.consecutive += 1
        if self.consecutive < self.threshold:
            return False
        self.trips += 1
        self.consecutive = 0
        wait = 0.0 if retry_after is None or math.isnan(retry_after) else retry_after
        wait = min(max(0.0, wait), RETRY_AFTER_MAX_S)  # inf would mean never again
        self.open_until = self.clock() + max(self.open_s, wait)
        return True

    def record_success(self) -> None:
        self.consecutive = 0

    @property
    def is_open(self) -> bool:
        return self.open_until > self.clock()


def parse_json(text: str) -> Any:
    """Returns JSON with every non-integer number as an exact Decimal (never a float)."""
    return json.loads(text, parse_float=Decimal)


def parse_retry_after(value: str, now: datetime) -> float | None:
    """Returns Retry-After in seconds, at most RETRY_AFTER_MAX_S; None when it is neither
    a finite non-negative number nor an HTTP-date. A date counts from `now` (one in the
    past is 0): a bogus header must not open a breaker for ever (`inf`, 999999999)."""
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)  # RFC 9110 dates are GMT
        seconds = max(0.0, (when - now).total_seconds())
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, RETRY_AFTER_MAX_S)


def _decode(data: bytes | bytearray, encoding: str) -> str:
    try:
        return data.decode(encoding, errors="replace")
    except LookupError:  # a charset Python does not know
        return data.decode("utf-8", errors="replace")


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    # A date is read against the answer's own Date, so our clock's skew does not count.
    now = datetime.now(UTC)
    with contextlib.suppress(TypeError, ValueError, IndexError):
        now = email.utils.parsedate_to_datetime(response.headers.get("date", ""))
    return parse_retry_after(value, now if now.tzinfo else now.replace(tzinfo=UTC))


class LazyClient:
    """The process's one httpx.Client, made at its first request: a run with nothing to
    fetch never imports httpx nor builds its TLS context (most of a job's cold start)."""

    def __init__(self, make: Callable[[], httpx.Client]) -> None:
        self._make = make
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def instance(self) -> httpx.Client:
        """Returns the client, making it on first use."""
        with self._lock:
            if self._client is None:
                self._client = self._make()
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()


@dataclass
class Upstream:
    """One upstream API (Data API, CLOB, Gamma) behind its own limiter and breaker."""

    name: str
    base_url: str
    client: LazyClient
    bucket: Bucket
    breaker: Breaker
    paths: dict[str, Bucket] = field(default_factory=dict)  # a path's own, drawn on too
    max_retries: int = 4
    max_body_bytes: int = 16 * 1024 * 1024
    deadline_s: float = 30.0
    backoff_base_s: float = 0.25
    backoff_cap_s: float = 8.0
    sleep: Sleep | None = None  # None: HALT's, which a stop cuts short
    jitter: Callable[[], float] = random.random
    clock: Clock = time.monotonic
    halt: Halt = HALT
    stats: dict[str, int] = field(default_factory=dict)

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    def _path_bucket(self, path: str) -> Bucket | None:
        """The bucket of the path's own limit, if it has one (`/trades` for /trades?...)."""
        for prefix, bucket in self.paths.items():
            if path == prefix or path.startswith(prefix + "/") or path.startswith(prefix + "?"):
                return bucket
        return None

    def _backoff(self, attempt: int) -> float:
        # Full jitter: uniform(0, min(cap, base × 2^attempt)).
        return self.jitter() * min(self.backoff_cap_s, self.backoff_base_s * 2.0**attempt)

    def _pause(self, seconds: float) -> None:
        with self.halt.blocking(self.name):
            (self.sleep or self.halt.sleep)(seconds)
        self.halt.check(self.name)

    def request_text(self, method: str, path: str, *, params: Any = None, body: Any = None) -> str:
        """Returns the body of a 2xx answer; raises an UpstreamError subclass, or
        Stopped when the process is stopping."""
        import httpx  # loaded by the client already: this only binds the name

        self.halt.check(self.name)
        client = self.client.instance()
        url = f"{self.base_url}{path}"
        last = "no attempt"
        tight = self._path_bucket(path)
        answered = tight or self.bucket  # a 429 or a success tells the tightest limit
        for attempt in range(self.max_retries + 1):
            self.breaker.check(self.name)
            wait = self.bucket.reserve()
            if tight is not None:
                wait = max(wait, tight.reserve())
            if wait > 0:
                self._pause(wait)
            self._count("requests")
            retry_after: float | None = None
            try:
                with self.halt.blocking(self.name):
                    status, text, retry_after = self._exchange(
                        client, method, url, params, body, path
                    )
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                self._count("transport_errors")
            else:
                if status < 300:
                    answered.recover()
                    self.breaker.record_success()
                    return text
                if status == 429:
                    self._count("http_429")
                    answered.slow_down()
                    if self.breaker.record_429(retry_after):
                        self._count("breaker_trips")
                        log.warning(
                            "%s: 429s in a row on %s; breaker open %.0fs, rate %.1f rps",
                            self.name,
                            path,
                            self.breaker.open_s,
                            answered.rate,
                        )
                        raise BreakerOpen(self.name, f"429s in a row on {path}")
                    last = "HTTP 429"
                elif status < 500:
                    self._count("http_4xx")
                    raise UpstreamStatusError(self.name, status, text)
                else:
                    last = f"HTTP {status}"
                    self._count("http_5xx")
            if attempt < self.max_retries:
                delay = max(self._backoff(attempt), min(retry_after or 0.0, self.backoff_cap_s))
                log.warning(
                    "%s: %s on %s; retry %d in %.2fs", self.name, last, path, attempt + 1, delay
                )
                self._pause(delay)
        log.error(
            "%s: giving up on %s after %d attempts: %s", self.name, path, self.max_retries + 1, last
        )
        raise UpstreamUnavailable(self.name, f"{path}: {last} after {self.max_retries + 1} tries")

    def _exchange(
        self, client: httpx.Client, method: str, url: str, params: Any, body: Any, path: str
    ) -> tuple[int, str, float | None]:
        """Sends one request; returns (status, text, Retry-After). The text is the body
        of a 2xx, the first PREFIX_BYTES of another 4xx's, else empty (unread)."""
        # httpx's timeouts bound each read, not the whole answer: a byte a second never
        # trips them, so the attempt's deadline is checked between chunks.
        deadline = self.clock() + self.deadline_s
        with client.stream(method, url, params=params, json=body) as response:
            status = response.status_code
            encoding = response.charset_encoding or "utf-8"
            if status < 300:
                return status, self._read_body(response, path, encoding, deadline), None
            if status == 429:
                return status, "", _retry_after(response)
            if status < 500:
                data, _ = self._read(response, PREFIX_BYTES, path, deadline)
                return status, _decode(data[:PREFIX_BYTES], encoding), None
            return status, "", None

    def _read(
        self, response: httpx.Response, limit: int, path: str, deadline: float
    ) -> tuple[bytearray, bool]:
        """Reads the body until it ends or passes `limit` bytes; returns what was read
        and whether it passed (the rest is never read: closing drops the connection).
        Past the deadline: UpstreamUnavailable, not retried (another try would drip as
        slowly); on a stop request: Stopped."""
        data = bytearray()
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) > limit:
                return data, True
            self.halt.check(self.name)
            if self.clock() > deadline:
                self._count("deadline")
                raise UpstreamUnavailable(
                    self.name,
                    f"{path}: no whole answer within {self.deadline_s}s ({len(data)} bytes read)",
                )
        return data, False

    def _read_body(
        self, response: httpx.Response, path: str, encoding: str, deadline: float
    ) -> str:
        """Returns a 2xx body; BadPayload past max_body_bytes (decompressed), which the
        Content-Length announces before any of it is read."""
        cap = self.max_body_bytes
        declared = _content_length(response)
        if declared is not None and declared > cap:
            self._count("oversize")
            reason = f"{path}: Content-Length {declared} is over the {cap}-byte cap"
            raise BadPayload(self.name, "", reason, size=0, truncated=True)
        data, over = self._read(response, cap, path, deadline)
        if over:
            self._count("oversize")
            reason = f"{path}: body over the {cap}-byte cap (stopped at {len(data)} bytes)"
            raise BadPayload.of_body(self.name, data, reason, encoding, whole=False)
        return _decode(data, encoding)

    def request_json(self, method: str, path: str, *, params: Any = None, body: Any = None) -> Any:
        """Returns the decoded JSON body (floats as Decimal); BadPayload if not JSON."""
        text = self.request_text(method, path, params=params, body=body)
        try:
            return parse_json(text)
        except ValueError as exc:
            raise BadPayload(self.name, text, f"{path}: body is not JSON ({exc})") from exc

    def get(self, path: str, params: Any = None) -> Any:
        return self.request_json("GET", path, params=params)

    def post(self, path: str, body: Any) -> Any:
        return self.request_json("POST", path, body=body)


@dataclass
class Upstreams:
    """The three HTTP upstreams of one process, sharing one httpx.Client."""

    client: LazyClient
    data_api: Upstream
    clob: Upstream
    gamma: Upstream
    on_close: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        self.client.close()
        for close in self.on_close:
            close()

    def stats(self) -> dict[str, dict[str, int]]:
        """Returns each upstream's request and error counters since the process started
        (heartbeats carry them to the status page), and `breaker_open` (1 while its
        breaker is open: rules.yaml's upstream_breaker_open reads it)."""
        return {
            u.name: {**u.stats, "breaker_open": int(u.breaker.is_open)}
            for u in (self.data_api, self.clob, self.gamma)
        }

    def __enter__(self) -> Upstreams:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_client(
    s: settings_mod.Settings, transport: httpx.BaseTransport | None = None
) -> httpx.Client:
    """Returns the process's httpx.Client with explicit timeouts and pool limits."""
    import httpx  # deferred: see LazyClient

    return httpx.Client(
        timeout=httpx.Timeout(s.http_timeout_s, connect=min(5.0, s.http_timeout_s)),
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        headers={"user-agent": "oculus/0.1 (+self-hosted copy simulator)"},
        transport=transport,
        follow_redirects=False,
    )


def make_upstreams(
    s: settings_mod.Settings | None = None,
    *,
    transport: httpx.BaseTransport | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep | None = None,
    halt: Halt | None = None,
    buckets: BucketFactory | None = None,
) -> Upstreams:
    """Returns the upstreams configured by settings; tests pass a MockTransport or
    point the base URLs at the sandbox, and their own Halt. By default a stop request
    to the process (HALT) ends their requests and cuts their backoff short. `buckets`
    makes the request budgets (default: this process's own, on `clock`)."""
    s = s or settings_mod.get()
    client = LazyClient(lambda: make_client(s, transport))
    limits = s.path_limits()

    def local(name: str, rate: float, burst: int) -> Bucket:
        return TokenBucket(rate, burst, clock=clock)

    make_bucket = buckets or local

    def upstream(name: str, base_url: str) -> Upstream:
        return Upstream(
            name=name,
            base_url=base_url,
            client=client,
            bucket=make_bucket(name, s.rate_limit_rps, s.rate_limit_burst),
            paths={
                path: make_bucket(f"{name}{path}", rate, burst)
                for path, (rate, burst) in limits.get(name, {}).items()
            },
            breaker=Breaker(s.breaker_open_s, s.breaker_threshold, clock=clock),
            max_retries=s.http_max_retries,
            max_body_bytes=s.http_max_body_bytes,
            deadline_s=s.http_deadline_s,
            sleep=sleep,
            clock=clock,
            halt=halt or HALT,
        )

    return Upstreams(
        client=client,
        data_api=upstream("data_api", s.data_api_url),
        clob=upstream("clob", s.clob_url),
        gamma=upstream("gamma", s.gamma_url),
    )
