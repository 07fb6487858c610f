"""The book watcher against the sandbox's market channel: its books, rebuilt from a
snapshot and the deltas after it, equal the sandbox's REST /book at random moments of a
manual clock; after the connection drops, the resync leaves no stale level."""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from common.runtime import settings
from common.upstream import clob, http
from functions import watch_books
from sandbox import testing

pytestmark = pytest.mark.sandbox
ANCHOR = 1_790_000_000_000
OPTIONS = {"clock": "manual", "anchor_ms": ANCHOR, "duration": "2h", "history": "20m"}


def open_assets(sb: testing.RunningSandbox, n: int) -> list[str]:
    markets = [m for m in sb.scenario()["markets"] if m["end_ms"] > 3_600_000]  # open 1 h
    tokens = [t for m in markets for t in m["tokens"]][:n]
    assert len(tokens) == n
    return tokens


def rest(sb: testing.RunningSandbox, asset: str) -> clob.OrderBook:
    r = httpx.get(sb.clob_url + "/book", params={"token_id": asset}, timeout=10)
    r.raise_for_status()
    return clob.BookPayload.model_validate(r.json()).normalized()


def pump(ws: ClientConnection, w: watch_books.Watcher) -> None:
    """Feeds the watcher everything the server sent up to its clock (PING is a barrier)."""
    ws.send("PING")
    while True:
        frame = ws.recv(timeout=10)
        if frame == "PONG":
            return
        w.handle(frame)


@contextlib.contextmanager
def watcher(sb: testing.RunningSandbox, assets: list[str]) -> Iterator[watch_books.Watcher]:
    s = settings.Settings(clob_url=sb.clob_url)
    with http.make_upstreams(s) as ups:
        w = watch_books.Watcher(s, lambda a: clob.fetch_book_raw(ups.clob, a))
        w.want(set(assets))
        for _ in assets:  # the REST book's min_order_size and neg_risk check each hash
            w.check_one()
        yield w


@contextlib.contextmanager
def subscribe(sb: testing.RunningSandbox, w: watch_books.Watcher) -> Iterator[ClientConnection]:
    with connect(sb.market_ws_url, open_timeout=5) as ws:
        w.connected()
        ws.send(json.dumps({"assets_ids": sorted(w.wanted), "type": "market",
                            "custom_feature_enabled": False}))  # fmt: skip
        w.subscribed = set(w.wanted)
        yield ws


def same_as_rest(sb: testing.RunningSandbox, w: watch_books.Watcher, assets: list[str]) -> None:
    for a in assets:
        ob = rest(sb, a)
        mine = w.books[a].levels()
        assert mine.differences(watch_books._levels(ob)) == [], a


def test_snapshot_and_deltas_equal_the_rest_book_at_random_moments() -> None:
    rng = random.Random(20)
    with testing.running_sandbox(seed=7, **OPTIONS) as sb:
        assets = open_assets(sb, 6)
        with watcher(sb, assets) as w, subscribe(sb, w) as ws:
            pump(ws, w)
            for _ in range(25):
                sb.advance(rng.choice([1, 300, 1_000, 2_500, 9_000]))
                pump(ws, w)
                same_as_rest(sb, w, assets)
        counts: dict[str, Any] = dict(w.counts)
        assert counts.get("price_change", 0) > 20 and counts.get("book", 0) >= len(assets)
        assert counts.get("hash_mismatch", 0) == 0 and counts.get("best_mismatch", 0) == 0
        assert not counts.get("refused")


def test_after_a_drop_the_resync_leaves_no_stale_level() -> None:
    with testing.running_sandbox(seed=7, **OPTIONS) as sb:
        assets = open_assets(sb, 4)
        with watcher(sb, assets) as w:
            with subscribe(sb, w) as ws:
                pump(ws, w)
                sb.advance(2_000)
                pump(ws, w)
                sb.drop_ws()  # the server drops us
                with pytest.raises(ConnectionClosed):
                    while True:
                        w.handle(ws.recv(timeout=5))
            sb.advance(30_000)  # every change of these 30 s is missed
            with subscribe(sb, w) as ws:  # a reconnect: levels forgotten, fresh snapshots
                assert not any(b.synced for b in w.books.values())
                pump(ws, w)
                same_as_rest(sb, w, assets)
                sb.advance(1_500)
                pump(ws, w)
                same_as_rest(sb, w, assets)
            assert w.counts["book"] >= 2 * len(assets)


def test_a_corrupted_delta_is_caught_and_resynced() -> None:
    with testing.running_sandbox(seed=7, **OPTIONS) as sb:
        assets = open_assets(sb, 4)
        with watcher(sb, assets) as w, subscribe(sb, w) as ws:
            pump(ws, w)
            sb.set_faults(market_ws_corrupt_rate=1.0)
            sb.advance(1_000)
            pump(ws, w)
            sb.set_faults(market_ws_corrupt_rate=0.0)
            drifted = [a for a in assets if w.books[a].levels().differences(
                watch_books._levels(rest(sb, a)))]  # fmt: skip
            assert drifted  # a size raised with the true hash and best prices kept
            for a in assets:  # the REST checks, each when due (here: now) ...
                w._checked[a] = 0.0
                w.check_one()
            sb.advance(1_000)  # ... compared once the stream has passed REST's moment
            pump(ws, w)
            while w.check_one() is not None:
                pass
            # (a later delta may have healed a drifted level: it carries the level's total)
            assert w.counts["rest_mismatch"] + w.counts["resync_best"] > 0
            same_as_rest(sb, w, assets)
