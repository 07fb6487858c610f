"""Book watcher (SPEC §12): keeps the order books of the assets the followed traders are
trading live from the CLOB market channel (OCULUS_CLOB_WS_URL), so the book at any
moment of the last OCULUS_WATCH_BOOKS_HISTORY_S — just before a leader's fill, or at a
delay after it — can be read without a REST call.

- **Which assets**: each asset from its first detected fill (trade_event, any source)
  until OCULUS_WATCH_BOOKS_S after its latest one, at most OCULUS_WATCH_BOOKS_MAX_ASSETS
  (the newest fills first); re-read every REFRESH_S, (un)subscribed as the set moves.
- **Books**: a `book` snapshot, then `price_change` deltas (the new total at a price;
  0 removes it), in `common.domain.live_book.LiveBook`.
- **Checks**, each resyncing the book from REST `/book` when it fails:
  - a `book` message's hash (the server's algorithm, `clob.book_hash`, with the REST
    book's `min_order_size` and `neg_risk`, which the message lacks);
  - each `price_change` entry's `best_bid` / `best_ask` against the book once applied;
  - every OCULUS_WATCH_BOOKS_REST_CHECK_S, the REST book against this book as it was at
    the REST book's own timestamp (the assets take turns, one check a RECV_SLICE_S).
  A delta's own `hash` is not checked: what it hashes is not documented.
- **The ladder** (`book_ladder`): for each BUY/SELL copy group, once its last delay
  (OCULUS_LADDER_DELAYS_S) has passed, the book at each delay after the leader's first
  fill, from the history (+0: just before the fill, or the first book after detection
  when the asset was not watched yet), compact (±0.10 of mid, 50 a side). **REST is the
  fallback**: each detected fill plans a REST `/book` read at each delay still ahead
  (+0: once, after detection), taken only if the live book does not hold that moment
  (the asset not watched, not synced, the connection down) and only within
  REST_RUNG_TOLERANCE_MS (200 ms) of it; a delay neither holds is left out. A group
  detected late (up to LATE_DETECT_S after its fill) still gets what can be taken; a
  group nothing could be taken for is not looked at again.
- **Connection**: text `PING` every PING_S, stale (reconnect) without a frame for
  STALE_S; reconnects with capped exponential backoff and jitter; a drop forgets the
  levels (deltas may have been missed: no moment after the last event is read), the
  reconnect resubscribes, and the server's fresh snapshots resync each book. A frame
  that does not parse is quarantined.

One watcher per database (the elected role `watch_books`); a lost database connection
ends it (exit 69, for supervisord to restart it).

    python -m functions.watch_books            # until SIGTERM
    python -m functions.watch_books --seconds 30
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import random
import sys
import threading
import time
import urllib.parse
from collections import Counter, deque
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

from common.domain import live_book, money
from common.runtime import jobs, memory
from common.runtime import settings as settings_mod
from common.store import db, ladder, quarantine
from common.upstream import clob, http, wire

log = logging.getLogger(__name__)

PROCESS = "watch_books"
PING_S = 10.0  # the CLOB's own clients ping every 10 s ...
STALE_S = 30.0  # ... and call a connection stale after 30 s without an answer
RECV_SLICE_S = 0.5
REFRESH_S = 2.0  # the watched set is re-read this often
HEARTBEAT_S = 5.0
HEALTHY_S = 10.0  # a session this long resets the backoff
QUIET_S = 3.0  # a REST check waits this long at most for the stream to reach REST's time
# REST's timestamp and the stream's are not one clock: a server sends the changes of a
# moment in a frame stamped a little later. A REST book equal to this book at any moment
# within SKEW_MS of its own timestamp agrees with it.
SKEW_MS = 250
LADDER_S = 1.0  # the groups whose ladder is due are looked for this often
LADDER_GRACE_MS = 1_500  # ... once their last delay is this far behind
EMPTY_AFTER_MS = 10_000  # a group with no rung this long after detection is given up
LATE_DETECT_S = 3600.0  # a group detected longer than this after its fill gets no ladder
REST_RUNG_TOLERANCE_MS = 200  # a REST rung is within this of its delay, or not taken
REST_RUNG_WAIT_MS = 1_000  # +0's REST read waits this long for the live book first
REST_RUNGS_PER_TICK = 4  # REST rung reads per call at most (a burst is spread, or late)
REST_RUNG_PLAN_MAX = 10_000  # planned REST rung reads at most (more are dropped, counted)
SERVE_FRESH_S = 5.0  # a live book is served only while the stream sent a frame this recently
ONE_MS = timedelta(milliseconds=1)
FILLS_OVERLAP = timedelta(seconds=30)  # < the history: a fill planned is remembered that long
DB_ERRORS = (psycopg.Error, db.DatabaseUnavailable)
MAX_FRAME = 2**22  # 4 MiB: an initial dump of many books is large, a frame larger is not a book

_WANTED = """
SELECT asset_id, max(detect_time) AS last_fill FROM trade_event
WHERE detect_time > %(since)s GROUP BY asset_id
ORDER BY last_fill DESC LIMIT %(n)s
"""


def millis(t: datetime) -> int:
    return int(t.timestamp() * 1000)


class Watcher:
    """The books and the subscription; `handle` takes one frame. I/O is the caller's
    (`run`), except the REST reads, through `fetch` (asset id → (raw, book) | None)."""

    def __init__(
        self,
        s: settings_mod.Settings,
        fetch: Callable[[str], tuple[dict[str, Any], clob.OrderBook] | wire.Reject | None],
        clock: Callable[[], datetime] = jobs.utcnow,
    ) -> None:
        self.s, self.fetch, self.clock = s, fetch, clock
        self.books: dict[str, live_book.LiveBook] = {}
        self.meta: dict[str, dict[str, Any]] = {}  # asset → min_order_size, neg_risk (hash)
        self.wanted: set[str] = set()
        self.subscribed: set[str] = set()
        self.counts: Counter[str] = Counter()
        self.rejects: list[wire.Reject] = []
        self._checked: dict[str, float] = {}  # asset → when REST was last read (monotonic)
        # asset → (REST book's time, its levels, when fetched): compared once reached
        self._pending: dict[str, tuple[int, live_book.Levels, float]] = {}
        # the ladder's REST fallback: (due ms, asset, delay ms) reads planned, and the
        # books they read (asset → [(REST book's ms, compact levels)], oldest first)
        self._rest_plan: list[tuple[int, str, int]] = []
        self._planned: dict[tuple[str, int], int] = {}  # (asset, fill ms) → planned at
        self.rest_books: dict[str, deque[tuple[int, live_book.Levels]]] = {}
        # the live books served to the simulator (BookServer) are read by another thread:
        # every change to the books is made holding this lock, and every read there
        self.lock = threading.RLock()
        self.frame_at = 0.0  # when the stream last sent a frame (monotonic; 0: never)

    # -- the watched set --------------------------------------------------------------------
    def want(self, assets: set[str]) -> tuple[set[str], set[str]]:
        """Sets the assets to watch; returns (to subscribe, to unsubscribe)."""
        self.wanted = assets
        add, drop = assets - self.subscribed, self.subscribed - assets
        for a in set(self.books) - assets:
            del self.books[a]
            self.meta.pop(a, None)
            self._checked.pop(a, None)
            self._pending.pop(a, None)
        for a in assets:
            if a not in self.books:
                self.books[a] = self._book(a)
        return add, drop

    def _book(self, asset: str) -> live_book.LiveBook:
        return live_book.LiveBook(asset, keep_ms=int(self.s.watch_books_history_s * 1000))

    def connected(self) -> None:
        """A new connection: every book waits for its fresh snapshot."""
        for b in self.books.values():
            b.reset()
        self.subscribed = set()

    def disconnected(self) -> None:
        """The connection dropped: no book is known from its last event on (until the
        next connection's snapshots), so no ladder reads the stale levels as live."""
        for b in self.books.values():
            b.reset()

    def live(self, asset: str) -> bool:
        book = self.books.get(asset)
        return book is not None and book.synced

    # -- the ladder's REST fallback ---------------------------------------------------------
    def plan_rest(self, asset: str, fill_ms: int, now_ms: int) -> int:
        """Plans a REST read at each ladder moment of a fill that is still ahead (or
        within REST_RUNG_TOLERANCE_MS), for when the live book does not hold it then
        (the asset not watched: over OCULUS_WATCH_BOOKS_MAX_ASSETS; not synced; the
        connection down). +0, already past, is read once after detection (after
        REST_RUNG_WAIT_MS, the live book's chance to be there first). Returns how many
        reads were planned; a fill planned before is not planned again."""
        if (asset, fill_ms) in self._planned:
            return 0
        self._planned[(asset, fill_ms)] = now_ms
        n = 0
        for d in self.s.ladder_delays_ms:
            due = now_ms + REST_RUNG_WAIT_MS if d == 0 else fill_ms + d
            if due < now_ms - REST_RUNG_TOLERANCE_MS:
                continue  # already past: the live history, or nothing
            if len(self._rest_plan) >= REST_RUNG_PLAN_MAX:
                self.counts["ladder_rest_dropped"] += 1
                continue
            heapq.heappush(self._rest_plan, (due, asset, d))
            n += 1
        return n

    def next_rest_ms(self) -> int | None:
        return self._rest_plan[0][0] if self._rest_plan else None

    def rest_rungs_due(self, now_ms: int) -> int:
        """Takes the planned REST reads that are due, unless the live book holds the
        moment (synced now): at most REST_RUNGS_PER_TICK a call (one read serves every
        moment of its asset due now); a read later than
        REST_RUNG_TOLERANCE_MS is given up (counted; +0's is never late: it is the first
        book after detection). Returns the reads made."""
        made = 0
        done: set[str] = set()  # one read serves every moment due now of its asset
        while self._rest_plan and self._rest_plan[0][0] <= now_ms:
            due, asset, delay = heapq.heappop(self._rest_plan)
            if self.live(asset):
                continue
            late = delay > 0 and now_ms - due > REST_RUNG_TOLERANCE_MS  # +0: any book after
            if late:
                self.counts["ladder_rest_late"] += 1
                continue
            if asset in done:
                continue
            if made >= REST_RUNGS_PER_TICK:  # the next call's (late by then, or not)
                heapq.heappush(self._rest_plan, (due, asset, delay))
                break
            made += 1
            done.add(asset)
            got = self._fetch(asset)
            if got is None:
                continue
            ob = got[1]
            kept = self.rest_books.setdefault(asset, deque())
            kept.append((millis(ob.book_time), _levels(ob).compact()))
            self.counts["ladder_rest_reads"] += 1
        return made

    def forget_rest(self, now_ms: int) -> None:
        """Forgets the REST books, and the fills planned for, older than the history."""
        keep_ms = int(self.s.watch_books_history_s * 1000)
        for asset, kept in list(self.rest_books.items()):
            while kept and kept[0][0] < now_ms - keep_ms:
                kept.popleft()
            if not kept:
                del self.rest_books[asset]
        for key, at in list(self._planned.items()):
            if at < now_ms - keep_ms:
                del self._planned[key]
        for asset in set(self.meta) | set(self._checked):  # REST reads of unwatched assets
            if asset not in self.books and asset not in self.rest_books:
                self.meta.pop(asset, None)
                self._checked.pop(asset, None)

    def rest_rungs(
        self, asset: str, first_ms: int, detect_ms: int, delays_ms: Iterable[int]
    ) -> list[live_book.Rung]:
        """The REST books read for a group's moments: each delay's within
        REST_RUNG_TOLERANCE_MS of it; +0's the first read after detection."""
        kept = self.rest_books.get(asset, ())
        out = []
        for d in delays_ms:
            if d == 0:
                got = next(((t, lv) for t, lv in kept if t >= detect_ms), None)
            else:
                want = first_ms + d
                near = [(abs(t - want), t, lv) for t, lv in kept]
                best = min(near, key=lambda x: x[0], default=None)
                ok = best is not None and best[0] <= REST_RUNG_TOLERANCE_MS
                got = (best[1], best[2]) if best is not None and ok else None
            if got is not None:
                out.append(live_book.Rung(d, got[0], "REST", got[1]))
        return out

    # -- the live books, served ------------------------------------------------------------
    def serve(self, asset: str) -> dict[str, Any] | None:
        """The asset's live book now in `GET /book`'s format (what `clob.fetch_book`
        reads), with the server's hash; None unless the book is synced, the stream sent
        a frame within SERVE_FRESH_S, and a REST book has told the asset's minimum order
        size (a decision needs it). Called from the server's thread."""
        with self.lock:
            book, meta = self.books.get(asset), self.meta.get(asset)
            fresh = time.monotonic() - self.frame_at <= SERVE_FRESH_S
            if book is None or not book.synced or not fresh or not meta:
                return None
            if meta.get("min_order_size") is None or not meta.get("market"):
                return None
            levels = book.levels()
        now_ms = millis(self.clock())
        out: dict[str, Any] = {
            "market": meta["market"],
            "asset_id": asset,
            "timestamp": str(now_ms),
            "hash": "",
            "bids": [_level(p, n) for p, n in reversed(levels.bids)],  # the server's order
            "asks": [_level(p, n) for p, n in reversed(levels.asks)],
            "min_order_size": meta["min_order_size"],
            "tick_size": meta.get("tick_size"),
            "neg_risk": meta.get("neg_risk"),
            "last_trade_price": "",
        }
        out["hash"] = clob.book_hash(out)
        self.counts["served"] += 1
        return out

    # -- frames -----------------------------------------------------------------------------
    def handle(self, frame: str | bytes) -> None:
        now = self.clock()
        text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
        events, refused = clob.market_events(text)
        self.counts["frames"] += 1
        for reason in refused:
            self.counts["refused"] += 1
            self.rejects.append(wire.Reject("clob/ws/market", reason, text[:2000], {}))
        for raw, msg in events:
            self.counts[msg.event_type] += 1
            asset = getattr(msg, "asset_id", None)
            if isinstance(msg, clob.BookMessage):
                self._on_book(raw, msg, now)
            elif isinstance(msg, clob.PriceChangeMessage):
                self._on_changes(msg, now)
            elif isinstance(msg, clob.MarketResolvedMessage):
                for a in msg.assets_ids:
                    self.wanted.discard(a)
            elif asset is not None and asset not in self.books:
                self.counts["other_assets"] += 1

    def _on_book(self, raw: dict[str, Any], msg: clob.BookMessage, now: datetime) -> None:
        book = self.books.get(msg.asset_id)
        if book is None:
            self.counts["other_assets"] += 1
            return
        meta = self.meta.get(msg.asset_id)
        if meta is not None and msg.hash and clob.book_hash(raw, meta) != msg.hash:
            self.counts["hash_mismatch"] += 1
            log.warning("watch_books: %s: book hash differs; resync from REST", msg.asset_id)
            self.resync(msg.asset_id, "hash")
            return
        ob = msg.normalized()
        if book.synced and (drift := book.levels().differences(_levels(ob))):
            self.counts["snapshot_drift"] += 1
            log.info("watch_books: %s: snapshot moved %d levels from the deltas' book",
                     msg.asset_id, len(drift))  # fmt: skip
        book.snapshot(millis(ob.book_time), list(ob.bids), list(ob.asks))

    def _on_changes(self, msg: clob.PriceChangeMessage, now: datetime) -> None:
        at = millis(msg.timestamp)
        touched: dict[str, clob.PriceChange] = {}
        for c in msg.price_changes:
            book = self.books.get(c.asset_id)
            if book is None:
                continue
            if book.change(at, c.side, c.price, c.size):
                self.counts["changes"] += 1
                touched[c.asset_id] = c  # the last entry carries the book's best after all
            else:
                self.counts["changes_unsynced"] += 1
        for asset, c in touched.items():
            levels = self.books[asset].levels()
            sent = c.model_fields_set  # an older server leaves them out: nothing to check
            if ("best_bid" in sent and c.best_bid != levels.best_bid) or (
                "best_ask" in sent and c.best_ask != levels.best_ask
            ):
                self.counts["best_mismatch"] += 1
                ours = (levels.best_bid, levels.best_ask)
                log.warning("watch_books: %s: best bid/ask %s/%s, ours %s/%s; resync",
                            asset, c.best_bid, c.best_ask, *ours)  # fmt: skip
                self.resync(asset, "best")

    # -- REST -------------------------------------------------------------------------------
    def resync(self, asset: str, why: str) -> bool:
        """Replaces the book with the REST book; False when REST has none or failed."""
        got = self._fetch(asset)
        if got is None:
            return False
        _, ob = got
        book = self.books.get(asset)
        if book is None:
            return False
        book.snapshot(millis(ob.book_time), list(ob.bids), list(ob.asks))
        self.counts[f"resync_{why}"] += 1
        return True

    def _fetch(self, asset: str) -> tuple[dict[str, Any], clob.OrderBook] | None:
        try:
            got = self.fetch(asset)
        except (http.UpstreamError, OSError) as exc:
            self.counts["rest_errors"] += 1
            log.warning("watch_books: %s: REST /book failed: %s", asset, exc)
            return None
        if isinstance(got, wire.Reject):
            self.counts["rest_rejected"] += 1
            self.rejects.append(got)
            return None
        if got is None:
            self.counts["rest_no_book"] += 1
            return None
        raw, ob = got
        self.meta[asset] = {"min_order_size": raw.get("min_order_size"),
                            "neg_risk": raw.get("neg_risk"), "market": ob.market,
                            "tick_size": raw.get("tick_size")}  # fmt: skip
        self._checked[asset] = time.monotonic()
        return raw, ob

    def check_one(self) -> str | None:
        """The REST check, one asset a call: the book due longest is fetched from REST;
        once this book's stream has reached the REST book's timestamp (an event stamped
        at or after it, or QUIET_S without any: a quiet book), the book as it was then is
        compared with it, and a difference resyncs it from a fresh REST book. (Compared
        at once, a REST book a moment ahead of the stream would always differ.) Returns
        the asset fetched or compared."""
        for asset, (t_ms, rest, fetched) in list(self._pending.items()):
            book = self.books.get(asset)
            if book is None or not book.synced:
                del self._pending[asset]
            elif book.updated_ms >= t_ms + SKEW_MS or time.monotonic() - fetched >= QUIET_S:
                del self._pending[asset]
                self._compare(asset, book, t_ms, rest)
                return asset
        due = self.s.watch_books_rest_check_s
        now = time.monotonic()
        waiting = [a for a in self.books if now - self._checked.get(a, 0.0) >= due]
        if not waiting:
            return None
        asset = min(waiting, key=lambda a: self._checked.get(a, 0.0))
        book = self.books[asset]
        self._checked[asset] = now  # its turn is taken, whatever REST answers (a 404 too)
        got = self._fetch(asset)
        if got is None:
            return asset
        _, ob = got
        if not book.synced:
            book.snapshot(millis(ob.book_time), list(ob.bids), list(ob.asks))
            self.counts["rest_seeded"] += 1
            return asset
        self._pending[asset] = (millis(ob.book_time), _levels(ob), time.monotonic())
        return asset

    def _compare(self, asset: str, book: live_book.LiveBook, t_ms: int, rest: Any) -> None:
        """The REST book against this book as it was at REST's timestamp, or at any
        moment it changed within SKEW_MS of it; a book that matches at none resyncs."""
        then = book.at(t_ms)
        self.counts["rest_checks"] += 1
        if then is None:
            return
        diff = then.differences(rest)
        if not diff:
            return
        for near in book.states(t_ms - SKEW_MS, t_ms + SKEW_MS):
            if not near.differences(rest):
                self.counts["rest_skewed"] += 1  # the same book, stamped a little apart
                return
        self.counts["rest_mismatch"] += 1
        log.warning("watch_books: %s: %d levels differ from REST (%s); resync",
                    asset, len(diff), "; ".join(diff[:3]))  # fmt: skip
        self.resync(asset, "rest")

    def info(self) -> dict[str, Any]:
        synced = sum(b.synced for b in self.books.values())
        return {"assets": len(self.books), "synced": synced, **dict(self.counts)}


def _levels(ob: clob.OrderBook) -> live_book.Levels:
    return live_book.Levels(tuple(ob.bids), tuple(ob.asks))


def _level(price: int, size: int) -> dict[str, str]:
    """A level as the CLOB writes it: "0.48", "30.79"."""
    return {"price": money.format_micros(price), "size": money.format_micros(size)}


class BookServer(ThreadingHTTPServer):
    """`GET /book?token_id=…` on loopback: the watcher's live book of a watched asset in
    the CLOB's `/book` format (200), or 404 (not watched, not synced, the stream quiet):
    the simulator's first source of a decision's book (OCULUS_LIVE_BOOKS_URL), before
    REST. Read only; one thread a request."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], watcher: Watcher) -> None:
        self.watcher = watcher
        super().__init__(address, _BookHandler)


class _BookHandler(BaseHTTPRequestHandler):
    server: BookServer
    timeout = 5.0  # a client that sends its request slowly is dropped, not waited on

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        asset = urllib.parse.parse_qs(url.query).get("token_id", [""])[0]
        found = self.server.watcher.serve(asset) if url.path == "/book" and asset else None
        body = json.dumps(found if found is not None else {"error": "no live book"})
        self.send_response(200 if found is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a request a decision: not a log line each


_NEW_FILLS = """
SELECT asset_id, event_time, detect_time FROM trade_event
WHERE detect_time > %(after)s ORDER BY detect_time LIMIT %(n)s
"""


def wanted_assets(conn: db.Conn, s: settings_mod.Settings, now: datetime) -> set[str]:
    since = now - timedelta(seconds=s.watch_books_s)
    rows = conn.execute(_WANTED, {"since": since, "n": s.watch_books_max_assets})
    return {r["asset_id"] for r in rows}


class Runner:
    """The watcher's loop: the database, the WebSocket and the watcher's state."""

    def __init__(self, database_url: str | None, s: settings_mod.Settings, stop: jobs.StopFlag):
        self.database_url, self.s, self.stop = database_url, s, stop
        self.ups = http.make_upstreams(s)
        self.watcher = Watcher(s, lambda a: clob.fetch_book_raw(self.ups.clob, a))
        self.conn: db.Conn | None = None
        self.connected = False
        self._refresh_due = self._beat_due = self._ladder_due = self._check_due = 0.0
        self._fills_after: datetime | None = None  # the newest fill planned for
        self._tried: dict[int, int] = {}  # group id → when its ladder was taken (ms)

    def run(self, deadline: float | None) -> None:
        self.conn = jobs.connect_waiting(self.database_url, self.stop, PROCESS)
        if self.conn is None:
            return
        role = jobs.role(self.conn, PROCESS, self.database_url)
        if not role.wait(lambda: self._done(deadline), self.stop.sleep):
            return
        role.keep()
        server = self._serve()
        try:
            self._loop(deadline)
        finally:
            if server is not None:
                server.shutdown()
                server.server_close()
            role.release()
            self.ups.close()
            self.conn.close()

    def _serve(self) -> BookServer | None:
        """Starts serving the live books (OCULUS_WATCH_BOOKS_SERVE), if set."""
        if not self.s.watch_books_serve:
            return None
        host, _, port = self.s.watch_books_serve.rpartition(":")
        try:
            server = BookServer((host, int(port)), self.watcher)
        except OSError as exc:
            log.warning("watch_books: cannot serve live books on %s: %s",
                        self.s.watch_books_serve, exc)  # fmt: skip
            return None
        threading.Thread(target=server.serve_forever, name="book-server", daemon=True).start()
        log.info("watch_books: serving live books on http://%s/book", self.s.watch_books_serve)
        return server

    def _done(self, deadline: float | None) -> bool:
        return self.stop.stopped or (deadline is not None and time.monotonic() >= deadline)

    def _loop(self, deadline: float | None) -> None:
        attempt = 0
        while not self._done(deadline):
            try:
                self._refresh(None)
            except DB_ERRORS as exc:
                if self.conn is not None and db.lost(self.conn, exc):
                    raise db.DatabaseLost(db.one_line(exc)) from exc
                raise
            if not self.watcher.wanted:
                self._idle(REFRESH_S)
                continue
            began = time.monotonic()
            try:
                with connect(self.s.clob_ws_url, open_timeout=5, close_timeout=1,
                             max_size=MAX_FRAME) as ws:  # fmt: skip
                    self._session(ws, deadline)
            except (OSError, WebSocketException, TimeoutError, *DB_ERRORS) as exc:
                if self.conn is not None and db.lost(self.conn, exc):
                    raise db.DatabaseLost(db.one_line(exc)) from exc
                log.warning("watch_books: connection lost: %s: %s", type(exc).__name__, exc)
            self.connected = False
            with self.watcher.lock:
                self.watcher.disconnected()
            self.watcher.counts["disconnects"] += 1
            attempt = 0 if time.monotonic() - began >= HEALTHY_S else attempt + 1
            if not self._done(deadline):
                self._idle(jobs.backoff_delay(attempt, random.random()))

    def _idle(self, seconds: float) -> None:
        """Waits without a connection, still taking the ladder's REST reads on time."""
        end = time.monotonic() + seconds
        while not self.stop.stopped and (left := end - time.monotonic()) > 0:
            self.stop.sleep(self._slice(left))
            self._ladders()
            self._beat()

    def _slice(self, most: float) -> float:
        """How long to wait for a frame: at most `most`, less when a REST read is due."""
        due = self.watcher.next_rest_ms()
        if due is None:
            return most
        return max(0.0, min(most, (due - millis(jobs.utcnow())) / 1000))

    def _session(self, ws: ClientConnection, deadline: float | None) -> None:
        with self.watcher.lock:
            self.watcher.connected()
        self.connected = True
        assets = sorted(self.watcher.wanted)
        ws.send(json.dumps({"assets_ids": assets, "type": "market",
                            "custom_feature_enabled": False}))  # fmt: skip
        self.watcher.subscribed = set(assets)
        last_frame = ping_at = time.monotonic()
        while not self._done(deadline):
            try:
                frame = ws.recv(timeout=self._slice(RECV_SLICE_S))
            except TimeoutError:
                frame = None
            now = time.monotonic()
            if frame is not None:
                last_frame = self.watcher.frame_at = now
                with self.watcher.lock:
                    self.watcher.handle(frame)
            elif now - last_frame > STALE_S:
                raise TimeoutError(f"no frame for {STALE_S:.0f} s")
            if now - ping_at >= PING_S:
                ws.send("PING")
                ping_at = now
            self._refresh(ws)
            if now >= self._check_due:  # at most one REST read a slice, however busy
                self._check_due = now + RECV_SLICE_S
                with self.watcher.lock:
                    self.watcher.check_one()
            self._ladders()
            self._beat()

    def _refresh(self, ws: ClientConnection | None) -> None:
        if time.monotonic() < self._refresh_due:
            return
        self._refresh_due = time.monotonic() + REFRESH_S
        assert self.conn is not None
        wanted = wanted_assets(self.conn, self.s, jobs.utcnow())
        with self.watcher.lock:
            add, drop = self.watcher.want(wanted)
        if ws is not None and (add or drop):
            if add:
                ws.send(json.dumps({"operation": "subscribe", "assets_ids": sorted(add)}))
            if drop:
                ws.send(json.dumps({"operation": "unsubscribe", "assets_ids": sorted(drop)}))
            self.watcher.subscribed = set(wanted)
            log.info("watch_books: watching %d assets (+%d -%d)", len(wanted), len(add), len(drop))

    def _ladders(self) -> None:
        """Plans the REST fallback's reads for the new fills, takes those due, and takes
        the ladder of each group whose last delay has passed: each delay from the live
        history (+0 just before the fill), else from a REST read near it."""
        assert self.conn is not None
        now = jobs.utcnow()
        with self.watcher.lock:  # a REST rung's read may seed nothing, but takes no chance
            self.watcher.rest_rungs_due(millis(now))
        if time.monotonic() < self._ladder_due:
            return
        self._ladder_due = time.monotonic() + LADDER_S
        self._plan_new_fills(now)
        self.watcher.forget_rest(millis(now))
        delays = self.s.ladder_delays_ms
        history = timedelta(seconds=self.s.watch_books_history_s)
        due = now - timedelta(milliseconds=max(delays) + LADDER_GRACE_MS)
        assets = set(self.watcher.books) | set(self.watcher.rest_books)
        oldest = now - history - timedelta(seconds=LATE_DETECT_S)
        now_ms = millis(now)
        self._tried = {g: t for g, t in self._tried.items() if t > now_ms - 2 * history / ONE_MS}
        for g in ladder.pending(self.conn, assets, now - history, due, oldest, list(self._tried)):
            first, seen = millis(g["window_start"]), millis(g["first_detect_time"])
            book = self.watcher.books.get(g["asset_id"])
            rungs = live_book.ladder(book, first, seen, delays, now_ms) if book else []
            have = {r.delay_ms for r in rungs}
            missing = [d for d in delays if d not in have]
            rungs += self.watcher.rest_rungs(g["asset_id"], first, seen, missing)
            if rungs:
                self.watcher.counts["ladder_rungs"] += ladder.write(self.conn, g["id"], rungs, now)
                self.watcher.counts["ladders"] += 1
            elif now_ms - seen >= EMPTY_AFTER_MS:  # nothing came: not looked at again
                self._tried[g["id"]] = now_ms
                self.watcher.counts["ladders_empty"] += 1

    def _plan_new_fills(self, now: datetime) -> None:
        """Plans the ladder's REST reads for each fill detected since the last call."""
        assert self.conn is not None
        if self._fills_after is None:
            self._fills_after = now - timedelta(seconds=self.s.watch_books_history_s)
        # read again from FILLS_OVERLAP before the newest seen: a fill committed late (the
        # listener's and the poller's transactions interleave) is not passed over; a fill
        # planned already is not planned twice
        after = self._fills_after - FILLS_OVERLAP
        rows = self.conn.execute(_NEW_FILLS, {"after": after, "n": 5000}).fetchall()
        now_ms = millis(now)
        for r in rows:
            self.watcher.plan_rest(r["asset_id"], millis(r["event_time"]), now_ms)
            self._fills_after = max(self._fills_after, r["detect_time"])

    def _beat(self) -> None:
        if time.monotonic() < self._beat_due:
            return
        self._beat_due = time.monotonic() + HEARTBEAT_S
        assert self.conn is not None
        now = jobs.utcnow()
        if self.watcher.rejects:
            quarantine.record(self.conn, self.watcher.rejects, now)
            self.watcher.rejects = []
        jobs.heartbeat(self.conn, PROCESS, now, {"connected": self.connected,
                                                 **self.watcher.info()})  # fmt: skip
        memory.trim()  # the history's churn leaves freed blocks the allocator keeps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m functions.watch_books", description=__doc__)
    p.add_argument("--seconds", type=float, help="stop after this long (default: until SIGTERM)")
    p.add_argument("--database-url", help="default: DATABASE_URL or the embedded server")
    args = p.parse_args(argv)
    s = settings_mod.get()
    jobs.setup_logging(s)
    stop = jobs.StopFlag().install()
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    try:
        Runner(args.database_url, s, stop).run(deadline)
    except (db.DatabaseLost, psycopg.OperationalError, db.DatabaseUnavailable) as exc:
        log.error("watch_books: database connection lost: %s", db.one_line(exc))
        return jobs.EXIT_DB_LOST
    return 0


if __name__ == "__main__":
    sys.exit(main())
