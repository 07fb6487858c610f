"""functions.listen_rtds against the sandbox's RTDS (`/rtds`, real format, each fill sent
at match time, the chain log 2 s later): fills detected before the block and merged with
the chain log into one event; faults (repeats, fills that never settle, broken frames);
a dropped or silent connection reconnects."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from common.runtime import clock as clocks
from common.runtime import jobs, settings
from common.store import db
from functions import listen, listen_rtds, reconcile
from sandbox import testing

ANCHOR = 1_790_000_000_000
OPTIONS: dict[str, Any] = {
    "clock": "manual",
    "anchor_ms": ANCHOR,
    "duration": "2h",
    "history": "20m",
    "leaders": 6,
}


def follow_all(conn: db.Conn, wallets: list[str]) -> None:
    for wallet in wallets:
        row = conn.execute(
            """INSERT INTO followed_user (label, profile_wallet, enabled, followed_at)
               VALUES (%(l)s, %(w)s, true, now()) RETURNING id""",
            {"l": "leader " + wallet[:8], "w": wallet},
        ).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO followed_user_proxy_wallet (followed_user_id, wallet)"
            " VALUES (%(u)s, %(w)s)",
            {"u": row["id"], "w": wallet},
        )


def wait_for(what: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


@contextlib.contextmanager
def running(target: Callable[[], None], stop: jobs.StopFlag) -> Iterator[None]:
    failures: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
        assert thread.is_alive(), failures
    finally:
        stop.stopped = True
        thread.join(5)
    assert not thread.is_alive()
    assert not failures, failures


@contextlib.contextmanager
def listeners(
    db_url: str, sb: testing.RunningSandbox, *, chain: bool = True, **rtds_settings: Any
) -> Iterator[listen_rtds.Listener]:
    """The RTDS listener (and the chain listener), both on the sandbox's clock."""
    s = settings.get().model_copy(
        update={"rtds_ws_url": sb.rtds_ws_url, "chain_ws_url": sb.chain_ws_url, **rtds_settings}
    )
    source = clocks.sandbox(sb.control_url)
    clock = source.now
    stop, chain_stop = jobs.StopFlag(), jobs.StopFlag()
    rt = listen_rtds.Listener(db_url, s, stop=stop, clock=clock)
    with contextlib.ExitStack() as stack:
        stack.callback(source.close)  # last: once both listeners have stopped
        stack.enter_context(running(rt.run, stop))
        wait_for(lambda: rt.connected)
        if chain:
            ch = listen.Listener(db_url, s, stop=chain_stop, clock=clock, refresh_s=0.3)
            stack.enter_context(running(ch.run, chain_stop))
            wait_for(lambda: ch.sub_id is not None)
        yield rt


def step(sb: testing.RunningSandbox, seconds: int, step_ms: int = 1000) -> int:
    """Moves the sandbox clock in `step_ms` steps (the chain delay is 2 s: each fill's
    RTDS message is out at least a step before its log)."""
    now = sb.now_ms()
    for _ in range(seconds * 1000 // step_ms):
        now = sb.advance(step_ms)
        time.sleep(0.04)
    time.sleep(1.0)
    return now


def truth_fills(sb: testing.RunningSandbox, after: int, until: int) -> Counter[tuple]:
    """The leaders' fills matched in (after, until]: a multiset (identical fills of one
    transaction are two)."""
    return Counter(
        (e["tx_hash"], e["asset"], e["side"], e["shares_micros"])
        for e in sb.truth(until)["events"]
        if e["type"] == "TRADE" and after < e["t_ms"] <= until
    )


EVENTS = """SELECT tx_hash, asset_id, side, share_micros, source, detect_time, log_index,
                   rtds_seen_at, chain_seen_at, reorg_state
            FROM trade_event ORDER BY id"""


def test_fills_are_detected_at_match_time_and_confirmed_by_their_log(
    db_url: str, conn: db.Conn
) -> None:
    with testing.running_sandbox(seed=7, **OPTIONS) as sb:
        follow_all(conn, sb.leaders)
        start = sb.now_ms()
        with listeners(db_url, sb):
            end = step(sb, 150)
            wait_for(lambda: conn.execute(EVENTS).fetchall(), 5)
            time.sleep(1.0)
        want = truth_fills(sb, start, end - 2_000)
    rows = conn.execute(EVENTS).fetchall()
    assert want.total() >= 5, "the window holds too few fills to say anything"
    got = Counter((r["tx_hash"], r["asset_id"], r["side"], r["share_micros"]) for r in rows)
    assert got == want  # every fill, each one event
    for e in rows:
        assert e["source"] == "RTDS" and e["log_index"] is not None  # confirmed by its log
        assert e["detect_time"] == e["rtds_seen_at"] < e["chain_seen_at"]
        # RTDS saw it within a step of the match; the chain two seconds later
        lag = (e["chain_seen_at"] - e["rtds_seen_at"]).total_seconds()
        assert 1.0 <= lag <= 3.5, lag


def test_repeats_phantoms_and_broken_frames(db_url: str, conn: db.Conn) -> None:
    faults = {"rtds_phantom_rate": 1.0, "rtds_duplicate_rate": 0.5, "rtds_malformed_rate": 0.5}
    with testing.running_sandbox(seed=7, **OPTIONS, **faults) as sb:
        follow_all(conn, sb.leaders)
        start = sb.now_ms()
        with listeners(db_url, sb) as rt:
            end = step(sb, 120)
            time.sleep(1.0)
            counts = sb.state()["counts"]
        want = truth_fills(sb, start, end - 2_000)
        truth_txs = {k[0] for k in truth_fills(sb, 0, end + 10**7)}
    assert counts["rtds_phantoms"] >= 3 and counts["rtds_malformed"] >= 3
    assert rt.counts["quarantined"] >= counts["rtds_malformed"]
    q = conn.execute("SELECT count(*) AS n FROM quarantine WHERE source = 'rtds/ws'").fetchone()
    assert q is not None and q["n"] >= 1
    # Nothing settled the phantoms and the repeats: reconcile flags them, and what is
    # left is exactly the fills that happened.
    latest = conn.execute("SELECT max(rtds_seen_at) AS t FROM trade_event").fetchone()
    assert latest is not None
    grace = timedelta(seconds=300)
    flagged = reconcile.flag_unsettled(conn, latest["t"] + grace + timedelta(seconds=1), grace)
    assert flagged >= counts["rtds_phantoms"]
    live = Counter(
        (r["tx_hash"], r["asset_id"], r["side"], r["share_micros"])
        for r in conn.execute(EVENTS).fetchall()
        if r["reorg_state"] is None
    )
    assert live == want
    unsettled = conn.execute(
        "SELECT tx_hash, log_index FROM trade_event WHERE reorg_state = 'UNSETTLED'"
    ).fetchall()
    assert all(r["log_index"] is None for r in unsettled)
    phantoms = [r for r in unsettled if r["tx_hash"] not in truth_txs]
    assert len(phantoms) >= counts["rtds_phantoms"] - 1  # the last may be past `end`


def test_a_dropped_or_silent_connection_reconnects(db_url: str, conn: db.Conn) -> None:
    with testing.running_sandbox(seed=7, **OPTIONS) as sb:
        follow_all(conn, sb.leaders)
        with listeners(db_url, sb, chain=False, rtds_stale_s=7.0) as rt:
            assert sb.drop_ws() >= 1
            wait_for(lambda: rt.reconnects >= 1 and rt.connected)
            step(sb, 40)
            fills = rt.counts["fills_insert"]
            assert fills >= 1  # detected after the reconnect
            # The feed lapses: the socket answers PINGs but sends no trade.
            sb.set_faults(rtds_silent=1)
            before = rt.reconnects
            for _ in range(8):  # real seconds, the clock moving: trades due but not sent
                sb.advance(1000)
                time.sleep(0.5)
            wait_for(lambda: rt.counts["stale"] >= 1 and rt.reconnects > before, 15)
            assert rt.counts["pongs"] >= 1  # PING every 5 s, answered, and still stale
            sb.set_faults(rtds_silent=0)
            step(sb, 40)
            assert rt.counts["fills_insert"] > fills
    beat = conn.execute(
        "SELECT info FROM process_heartbeat WHERE process = 'listen_rtds'"
    ).fetchone()
    assert beat is not None and beat["info"]["reconnects"] >= 2


def test_off_unless_its_url_is_set(monkeypatch: Any) -> None:
    monkeypatch.setenv("OCULUS_RTDS_WS_URL", "")
    monkeypatch.setattr(listen_rtds, "OFF_EXIT_AFTER_S", 0.01)
    settings.get.cache_clear()
    try:
        assert listen_rtds.main([]) == 0
    finally:
        settings.get.cache_clear()
