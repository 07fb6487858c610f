"""The book watcher's state (functions/watch_books.Watcher): snapshots and deltas from
market-channel frames, each check (the book's hash, the best bid/ask a delta states, the
REST book at its own timestamp) and the resync each failure triggers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from common.domain import live_book
from common.runtime import jobs, settings
from common.store import db, ladder, users
from common.upstream import clob, wire
from functions import watch_books

MARKET = "0x" + "ab" * 32
ASSET = "123"
T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
MS = int(T0.timestamp() * 1000)


def raw_book(bids: list[tuple[str, str]], asks: list[tuple[str, str]], ms: int) -> dict[str, Any]:
    """A book as the server sends it: bids ascending, asks descending (best last)."""
    book = {
        "market": MARKET,
        "asset_id": ASSET,
        "timestamp": str(ms),
        "hash": "",
        "bids": [{"price": p, "size": s} for p, s in bids],
        "asks": [{"price": p, "size": s} for p, s in asks],
        "min_order_size": "5",
        "tick_size": "0.01",
        "neg_risk": False,
        "last_trade_price": "0.50",
    }
    book["hash"] = clob.book_hash(book)
    return book


def ws_book(rest: dict[str, Any]) -> dict[str, Any]:
    """The market channel's `book` for the same moment: no min_order_size nor neg_risk."""
    msg = {k: v for k, v in rest.items() if k not in ("min_order_size", "neg_risk")}
    return {**msg, "event_type": "book"}


def change(side: str, price: str, size: str, ms: int, best: tuple[str, str]) -> dict[str, Any]:
    return {
        "event_type": "price_change",
        "market": MARKET,
        "timestamp": str(ms),
        "price_changes": [{"asset_id": ASSET, "price": price, "size": size, "side": side,
                           "hash": "x", "best_bid": best[0], "best_ask": best[1]}],
    }  # fmt: skip


class Rest:
    def __init__(self, book: dict[str, Any]) -> None:
        self.book, self.calls = book, 0

    def __call__(self, asset: str) -> tuple[dict[str, Any], clob.OrderBook] | wire.Reject | None:
        self.calls += 1
        parsed = clob.BookPayload.model_validate(self.book)
        return self.book, parsed.normalized()


def watcher(rest: Rest, check_s: float = 60.0) -> watch_books.Watcher:
    s = settings.Settings(watch_books_rest_check_s=check_s)
    w = watch_books.Watcher(s, rest, clock=lambda: T0)
    assert w.want({ASSET}) == ({ASSET}, set())
    return w


BIDS = [("0.48", "100"), ("0.49", "50")]
ASKS = [("0.52", "70"), ("0.51", "30")]


def test_a_snapshot_then_deltas_keep_the_book() -> None:
    rest = Rest(raw_book(BIDS, ASKS, MS))
    w = watcher(rest)
    w.handle(json.dumps([ws_book(rest.book)]))  # the first dump comes as an array
    assert w.books[ASSET].levels().best_bid == 490_000
    w.handle(json.dumps(change("BUY", "0.50", "10", MS + 5, ("0.50", "0.51"))))
    w.handle(json.dumps(change("SELL", "0.51", "0", MS + 6, ("0.50", "0.52"))))
    levels = w.books[ASSET].levels()
    assert (levels.best_bid, levels.best_ask) == (500_000, 520_000)
    assert w.counts["best_mismatch"] == 0 and rest.calls == 0
    assert w.books[ASSET].at(MS + 5).best_ask == 510_000  # type: ignore[union-attr]


def test_a_book_whose_hash_is_wrong_is_resynced_from_rest() -> None:
    rest = Rest(raw_book(BIDS, ASKS, MS))
    w = watcher(rest)
    w.check_one()  # the first REST read seeds the book and learns min_order_size/neg_risk
    assert rest.calls == 1 and w.counts["rest_seeded"] == 1
    good = ws_book(rest.book)
    w.handle(json.dumps(good))
    assert w.counts["hash_mismatch"] == 0
    bad = {**good, "bids": [{"price": "0.49", "size": "51"}]}  # not what its hash says
    w.handle(json.dumps(bad))
    assert w.counts["hash_mismatch"] == 1 and w.counts["resync_hash"] == 1
    assert w.books[ASSET].levels().bids == ((490_000, 50_000_000), (480_000, 100_000_000))


def test_a_delta_whose_stated_best_differs_resyncs() -> None:
    rest = Rest(raw_book(BIDS, ASKS, MS))
    w = watcher(rest)
    w.handle(json.dumps(ws_book(rest.book)))
    w.handle(json.dumps(change("BUY", "0.47", "5", MS + 5, ("0.50", "0.51"))))  # we say 0.49
    assert w.counts["best_mismatch"] == 1 and w.counts["resync_best"] == 1
    assert w.books[ASSET].levels().best_bid == 490_000  # REST's
    w.handle(json.dumps(change("SELL", "0.51", "0", MS + 9, ("0.49", "0.52"))))
    w.handle(json.dumps(change("SELL", "0.52", "0", MS + 9, ("0.49", ""))))
    assert w.counts["best_mismatch"] == 1  # "" is an empty side, as ours
    assert w.books[ASSET].levels().asks == ()


def test_rest_compares_with_the_book_as_it_was_at_its_timestamp() -> None:
    rest = Rest(raw_book(BIDS, ASKS, MS))
    w = watcher(rest, check_s=5)
    w.handle(json.dumps(ws_book(rest.book)))
    w._checked[ASSET] = 0.0
    # a delta after REST's moment: not a difference, the REST book is older
    w.handle(json.dumps(change("BUY", "0.50", "10", MS + 300, ("0.50", "0.51"))))
    assert w.check_one() == ASSET  # fetched; the stream is past its time (+ skew) already
    assert w.check_one() == ASSET  # compared
    assert w.counts["rest_checks"] == 1 and w.counts["rest_mismatch"] == 0
    # REST says 0.48 holds 99 at MS + 60, where we have 100: a drift, but the stream has
    # not reached MS + 60 (and the skew after it) yet: the comparison waits for it
    rest.book = raw_book([("0.48", "99"), ("0.49", "50"), ("0.50", "10")], ASKS, MS + 60)
    w._checked[ASSET] = 0.0
    w.check_one()
    assert w.check_one() is None and w.counts["rest_checks"] == 1
    w.handle(json.dumps(change("SELL", "0.52", "70", MS + 61, ("0.50", "0.51"))))
    assert w.check_one() is None  # MS + 61: not past the skew yet
    w.handle(json.dumps(change("SELL", "0.52", "70", MS + 60 + watch_books.SKEW_MS,
                               ("0.50", "0.51"))))  # fmt: skip
    assert w.check_one() == ASSET
    assert w.counts["rest_mismatch"] == 1 and w.counts["resync_rest"] == 1
    assert dict(w.books[ASSET].levels().bids)[480_000] == 99_000_000  # a fresh REST book
    assert w.check_one() is None  # not due again for 5 s


def test_a_rest_book_stamped_a_little_before_the_streams_change_agrees() -> None:
    """The server sends a moment's changes in a frame stamped a little later: a REST book
    read between the change and its frame equals the book at the frame's stamp."""
    rest = Rest(raw_book(BIDS, ASKS, MS))
    w = watcher(rest, check_s=5)
    w.handle(json.dumps(ws_book(rest.book)))
    w._checked[ASSET] = 0.0
    rest.book = raw_book([("0.48", "100"), ("0.49", "50"), ("0.50", "10")], ASKS, MS + 100)
    w.check_one()  # fetched: REST has 0.50 at MS + 100 ...
    w.handle(json.dumps(change("BUY", "0.50", "10", MS + 120, ("0.50", "0.51"))))  # ... we at +120
    w.handle(json.dumps(change("BUY", "0.47", "5", MS + 600, ("0.50", "0.51"))))
    assert w.check_one() == ASSET
    assert w.counts["rest_checks"] == 1 and w.counts["rest_skewed"] == 1
    assert w.counts["rest_mismatch"] == 0 and w.counts["resync_rest"] == 0


def test_a_rest_book_equal_to_the_book_a_little_before_its_stamp_agrees() -> None:
    rest = Rest(raw_book(BIDS, ASKS, MS))
    w = watcher(rest, check_s=5)
    w.handle(json.dumps(ws_book(rest.book)))
    w.handle(json.dumps(change("BUY", "0.50", "10", MS + 100, ("0.50", "0.51"))))
    w._checked[ASSET] = 0.0
    rest.book = raw_book(BIDS, ASKS, MS + 250)  # as we had it before the change at +100
    w.check_one()
    w.handle(json.dumps(change("BUY", "0.47", "5", MS + 600, ("0.50", "0.51"))))
    assert w.check_one() == ASSET
    assert w.counts["rest_skewed"] == 1 and w.counts["rest_mismatch"] == 0


def test_reconnect_forgets_levels_until_the_next_snapshot() -> None:
    rest = Rest(raw_book(BIDS, ASKS, MS))
    w = watcher(rest)
    w.handle(json.dumps(ws_book(rest.book)))
    w.connected()
    assert not w.books[ASSET].synced and w.subscribed == set()
    w.handle(json.dumps(change("BUY", "0.50", "10", MS + 5, ("0.50", "0.51"))))
    assert w.counts["changes_unsynced"] == 1 and w.books[ASSET].levels().bids == ()
    assert w.want(set()) == (set(), set()) and ASSET not in w.books  # nothing subscribed


def test_frames_that_do_not_parse_are_kept_for_quarantine() -> None:
    w = watcher(Rest(raw_book(BIDS, ASKS, MS)))
    w.handle("{oops")
    w.handle(json.dumps({"event_type": "book", "asset_id": ASSET}))
    assert w.counts["refused"] == 2 and len(w.rejects) == 2
    assert w.rejects[0].reason.startswith("not JSON")
    w.handle("PONG")
    assert w.counts["refused"] == 2


def test_a_due_group_gets_its_ladder_once(conn: db.Conn) -> None:
    uid = users.add(conn, "0x" + "cd" * 20, "lead", [], T0)
    fill = T0 - timedelta(seconds=70)
    gid = conn.execute(
        """INSERT INTO copy_group (group_key, followed_user_id, action, asset_id, window_start,
                                   window_end, first_detect_time, close_time)
           VALUES ('k1', %(u)s, 'BUY', %(a)s, %(t)s, %(t)s, %(d)s, %(d)s) RETURNING id""",
        {"u": uid, "a": ASSET, "t": fill, "d": fill + timedelta(seconds=1)},
    ).fetchone()["id"]  # type: ignore[index]
    book = live_book.LiveBook(ASSET)
    book.snapshot(MS - 100_000, [(480_000, 5)], [(520_000, 5)])
    book.change(MS - 65_000, live_book.BUY, 490_000, 7)  # 5 s after the fill
    since, due = T0 - timedelta(seconds=120), T0 - timedelta(seconds=61)
    (g,) = ladder.pending(conn, [ASSET], since, due)
    assert g["id"] == gid and ladder.pending(conn, ["999"], since, due) == []
    rungs = live_book.ladder(book, MS - 70_000, MS - 69_000, (0, 2_000, 10_000, 60_000), MS)
    assert ladder.write(conn, gid, rungs, T0) == 4
    assert ladder.write(conn, gid, rungs, T0) == 0  # never twice
    rows = conn.execute(
        "SELECT delay_ms, source, best_bid_micros, bids FROM book_ladder ORDER BY delay_ms"
    ).fetchall()
    assert [(r["delay_ms"], r["best_bid_micros"]) for r in rows] == [
        (0, 480_000), (2_000, 480_000), (10_000, 490_000), (60_000, 490_000),
    ]  # fmt: skip
    assert rows[2]["bids"] == [[490_000, 7], [480_000, 5]] and rows[0]["source"] == "LIVE"
    assert ladder.pending(conn, [ASSET], since, due) == []


class Clock:
    """A manual clock that REST reads too: the REST book is stamped with its time."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.ms / 1000, UTC)


class StampedRest(Rest):
    def __init__(self, clock: Clock) -> None:
        super().__init__(raw_book(BIDS, ASKS, clock.ms))
        self.clock = clock

    def __call__(self, asset: str) -> tuple[dict[str, Any], clob.OrderBook] | wire.Reject | None:
        self.book = raw_book(BIDS, [("0.52", "70"), ("0.51", str(30 + self.calls))], self.clock.ms)
        return super().__call__(asset)


def rest_watcher(clock: Clock, assets: set[str]) -> tuple[watch_books.Watcher, StampedRest]:
    rest = StampedRest(clock)
    w = watch_books.Watcher(settings.Settings(), rest, clock=clock.now)
    w.want(assets)
    return w, rest


def test_the_rest_fallback_takes_each_delay_within_200_ms_on_a_manual_clock() -> None:
    fill = MS
    clock = Clock(fill + 350)  # detected 350 ms after the fill; the asset is not watched
    w, rest = rest_watcher(clock, set())
    assert w.plan_rest(ASSET, fill, clock.ms) == 6  # +0 (after detection) and +2 … +60 s
    assert w.plan_rest(ASSET, fill, clock.ms) == 0  # a fill is planned once
    while clock.ms < fill + 61_000:  # the runner's slices: it wakes at the next due read
        nxt = w.next_rest_ms()
        clock.ms = min(clock.ms + 500, nxt if nxt is not None else clock.ms + 500)
        w.rest_rungs_due(clock.ms)
    assert rest.calls == 6 and w.counts["ladder_rest_reads"] == 6
    rungs = w.rest_rungs(ASSET, fill, fill + 350, settings.Settings().ladder_delays_ms)
    assert [r.delay_ms for r in rungs] == [0, 2_000, 5_000, 10_000, 30_000, 60_000]
    assert {r.source for r in rungs} == {"REST"}
    assert rungs[0].at_ms >= fill + 350  # +0: the first book after detection
    for r in rungs[1:]:
        assert abs(r.at_ms - (fill + r.delay_ms)) <= 200, r
    assert rungs[-1].levels.asks[0] == (510_000, 35_000_000)  # the sixth read's book


def test_a_rest_read_later_than_200_ms_is_given_up_and_live_books_need_none() -> None:
    fill = MS
    clock = Clock(fill + 100)
    w, rest = rest_watcher(clock, set())
    w.plan_rest(ASSET, fill, clock.ms)
    clock.ms = fill + 2_201  # the +2 s read is 201 ms late (the +0 one is on time)
    w.rest_rungs_due(clock.ms)
    assert rest.calls == 1 and w.counts["ladder_rest_late"] == 1
    assert [r.delay_ms for r in w.rest_rungs(ASSET, fill, fill + 100, (0, 2_000))] == [0]
    # a watched, synced book: its live history holds every moment, REST is not read
    w2, rest2 = rest_watcher(Clock(fill + 100), {ASSET})
    w2.handle(json.dumps(ws_book(raw_book(BIDS, ASKS, fill - 5_000))))
    w2.plan_rest(ASSET, fill, fill + 100)
    for t in range(fill, fill + 61_000, 100):
        w2.rest_rungs_due(t)
    assert rest2.calls == 0 and w2.counts["ladder_rest_reads"] == 0


def test_a_dropped_connection_leaves_no_stale_book_for_the_ladder() -> None:
    w = watcher(Rest(raw_book(BIDS, ASKS, MS)))
    w.handle(json.dumps(ws_book(raw_book(BIDS, ASKS, MS - 10_000))))
    w.handle(json.dumps(change("BUY", "0.49", "20", MS - 5_000, ("0.49", "0.51"))))
    w.disconnected()  # the deltas after this are missed: nothing after it is known
    book = w.books[ASSET]
    assert book.reaches(MS - 6_000, MS + 5_000)
    assert not book.reaches(MS - 1_000, MS + 5_000) and not w.live(ASSET)
    rungs = live_book.ladder(book, MS - 7_000, MS - 6_900, (0, 2_000, 5_000), MS + 5_000)
    assert [r.delay_ms for r in rungs] == [0, 2_000]  # +5 s fell in the drop: left out


def test_a_group_detected_late_is_still_pending_and_tried_groups_are_not(conn: db.Conn) -> None:
    uid = users.add(conn, "0x" + "ce" * 20, "late", [], T0)
    fill = T0 - timedelta(minutes=50)  # its fill, found 49 minutes late (the Data API)
    gid = conn.execute(
        """INSERT INTO copy_group (group_key, followed_user_id, action, asset_id, window_start,
                                   window_end, first_detect_time, close_time)
           VALUES ('k2', %(u)s, 'SELL', %(a)s, %(t)s, %(t)s, %(d)s, %(d)s) RETURNING id""",
        {"u": uid, "a": ASSET, "t": fill, "d": T0 - timedelta(seconds=70)},
    ).fetchone()["id"]  # type: ignore[index]
    since, due = T0 - timedelta(seconds=120), T0 - timedelta(seconds=61)
    assert ladder.pending(conn, [ASSET], since, due) == []  # its fill is before `since`
    oldest = since - timedelta(hours=1)
    assert [g["id"] for g in ladder.pending(conn, [ASSET], since, due, oldest)] == [gid]
    assert ladder.pending(conn, [ASSET], since, due, oldest, tried=[gid]) == []


def _trade(conn: db.Conn, uid: int, asset: str, t: datetime, seen: datetime) -> None:
    conn.execute(
        """INSERT INTO trade_event (source, source_id, followed_user_id, wallet, asset_id,
               side, price_micros, share_micros, usdc_notional_micros, event_time, detect_time)
           VALUES ('DATA_API', %(s)s, %(u)s, %(w)s, %(a)s, 'BUY', 500000, 1000000, 500000,
                   %(t)s, %(d)s)""",
        {"s": f"t-{asset}", "u": uid, "w": "0x" + "cf" * 20, "a": asset, "t": t, "d": seen},
    )


def test_a_fill_committed_after_a_newer_one_is_still_planned(conn: db.Conn) -> None:
    now = datetime.now(tz=UTC)
    uid = users.add(conn, "0x" + "cf" * 20, "late-commit", [], now - timedelta(hours=1))
    runner = watch_books.Runner(None, settings.Settings(), jobs.StopFlag())
    runner.conn = conn
    _trade(conn, uid, "102", now - timedelta(seconds=3), now - timedelta(seconds=1))
    runner._plan_new_fills(now)
    # the listener's transaction commits after the poller's newer one was read
    _trade(conn, uid, "101", now - timedelta(seconds=4), now - timedelta(seconds=2))
    runner._plan_new_fills(now + timedelta(seconds=1))
    planned = {asset for asset, _ in runner.watcher._planned}
    assert planned == {"101", "102"}
    runner._plan_new_fills(now + timedelta(seconds=2))  # read again: planned once each
    assert len(runner.watcher._planned) == 2
    runner.ups.close()
