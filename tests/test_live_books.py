"""The book watcher's live books as a decision's book (SPEC §12): served by the watcher
on loopback in the CLOB's `/book` format with the server's hash, only while synced and
fresh; read by the simulator first (a failure of any kind falls back to REST), and each
stored book records which source it came from."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from test_simulate import ASSET as SIM_ASSET
from test_simulate import at, fill, setup
from test_watch_books import ASKS, ASSET, BIDS, MS, T0, Rest, raw_book, ws_book

from common.runtime import settings
from common.store import db, groups
from common.upstream import clob
from functions import simulate, watch_books


@pytest.fixture
def served() -> Iterator[tuple[watch_books.Watcher, clob.LiveBooks]]:
    w = watch_books.Watcher(settings.Settings(), Rest(raw_book(BIDS, ASKS, MS)), clock=lambda: T0)
    w.want({ASSET})
    w.handle(json.dumps(ws_book(raw_book(BIDS, ASKS, MS - 1_000))))
    w.frame_at = time.monotonic()
    server = watch_books.BookServer(("127.0.0.1", 0), w)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    live = clob.LiveBooks(f"http://127.0.0.1:{server.server_address[1]}", timeout_s=2.0)
    try:
        yield w, live
    finally:
        live.close()
        server.shutdown()
        server.server_close()


def test_the_watcher_serves_a_synced_fresh_book_in_the_clobs_format(
    served: tuple[watch_books.Watcher, clob.LiveBooks],
) -> None:
    w, live = served
    assert live.fetch(ASSET) is None  # no REST book has told its minimum order size yet
    assert w.check_one() == ASSET  # the REST check reads it (and the market, tick size)
    got = live.fetch(ASSET)
    assert got is not None
    levels = w.books[ASSET].levels()
    assert got.bids == levels.bids and got.asks == levels.asks
    assert got.book_time == T0 and got.min_order_size == 5_000_000 and got.market
    raw = w.serve(ASSET)
    assert raw is not None and raw["hash"] == clob.book_hash(raw) == got.hash
    assert raw["bids"][-1] == {"price": "0.49", "size": "50"}  # the server's order: best last
    assert live.fetch("999") is None  # not watched: 404
    w.frame_at = time.monotonic() - watch_books.SERVE_FRESH_S - 1
    assert live.fetch(ASSET) is None  # the stream is quiet: not served
    w.frame_at = time.monotonic()
    w.disconnected()
    assert live.fetch(ASSET) is None  # not synced
    assert w.counts["served"] == 2


def test_the_live_books_client_never_passes_on_a_bad_answer() -> None:
    def answer(body: Any, status: int = 200) -> clob.LiveBooks:
        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(status, content=body)

        return clob.LiveBooks("http://live", transport=httpx.MockTransport(handler))

    good = json.dumps(raw_book(BIDS, ASKS, MS)).encode()
    assert answer(good).fetch(ASSET) is not None
    assert answer(good).fetch("777") is None  # another asset's book
    assert answer(b"{not json").fetch(ASSET) is None
    assert answer(b'{"market": 1}').fetch(ASSET) is None
    assert answer(good, 503).fetch(ASSET) is None
    assert answer(b"x" * (2**22 + 1)).fetch(ASSET) is None
    refused = clob.LiveBooks("http://127.0.0.1:9", timeout_s=0.2)  # nothing listens there
    assert refused.fetch(ASSET) is None


class _Live:
    def __init__(self, book: clob.OrderBook | None) -> None:
        self.book, self.calls = book, 0

    def fetch(self, token_id: str) -> clob.OrderBook | None:
        self.calls += 1
        return self.book


class _Ups:
    clob = None


def _book(asset: str, best_ask: int) -> clob.OrderBook:
    return clob.OrderBook(asset, "0x" + "ab" * 32, at(59_000), "h" + str(best_ask),
                          ((490_000, 900_000_000),), ((best_ask, 900_000_000),),
                          min_order_size=5_000_000)  # fmt: skip


def test_the_simulator_decides_on_the_live_book_and_records_its_source(
    conn: db.Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    u1, _ = setup(conn)
    fill(conn, u1, 0, 5_000, 100)
    fill(conn, u1, 30_000, 35_000, 100)
    groups.step(conn, at(60_000))
    rest_calls: list[str] = []

    def rest(upstream: Any, token_id: str) -> clob.OrderBook:
        rest_calls.append(token_id)
        return _book(token_id, 510_000)

    monkeypatch.setattr(clob, "fetch_book", rest)
    live = _Live(_book(SIM_ASSET, 500_000))
    ups: Any = _Ups()
    engine = simulate.Engine(conn, lambda: at(60_000), ups=ups, live=live)  # type: ignore[arg-type]
    first, second = simulate.copy_data.closed_groups(conn, 10)[:2]
    got = engine.book_for(first)
    assert got is not None and got.book.asks[0][0] == 500_000 and rest_calls == []
    live.book = None  # the watcher has no book (not watched, not synced, down): REST
    got2 = engine.book_for(second)
    assert got2 is not None and got2.book.asks[0][0] == 510_000 and rest_calls == [SIM_ASSET]
    rows = conn.execute(
        "SELECT source, best FROM (SELECT source, ask_prices_micros[1] AS best, id"
        " FROM order_book_snapshot WHERE fetched_at = %(t)s) x ORDER BY id",
        {"t": at(60_000)},
    ).fetchall()
    assert [(r["source"], r["best"]) for r in rows] == [("LIVE", 500_000), ("REST", 510_000)]
    assert engine.counts.get("book_live") == 1
