"""The RTDS listener (SPEC §12, detection before the block): Polymarket's real-time data
service streams every matched trade, naming its wallet, before it settles on chain
(OCULUS_RTDS_WS_URL, topic activity/trades; docs/research/market_channel_and_rtds.md §1).
Off unless that URL is set: the topic is undocumented and lapses at times, so it is a
best-effort third source and the chain and the Data API stay the sources of truth.

- **Filter**: the stream is global; a trade is kept when its `proxyWallet` (any case) is
  a followed wallet's. Each fill comes once per side: only the followed wallet's side
  is its fill, and a trade between two followed wallets is a fill of each.
- **One event**: each kept trade goes to `common.store.rtds.store_rtds_fill`: a new
  trade_event (source RTDS, detected now) that the chain log and the Data API row
  confirm later, or the RTDS sighting of an event one of them stored first.
  Fills it reports that never settle are flagged UNSETTLED by reconcile.
- **Refused**: a frame or message that does not parse (bad JSON, wrong types, missing
  fields, a flood of messages in one frame) is quarantined with its reason (bounded per
  minute by the quarantine) and the listener goes on; a frame past 1 MiB is refused by
  the socket (the connection closes and is reopened).
- **Connection**: text `PING` every PING_S (the server answers `PONG`); no frame at all
  for SILENT_S, or no trade of any wallet for OCULUS_RTDS_STALE_S (the feed lapses while
  answering pings), and it reconnects; reconnects back off (jobs.backoff_delay). RTDS
  has no replay: what it missed meanwhile the chain and the Data API still report.

One copy per database (the elected role `listen_rtds`); a heartbeat row every
HEARTBEAT_S; a lost database connection ends it (exit 69, for supervisord to restart).

    python -m functions.listen_rtds            # until SIGTERM (off: exits 0 after 3 s)
    python -m functions.listen_rtds --seconds 30
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

from common.runtime import clock as clocks
from common.runtime import jobs
from common.runtime import settings as settings_mod
from common.store import db, quarantine, users
from common.store import rtds as rtds_store
from common.upstream import rtds, wire

log = logging.getLogger(__name__)

PROCESS = "listen_rtds"
PING_S = 5.0  # the official client's interval
SILENT_S = 15.0  # no frame at all (not even PONG) this long: the socket is dead
HEARTBEAT_S = 5.0
REFRESH_S = 3.0  # the followed wallets are re-read this often
RECV_SLICE_S = 0.25  # bounds how long a stop signal waits
HEALTHY_S = 10.0  # a session this long resets the backoff
DB_ERRORS = (psycopg.Error, db.DatabaseUnavailable)
OFF_EXIT_AFTER_S = 3.0  # off: exit 0 after this long (supervisord.conf startsecs = 2)


class Listener:
    """One RTDS listener's state; `run` loops until the stop flag is set."""

    def __init__(
        self,
        database_url: str | None,
        s: settings_mod.Settings,
        *,
        stop: jobs.StopFlag,
        clock: Callable[[], datetime] = jobs.utcnow,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.database_url, self.s, self.stop, self.clock = database_url, s, stop, clock
        self.jitter = jitter
        self.conn: db.Conn | None = None
        self.wallets: dict[str, int] = {}
        self.connected = False
        self.sessions = self.reconnects = 0
        self.counts: Counter[str] = Counter()
        self.last_trade_at: datetime | None = None
        self._beat_due = self._refresh_due = 0.0

    def run(self, deadline: float | None = None) -> None:
        """Listens until stopped or past `deadline` (monotonic). Waits for the database
        and for the role; DatabaseLost if the connection is lost later."""
        self.conn = jobs.connect_waiting(self.database_url, self.stop, PROCESS)
        if self.conn is None:
            return
        try:
            role = jobs.role(self.conn, PROCESS, self.database_url)
            if not role.wait(lambda: self._done(deadline), self.stop.sleep):
                return
            role.keep()
            try:
                self._loop(deadline)
            finally:
                role.release()
        finally:
            self.conn.close()

    def _done(self, deadline: float | None) -> bool:
        return self.stop.stopped or (deadline is not None and time.monotonic() >= deadline)

    def _loop(self, deadline: float | None) -> None:
        attempt = 0
        while not self._done(deadline):
            began = time.monotonic()
            try:
                with connect(
                    self.s.rtds_ws_url,
                    open_timeout=5,
                    close_timeout=1,
                    max_size=rtds.MAX_FRAME_BYTES,
                ) as ws:
                    self._session(ws, deadline)
            except (OSError, WebSocketException, TimeoutError, *DB_ERRORS) as exc:
                if self.conn is not None and db.lost(self.conn, exc):
                    raise db.DatabaseLost(db.one_line(exc)) from exc
                log.warning("listen_rtds: connection lost: %s: %s", type(exc).__name__, exc)
            self._set_connected(False)
            attempt = 0 if time.monotonic() - began >= HEALTHY_S else attempt + 1
            if not self._done(deadline):
                delay = jobs.backoff_delay(attempt, self.jitter())
                if deadline is not None:
                    delay = max(0.0, min(delay, deadline - time.monotonic()))
                self.stop.sleep(delay)

    def _session(self, ws: ClientConnection, deadline: float | None) -> None:
        self.sessions += 1
        self.reconnects += int(self.sessions > 1)
        ws.send(rtds.SUBSCRIBE)
        self._set_connected(True)
        last_frame = last_trade = ping_at = time.monotonic()
        while not self._done(deadline):
            try:
                frame = ws.recv(timeout=RECV_SLICE_S)
            except TimeoutError:
                frame = None
            now = time.monotonic()
            if frame is not None:
                last_frame = now
                if self.handle(frame, self.clock()):
                    last_trade = now
            elif now - last_frame > SILENT_S:
                raise TimeoutError(f"no frame (not even PONG) for {SILENT_S:.0f} s")
            if now - last_trade > self.s.rtds_stale_s:
                self.counts["stale"] += 1
                raise TimeoutError(f"no trade for {self.s.rtds_stale_s:.0f} s: the feed lapsed")
            if now - ping_at >= PING_S:
                ws.send(rtds.PING)
                ping_at = now
            self._refresh()
            self._beat()

    def handle(self, data: str | bytes, now: datetime) -> bool:
        """Processes one frame received at `now`; returns whether it held a trade."""
        try:
            frame = rtds.parse_frame(data)
        except Exception as exc:  # parse_frame refuses what it cannot read; never fatal
            assert self.conn is not None
            why = f"frame not read: {type(exc).__name__}: {str(exc)[:200]}"
            text = data if isinstance(data, str) else data.decode("utf-8", "replace")
            quarantine.record(self.conn, [wire.Reject(rtds.SOURCE, why, text[:4_000])], now)
            self.counts["quarantined"] += 1
            return False
        self.counts["frames"] += 1
        self.counts["pongs"] += int(frame.pong)
        self.counts["trades"] += len(frame.trades)
        assert self.conn is not None
        if frame.rejects:
            quarantine.record(self.conn, frame.rejects, now)
            self.counts["quarantined"] += len(frame.rejects)
        self._refresh()
        for trade, payload, user in rtds.followed(frame, self.wallets):
            fill = rtds_store.fill_from_trade(trade, user, now, payload)
            try:
                action = rtds_store.store_rtds_fill(self.conn, fill)
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                why = f"not stored: {db.one_line(exc)}"
                reject = wire.Reject(rtds.SOURCE, why, wire.dump_payload(payload))
                quarantine.record(self.conn, [reject], now)
                self.counts["quarantined"] += 1
                continue
            self.counts[f"fills_{action}"] += 1
            self.last_trade_at = now
        return bool(frame.trades)

    def _refresh(self) -> None:
        if time.monotonic() < self._refresh_due:
            return
        self._refresh_due = time.monotonic() + REFRESH_S
        assert self.conn is not None
        self.wallets = users.followed_wallets(self.conn)

    def _set_connected(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected = connected
            self._beat_due = 0.0
            try:
                self._beat()
            except DB_ERRORS as exc:
                if self.conn is not None and db.lost(self.conn, exc):
                    raise db.DatabaseLost(db.one_line(exc)) from exc
                log.warning("listen_rtds: heartbeat failed: %s", exc)

    def _beat(self) -> None:
        if time.monotonic() < self._beat_due:
            return
        self._beat_due = time.monotonic() + HEARTBEAT_S
        assert self.conn is not None
        jobs.heartbeat(self.conn, PROCESS, self.clock(), self.info())

    def info(self) -> dict[str, Any]:
        c = self.counts
        return {
            "connected": self.connected,
            "wallets": len(self.wallets),
            "trades": c["trades"],  # every wallet's, as the stream is global
            "fills": c["fills_insert"] + c["fills_confirm"],
            "fills_first": c["fills_insert"],  # events RTDS saw before the chain and the API
            "duplicates": c["fills_duplicate"],
            "quarantined": c["quarantined"],
            "stale": c["stale"],
            "reconnects": self.reconnects,
            "last_trade_at": self.last_trade_at.isoformat() if self.last_trade_at else None,
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m functions.listen_rtds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seconds", type=float, help="stop after this long (default: until SIGTERM)")
    p.add_argument("--database-url", help="default: DATABASE_URL or the embedded server")
    args = p.parse_args(argv)
    s = settings_mod.get()
    jobs.setup_logging(s)
    if not s.rtds_ws_url:
        log.info("listen_rtds: OCULUS_RTDS_WS_URL is not set: RTDS is off")
        time.sleep(OFF_EXIT_AFTER_S)  # past supervisord's startsecs: a good start, not a crash
        return 0
    stop = jobs.StopFlag().install()
    source = clocks.configured(s.clock_url)  # OCULUS_CLOCK_URL, as every job
    listener = Listener(args.database_url, s, stop=stop, clock=source.now)
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    try:
        listener.run(deadline)
    except (db.DatabaseLost, psycopg.OperationalError, db.DatabaseUnavailable) as exc:
        return jobs.lost_exit(PROCESS, exc)
    log.info("listen_rtds: done %s", dict(listener.counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
