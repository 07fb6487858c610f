"""The chain listener: one persistent WebSocket subscribed to OrderFilled logs whose
order owner is a followed wallet, and to the NegRiskAdapter's PositionsConverted logs
whose stakeholder is one (two subscriptions: the wallet sits in a different topic).
Each fill becomes a trade_event, each conversion an activity_event (source CHAIN), the
moment its frame arrives (that instant is its detect time); a log re-sent with
`removed: true` undoes it (a fill or conversion something was derived from is flagged).

A frame that does not parse or decode is quarantined and the listener goes on. On a
drop it reconnects with capped exponential backoff and jitter; after every reconnect it
asks for a Data API backfill of the last 5 minutes (checkpoint `listen.backfill_request`,
which the poller reads, plus `common.store.polling.backfill` in a background thread when that
exists) and replays its own gap with `eth_getLogs` from the last block it saw.

One listener per database: it holds the elected role `listen` (common.store.leases.Role,
as every job) while it runs. A second copy — on this host or another — stands by and
takes over once the first stops, dies, or its host stops renewing the role
(OCULUS_ROLE_LEASE_S); `--once` exits 75 ("another copy is running") instead. A lost
database connection ends the listener (exit 69, for supervisord to restart it;
common.runtime.jobs); started while the database is down, it waits for it.

    python -m functions.listen            # until SIGTERM
    python -m functions.listen --once     # catch up, listen until quiet for 3 s, exit
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import logging
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import psycopg
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

from common.runtime import clock as clocks
from common.runtime import jobs
from common.runtime import settings as settings_mod
from common.store import budget, checkpoints, db, ingest, quarantine
from common.upstream import chain, wire

log = logging.getLogger(__name__)

PROCESS = "listen"
BACKFILL_REQUEST = checkpoints.BACKFILL_REQUEST
LAST_BLOCK = "listen.last_block"
BACKFILL_WINDOW = timedelta(minutes=5)
HEARTBEAT_S = 5.0
REFRESH_S = 3.0  # how often the followed set is re-read
RECV_SLICE_S = 0.5  # bounds how long a stop signal waits
HEALTHY_S = 10.0  # a session this long resets the backoff
MAX_CATCHUP_BLOCKS = 900  # ~30 min of Polygon blocks; older gaps are the Data API's

# (since, request sequence number) -> None; runs in a background thread.
Backfill = Callable[[datetime, int], None]
DB_ERRORS = (psycopg.Error, db.DatabaseUnavailable)


# --- pure helpers ------------------------------------------------------------------------


def wallet_changes(old: Mapping[str, int], new: Mapping[str, int]) -> tuple[set[str], set[str]]:
    """Returns (wallets added, wallets dropped); either one non-empty means resubscribe."""
    return set(new) - set(old), set(old) - set(new)


def catchup_from(last_seen: int | None, latest: int, most: int = MAX_CATCHUP_BLOCKS) -> int | None:
    """Returns the first block to replay with eth_getLogs (the last one seen, since logs
    after ours in it may be missing), or None when there is nothing to replay."""
    if last_seen is None or last_seen > latest:
        return None
    return max(last_seen, latest - most)


# --- database ----------------------------------------------------------------------------


def load_wallets(conn: db.Conn) -> dict[str, int]:
    """Returns owner wallet -> followed_user_id for enabled users not REMOVED."""
    rows = conn.execute(
        """SELECT w.wallet, w.followed_user_id FROM followed_user_proxy_wallet w
           JOIN followed_user u ON u.id = w.followed_user_id
           WHERE u.enabled AND u.copy_mode <> 'REMOVED'"""
    ).fetchall()
    return {r["wallet"].lower(): int(r["followed_user_id"]) for r in rows}


# --- the listener ------------------------------------------------------------------------


class SubscribeFailed(RuntimeError):
    pass


class Busy(RuntimeError):
    """Another listener holds the lock: one copy per database, like every job."""


class Listener:
    """One listener process's state; `run` loops until the stop flag is set."""

    def __init__(
        self,
        database_url: str | None,
        s: settings_mod.Settings,
        *,
        stop: jobs.StopFlag,
        clock: Callable[[], datetime] = jobs.utcnow,
        backfill: Backfill | None = None,
        refresh_s: float = REFRESH_S,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.database_url, self.s, self.stop, self.clock = database_url, s, stop, clock
        self.backfill, self.refresh_s, self.jitter = backfill, refresh_s, jitter
        self._conn: db.Conn | None = None
        self.wallets: dict[str, int] = {}
        self.subs: dict[str, str] = {}  # filter name -> subscription id ("" if refused)
        self._sub_requests: dict[int, str] = {}  # eth_subscribe request id -> filter name
        self._filters: list[str] = []  # the filters the current wallets need
        self._replays = 0  # eth_getLogs requests of the catch-up not yet answered
        self._replay_failed = False  # one was refused: the gap stays for the next session
        self.connected = False
        self.sessions = self.reconnects = self.attempts = 0  # attempts: connections tried
        self.counts: Counter[str] = Counter()
        self.last_log_at: datetime | None = None
        self.last_block: int | None = None
        self._saved_block: int | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, str] = {}
        self.last_frame = time.monotonic()
        self._beat_due = self._refresh_due = 0.0
        self._backfill_thread: threading.Thread | None = None
        self._gap_from: int | None = None
        self._unreplayed: int | None = None  # a catch-up asked for and not yet answered

    @property
    def sub_id(self) -> str | None:
        """The fills subscription's id once every subscription is answered, else None."""
        if not self._filters or any(name not in self.subs for name in self._filters):
            return None
        return self.subs.get("fills")

    @property
    def conn(self) -> db.Conn:
        """The listener's session; DatabaseLost once it is gone."""
        if self._conn is None:
            self._conn = db.connect(self.database_url, autocommit=True)
        elif self._conn.closed or self._conn.broken:
            raise db.DatabaseLost("the connection is closed")
        return self._conn

    # -- loop ------------------------------------------------------------------------------
    def run(
        self,
        *,
        deadline: float | None = None,
        idle_s: float | None = None,
        wait_for_database: bool = False,
        standby: bool = False,
    ) -> None:
        """Listens (reconnecting the WebSocket as needed) until stopped, past `deadline`
        (monotonic) or quiet for `idle_s`. A database down at start is waited for, or
        raises DatabaseUnavailable; DatabaseLost if the connection is lost later. Another
        listener holding the role `listen` (two would store every log twice over and
        fight over the block checkpoint) raises Busy, or with `standby` is waited for."""
        if wait_for_database and self._conn is None:
            self._conn = jobs.connect_waiting(self.database_url, self.stop, PROCESS)
            if self._conn is None:
                return  # stopped while waiting
        role = jobs.role(self.conn, PROCESS, self.database_url)
        if not role.take():
            if not standby:
                held_by = role.describe()
                self.close()
                raise Busy(f"another copy is running ({held_by})")
            if not role.wait(lambda: self._done(deadline, None), self.stop.sleep):
                self.close()
                return
        role.keep()
        try:
            self._listen(deadline, idle_s)
        finally:
            role.release()
            self.close()

    def _listen(self, deadline: float | None, idle_s: float | None) -> None:
        """`run` once the role is held."""
        started = self.clock()
        if n := jobs.abandon_dead_runs(self.conn, started, PROCESS):
            log.warning("listen: %d earlier runs whose process is gone marked FAILED", n)
        run_id = jobs.record_start(self.conn, PROCESS, started, "loop")
        stored = checkpoints.read(self.conn, LAST_BLOCK)
        self.last_block = self._saved_block = stored["cursor_int"] if stored else None
        self.last_frame = time.monotonic()
        attempt = 0
        while not self._done(deadline, idle_s):
            began = time.monotonic()
            self.attempts += 1
            try:
                with connect(
                    self.s.chain_ws_url, open_timeout=5, close_timeout=1, max_size=2**24
                ) as ws:
                    self._session(ws, deadline, idle_s)
            except db.DatabaseLost:
                self.close()
                raise
            except (OSError, WebSocketException, SubscribeFailed, *DB_ERRORS) as exc:
                if self._conn is not None and db.lost(self._conn, exc):
                    self.close()
                    raise db.DatabaseLost(db.one_line(exc)) from exc
                log.warning("listen: connection lost: %s: %s", type(exc).__name__, exc)
            except Exception:
                log.exception("listen: session failed")
            self._set_connected(False)
            attempt = 0 if time.monotonic() - began >= HEALTHY_S else attempt + 1
            if not self._done(deadline, idle_s):
                delay = jobs.backoff_delay(attempt, self.jitter())
                if deadline is not None:
                    delay = max(0.0, min(delay, deadline - time.monotonic()))
                self.stop.sleep(delay)
        try:
            self._save_block(self.clock())
            jobs.record_end(self.conn, run_id, self.clock(), "OK", self.counts["logs"], self.counts)
        except DB_ERRORS as exc:
            log.warning("listen: could not record the end of the run: %s", exc)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _done(self, deadline: float | None, idle_s: float | None) -> bool:
        now = time.monotonic()
        return (
            self.stop.stopped
            or (deadline is not None and now >= deadline)
            or (idle_s is not None and now - self.last_frame >= idle_s)
        )

    def _session(self, ws: ClientConnection, deadline: float | None, idle_s: float | None) -> None:
        self.sessions += 1
        self.wallets, self._pending = {}, {}
        self.subs, self._sub_requests, self._filters, self._replays = {}, {}, [], 0
        self._replay_failed = False
        self._set_connected(True)
        now = self.clock()
        if self.sessions > 1:
            self.reconnects += 1
            self._request_backfill(now)
        # The gap to replay starts at the last block seen before this session: logs the
        # new subscription delivers must not move it before eth_getLogs is answered.
        if self._unreplayed is None:
            self._unreplayed = self.last_block
        self._gap_from = self._unreplayed
        self._refresh(ws)
        self._send(ws, "eth_blockNumber", [], "blockNumber")
        while not self._done(deadline, idle_s):
            try:
                frame = ws.recv(timeout=RECV_SLICE_S)
            except TimeoutError:
                frame = None
            if frame is not None:
                self.last_frame = time.monotonic()
                self.handle(frame, self.clock(), ws)
            if time.monotonic() >= self._refresh_due:
                self._refresh(ws)
            if time.monotonic() >= self._beat_due:
                self._beat(self.clock())

    def _send(self, ws: ClientConnection, method: str, params: list[Any], kind: str) -> int:
        rid = next(self._ids)
        self._pending[rid] = kind
        ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}))
        return rid

    def _refresh(self, ws: ClientConnection) -> None:
        """Re-reads the followed set; resubscribes (every filter) when its wallets changed."""
        self._refresh_due = time.monotonic() + self.refresh_s
        new = load_wallets(self.conn)
        added, dropped = wallet_changes(self.wallets, new)
        self.wallets = new
        asked = set(self.subs) | set(self._sub_requests.values())
        settled = not new or all(name in asked for name in self._filters)
        if not (added or dropped) and settled:
            return
        for sub in self.subs.values():
            if sub:
                self._send(ws, "eth_unsubscribe", [sub], "unsubscribe")
        self.subs, self._sub_requests = {}, {}
        filters = chain.log_filters(sorted(new), self.s) if new else {}
        self._filters = list(filters)  # none for no wallet: an empty topic matches all
        for name, spec in filters.items():
            rid = next(self._ids)
            self._pending[rid] = "subscribe"
            self._sub_requests[rid] = name
            ws.send(chain.subscribe_request(rid, sorted(new), self.s, spec))
        log.info("listen: subscribing to %d wallets (+%d -%d)", len(new), len(added), len(dropped))
        self._beat(self.clock())

    # -- frames ----------------------------------------------------------------------------
    def handle(self, frame: str | bytes, now: datetime, ws: ClientConnection | None = None) -> None:
        """Processes one WebSocket frame received at `now`."""
        message = chain.parse_message(frame)
        if isinstance(message, wire.Reject):
            self._quarantine(message, now)
        elif isinstance(message, chain.RpcReply):
            self._reply(message, now, ws)
        else:
            text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
            self._store(message.log, text, "chain/ws", now)

    def _store(self, item: chain.ChainLog, raw: str, source: str, now: datetime) -> None:
        """Decodes one log (an OrderFilled, or a PositionsConverted), stores it when its
        owner is followed; a log that does not decode or store is quarantined."""
        context = {"tx": item.transaction_hash, "log_index": item.log_index}
        conversion = chain.is_conversion(item, self.s)
        event: chain.ChainFill | chain.ChainConversion
        try:
            if conversion:
                event = chain.decode_positions_converted(item, self.s)
            else:
                event = chain.decode_order_filled(item, self.s)
        except chain.DecodeError as exc:
            self._quarantine(wire.Reject(source, str(exc), raw, context), now)
            return
        user = self.wallets.get(event.owner)
        if user is None:
            self.counts["ignored"] += 1
            return
        try:
            if isinstance(event, chain.ChainConversion):
                action = (
                    f"conversion_{ingest.store_chain_conversion(self.conn, event, user, now, raw)}"
                )
            else:
                action = ingest.store_chain_fill(self.conn, event, user, now)
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            self._quarantine(wire.Reject(source, f"not stored: {exc}", raw, context), now)
            return
        self.counts["logs"] += 1
        self.counts["conversions"] += int(conversion)
        self.counts[action] += 1
        self.last_log_at = now
        if not event.removed:
            self.last_block = max(self.last_block or 0, event.block_number)

    def _quarantine(self, reject: wire.Reject, now: datetime) -> None:
        quarantine.record(self.conn, [reject], now)
        self.counts["quarantined"] += 1

    def _reply(self, reply: chain.RpcReply, now: datetime, ws: ClientConnection | None) -> None:
        kind = self._pending.pop(reply.id, None) if isinstance(reply.id, int) else None
        name = self._sub_requests.pop(reply.id, None) if kind == "subscribe" else None
        if reply.error is not None:
            if name == "fills":
                raise SubscribeFailed(f"eth_subscribe refused: {reply.error}")
            if name is not None:  # conversions refused: fills go on, the status says so
                self.subs[name] = ""
                self.counts[f"{name}_refused"] += 1
            if kind == "getLogs":  # answered, but the gap is not replayed: kept for later
                self._replay_failed = True
                self._replayed()
            log.warning("listen: %s %s failed: %s", kind or "request", name or "", reply.error)
        elif kind == "subscribe" and ws is not None:
            if name is not None:
                self.subs[name] = str(reply.result)
                self._beat(now)
            else:  # an answer to a subscription we already replaced
                self._send(ws, "eth_unsubscribe", [reply.result], "unsubscribe")
        elif kind == "blockNumber" and ws is not None and isinstance(reply.result, str):
            latest = int(reply.result, 16)
            if self.last_block is None:  # nothing seen yet: a later gap starts here
                self.last_block = latest
                self._save_block(now)
            start = catchup_from(self._gap_from, latest)
            if start is not None and self.wallets:
                span = {"fromBlock": hex(start), "toBlock": reply.result}
                for spec in chain.log_filters(sorted(self.wallets), self.s).values():
                    self._send(ws, "eth_getLogs", [{**spec, **span}], "getLogs")
                    self._replays += 1
            else:
                self._unreplayed = None
        elif kind == "getLogs" and not isinstance(reply.result, list):
            log.warning("listen: eth_getLogs answered %s, not a list", type(reply.result).__name__)
            self._replay_failed = True
            self._replayed()
        elif kind == "getLogs" and isinstance(reply.result, list):
            for raw in reply.result:
                parsed = wire.parse_one(chain.ChainLog, raw, "chain/getLogs")
                if isinstance(parsed, wire.Reject):
                    self._quarantine(parsed, now)
                else:
                    self._store(parsed, wire.dump_payload(raw), "chain/getLogs", now)
            log.info("listen: replayed %d logs with eth_getLogs", len(reply.result))
            self._replayed()

    def _replayed(self) -> None:
        """One catch-up answer is in; the gap is closed once every filter's is."""
        self._replays = max(0, self._replays - 1)
        if not self._replays and not self._replay_failed:
            self._unreplayed = None

    # -- bookkeeping -----------------------------------------------------------------------
    def _set_connected(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected = connected
            if not connected:
                self.subs, self._sub_requests = {}, {}
            try:
                self._beat(self.clock())
            except DB_ERRORS as exc:
                log.warning("listen: heartbeat failed: %s", exc)

    def _beat(self, now: datetime) -> None:
        self._beat_due = time.monotonic() + HEARTBEAT_S
        jobs.heartbeat(self.conn, PROCESS, now, self.info())
        self._save_block(now)

    def info(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "subscription": self.sub_id,
            "conversions_subscribed": bool(self.subs.get("conversions")),
            "wallets": len(self.wallets),
            "logs": self.counts["logs"],
            "conversions": self.counts["conversions"],
            "last_log_at": self.last_log_at.isoformat() if self.last_log_at else None,
            "reconnects": self.reconnects,
            "ignored": self.counts["ignored"],
            "quarantined": self.counts["quarantined"],
            "last_block": self.last_block,
        }

    def _save_block(self, now: datetime) -> None:
        block = self.last_block
        if block is not None and self._unreplayed is not None:
            block = min(block, self._unreplayed)  # not past a gap still being replayed
        if block is not None and block != self._saved_block:
            checkpoints.advance(self.conn, LAST_BLOCK, now, number=block)
            self._saved_block = block

    def _request_backfill(self, now: datetime) -> None:
        since = now - BACKFILL_WINDOW
        seq = checkpoints.request_backfill(self.conn, since, now)
        busy = self._backfill_thread is not None and self._backfill_thread.is_alive()
        if self.backfill is not None and not busy:
            self._backfill_thread = threading.Thread(
                target=self.backfill, args=(since, seq), name="listen-backfill", daemon=True
            )
            self._backfill_thread.start()


def poll_backfill(
    database_url: str | None,
    s: settings_mod.Settings,
    delay_s: float,
    stop: jobs.StopFlag,
    clock: Callable[[], datetime] = jobs.utcnow,
) -> Backfill | None:
    """Returns a hook running `common.store.polling.backfill` after `delay_s` (so the Data API
    has indexed the gap), or None when the poller does not offer one."""
    try:
        poll = importlib.import_module("common.store.polling")
    except ModuleNotFoundError:
        return None
    except Exception:  # a broken poller must not keep the listener down
        log.exception("listen: common.store.polling does not import; backfill requests only")
        return None
    backfill = getattr(poll, "backfill", None)
    if not callable(backfill):
        return None

    def run(since: datetime, seq: int) -> None:
        stop.sleep(delay_s)
        if stop.stopped:
            return
        try:
            with (
                db.connect(database_url, autocommit=True) as conn,
                budget.make_upstreams(s, database_url) as ups,
            ):
                count = backfill(conn, ups, since, clock())
                checkpoints.clear_backfill(conn, seq)
            log.info("listen: backfilled %s items since %s", count, since.isoformat())
        except Exception:
            log.exception("listen: backfill failed; the poller has the request")

    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m functions.listen",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--once", action="store_true", help="exit when quiet (default: run forever)")
    p.add_argument("--seconds", type=float, help="exit after this many seconds")
    p.add_argument("--idle-seconds", type=float, default=3.0, help="quiet time that ends --once")
    p.add_argument("--backfill-delay", type=float, default=10.0, help="seconds before backfill")
    p.add_argument("--database-url", help="default: DATABASE_URL or the embedded server")
    args = p.parse_args(argv)
    s = settings_mod.get()
    jobs.setup_logging(s)
    stop = jobs.StopFlag().install()
    source = clocks.configured(s.clock_url)  # OCULUS_CLOCK_URL, as every job
    hook = poll_backfill(args.database_url, s, args.backfill_delay, stop, source.now)
    listener = Listener(args.database_url, s, stop=stop, backfill=hook, clock=source.now)
    deadline = time.monotonic() + args.seconds if args.seconds else None
    try:
        listener.run(
            deadline=deadline,
            idle_s=args.idle_seconds if args.once else None,
            wait_for_database=not args.once,
            standby=not args.once,
        )
    except db.DatabaseUnavailable as exc:
        log.error("listen: database unavailable: %s", exc)
        return 1
    except db.DatabaseLost as exc:
        return jobs.lost_exit("listen", exc)
    except Busy as exc:
        log.warning("listen: %s; not started", exc)
        return jobs.EXIT_BUSY
    log.info("listen: done %s", dict(listener.counts))
    return 0 if listener.sessions or not args.once else 1


if __name__ == "__main__":
    sys.exit(main())
