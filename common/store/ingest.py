"""Normalizing fills and activity into `trade_event` / `activity_event`, exactly once.

Two sources see the same fill: the chain log (fast, exact amounts, its own identity
tx hash + log index) and the Data API row (slower, no id of its own); a third, RTDS
(before the block, best-effort), merges into the same event (common.store.rtds). Data API rows get
a stable source id from their content — wallet, tx hash, asset, side, shares, price
(micros) and an ordinal among identical rows of one transaction — so a re-poll, a restart or an
overlapping window collides instead of duplicating, and two identical real fills stay
two. Whichever source comes second is matched to the first (same wallet, tx, asset and
side, shares within SHARE_TOLERANCE) and only enriches it.

Every write here runs under the ingest lock of its followed user (`db.lock_ingest`,
transaction-level, which the shadow ledger takes too), so the poller and the listener
never both insert the same fill, and a confirmation never slips between reading and
applying an event; different users' writes go side by side. Matching never crosses
users: it compares wallets, and a wallet belongs to one followed user.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, TypeVar

import psycopg
from psycopg.types.json import Jsonb

from common.domain import ledger, money, records
from common.store import db, quarantine, queries, shadow
from common.upstream import chain, data_api, wire

TRADES = queries.load("trade_event")
ACTIVITY = queries.load("activity_event")

SHARE_TOLERANCE = 10  # micros: the Data API's float sizes may differ from chain amounts


@dataclass(frozen=True)
class ApiFill:
    """A fill as the Data API reports it, ready to store."""

    followed_user_id: int
    wallet: str
    tx_hash: str
    asset_id: str
    condition_id: str
    side: Literal["BUY", "SELL"]
    price_micros: int
    share_micros: int
    event_time: datetime
    ordinal: int = 0
    payload: dict[str, Any] = field(default_factory=dict, compare=False)
    detect_time: datetime | None = field(default=None, compare=False)  # its page arrived

    @property
    def identity(self) -> str:
        """What makes two rows the same fill, but for their ordinal."""
        return (
            f"{self.wallet}:{self.tx_hash}:{self.asset_id}:{self.side}:{self.share_micros}"
            f":{self.price_micros}"
        )

    @property
    def source_id(self) -> str:
        return f"{self.identity}:{self.ordinal}"

    @property
    def notional_micros(self) -> int:
        return money.mul_micros(self.price_micros, self.share_micros)


@dataclass(frozen=True)
class ApiActivity:
    """A SPLIT / MERGE / REDEEM / CONVERSION row of `/activity`."""

    followed_user_id: int
    wallet: str
    activity_type: str
    condition_id: str
    tx_hash: str
    share_micros: int
    usdc_micros: int
    price_micros: int | None
    event_time: datetime
    ordinal: int = 0
    payload: dict[str, Any] = field(default_factory=dict, compare=False)
    detect_time: datetime | None = field(default=None, compare=False)

    @property
    def identity(self) -> str:
        return (
            f"{self.wallet}:{self.tx_hash}:{self.activity_type}:{self.condition_id}"
            f":{self.share_micros}:{self.usdc_micros}"
        )

    @property
    def source_id(self) -> str:
        return f"{self.identity}:{self.ordinal}"


Row = TypeVar("Row", "ApiFill", "ApiActivity")


def with_ordinals(rows: Sequence[Row]) -> list[Row]:
    """Returns the rows with ordinals numbering identical rows (same identity), in the
    order given. Callers pass whole transactions: every row of a tx shares its
    timestamp, so a time window never splits one."""
    seen: Counter[str] = Counter()
    out = []
    for row in rows:
        out.append(replace(row, ordinal=seen[row.identity]))
        seen[row.identity] += 1
    return out


def earliest(a: Row, b: Row) -> Row:
    """Of two sightings of one row, the one seen first (its detect time counts)."""
    if b.detect_time is not None and (a.detect_time is None or b.detect_time < a.detect_time):
        return b
    return a


def _storable(value: Any) -> Any:
    """The payload with NUL characters escaped: jsonb refuses them, and a title with one
    must not keep a real fill out."""
    if isinstance(value, str):
        return value.replace("\x00", "\\u0000")
    if isinstance(value, dict):
        return {k: _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def fill_from_row(
    row: data_api.TradeRow | data_api.ActivityRow,
    followed_user_id: int,
    seen_at: datetime | None = None,
    raw: Any = None,
) -> ApiFill:
    """Returns the ApiFill of a /trades row or a TRADE row of /activity, seen at
    `seen_at` (when its page arrived); its payload is `raw`, the row as received."""
    assert row.asset is not None and row.side is not None and row.price is not None
    return ApiFill(
        followed_user_id=followed_user_id,
        wallet=row.proxy_wallet,
        tx_hash=row.transaction_hash,
        asset_id=row.asset,
        condition_id=row.condition_id,
        side=row.side,
        price_micros=row.price,
        share_micros=row.size,
        event_time=row.timestamp,
        payload=_payload(row, raw),
        detect_time=seen_at,
    )


def _payload(row: Any, raw: Any) -> Any:
    """The row as received (numbers exact, names as the API spelled them), NULs escaped;
    the parsed row when the raw one is not at hand."""
    return _storable(raw if raw is not None else row.model_dump(mode="json", by_alias=False))


def activity_from_row(
    row: data_api.ActivityRow,
    followed_user_id: int,
    seen_at: datetime | None = None,
    raw: Any = None,
) -> ApiActivity:
    return ApiActivity(
        followed_user_id=followed_user_id,
        wallet=row.proxy_wallet,
        activity_type=row.type,
        condition_id=row.condition_id,
        tx_hash=row.transaction_hash,
        share_micros=row.size,
        usdc_micros=row.usdc_size,
        price_micros=row.price,
        event_time=row.timestamp,
        payload=_payload(row, raw),
        detect_time=seen_at,
    )


# --- planning (pure) -------------------------------------------------------------------


@dataclass(frozen=True)
class Existing:
    """The part of a stored trade_event that matching looks at."""

    id: int
    source: str
    wallet: str
    tx_hash: str
    asset_id: str
    side: str
    share_micros: int
    log_index: int | None
    api_source_id: str | None
    reorg_state: str | None
    shadow_applied: bool
    rtds_source_id: str | None = None  # the RTDS trade that reported it (common.store.rtds)


def _close(a: int, b: int) -> bool:
    return abs(a - b) <= SHARE_TOLERANCE


def plan_api_fills(
    fills: Sequence[ApiFill], existing: Sequence[Existing]
) -> tuple[list[tuple[int, ApiFill]], list[ApiFill]]:
    """Returns (events to confirm with an API fill, API fills to insert): an event no
    API row has confirmed yet (a chain log's, or an RTDS trade's) takes the first API
    fill like it. Fills whose source id is already stored are neither."""
    known = {e.api_source_id for e in existing if e.api_source_id}
    free = sorted(
        (e for e in existing if e.api_source_id is None and e.reorg_state is None),
        # logs first, in log order; then events no log has confirmed (RTDS trades)
        key=lambda e: (e.log_index is None, e.log_index or 0, e.id),
    )
    matches: list[tuple[int, ApiFill]] = []
    inserts: list[ApiFill] = []
    for f in fills:
        if f.source_id in known:
            continue
        hit = next(
            (
                e
                for e in free
                if (e.wallet, e.tx_hash, e.asset_id, e.side)
                == (f.wallet, f.tx_hash, f.asset_id, f.side)
                and _close(e.share_micros, f.share_micros)
            ),
            None,
        )
        if hit is None:
            inserts.append(f)
        else:
            free.remove(hit)
            matches.append((hit.id, f))
        known.add(f.source_id)
    return matches, inserts


def beyond_chain(
    inserts: Sequence[ApiFill], existing: Sequence[Existing]
) -> tuple[list[ApiFill], dict[str, tuple[list[ApiFill], int]]]:
    """Splits the API fills to insert (none matched a free chain log) into those the
    chain has no word on, and those it contradicts: their transaction's logs for their
    wallet are stored, and every log like them is taken (pure). A block's logs arrive
    together, so the chain saw every fill of that wallet in that transaction: identical
    rows past its count of them are an upstream repeating itself, not fills.
    Returns (fills to insert, {identity: (the extra rows, how many logs the chain has)})."""
    seen = {
        (e.tx_hash, e.wallet) for e in existing if e.log_index is not None and e.reorg_state is None
    }
    keep: list[ApiFill] = []
    extra: dict[str, tuple[list[ApiFill], int]] = {}
    for f in inserts:
        if (f.tx_hash, f.wallet) not in seen:
            keep.append(f)
            continue
        if f.identity not in extra:
            logs = sum(
                1
                for e in existing
                if e.log_index is not None
                and e.reorg_state is None
                and (e.wallet, e.tx_hash, e.asset_id, e.side)
                == (f.wallet, f.tx_hash, f.asset_id, f.side)
                and _close(e.share_micros, f.share_micros)
            )
            extra[f.identity] = ([], logs)
        extra[f.identity][0].append(f)
    return keep, extra


def duplicate_rejects(extra: dict[str, tuple[list[ApiFill], int]]) -> list[wire.Reject]:
    """One DUPLICATE_ROW reject per repeated row (pure); the same row seen again on the
    next poll is the same quarantine row, counted."""
    out = []
    for rows, logs in extra.values():
        f = rows[0]
        reason = (
            f"DUPLICATE_ROW: {len(rows)} Data API row(s) beyond the chain's {logs} log(s) of tx "
            f"{f.tx_hash} for {f.wallet} ({f.side} {money.format_micros(f.share_micros)} of "
            f"asset {f.asset_id} at {money.format_micros(f.price_micros)}); not stored"
        )
        context = {"user_id": f.followed_user_id, "tx": f.tx_hash, "rows": len(rows), "logs": logs}
        out.append(wire.Reject("data_api/fills", reason, wire.dump_payload(f.payload), context))
    return out


ChainAction = Literal["insert", "confirm", "duplicate", "restore", "remove", "flag", "ignore"]


def plan_chain_fill(
    fill: chain.ChainFill, existing: Sequence[Existing]
) -> tuple[ChainAction, Existing | None]:
    """Decides what one chain log does to the stored events of its transaction."""
    same_log = next(
        (e for e in existing if e.log_index == fill.log_index and e.tx_hash == fill.tx_hash), None
    )
    if fill.removed:
        if same_log is None or same_log.reorg_state is not None:
            return "ignore", same_log
        derived = same_log.shadow_applied or same_log.api_source_id is not None
        return ("flag" if derived else "remove"), same_log
    if same_log is not None:
        return ("restore" if same_log.reorg_state == "REMOVED" else "duplicate"), same_log
    api_only = next(
        (
            e
            for e in sorted(existing, key=lambda e: e.id)
            if e.log_index is None
            and e.reorg_state is None
            and (e.wallet, e.asset_id, e.side) == (fill.owner, fill.asset_id, fill.side)
            and _close(e.share_micros, fill.share_micros)
        ),
        None,
    )
    if api_only is not None:
        return "confirm", api_only
    return "insert", None


# --- storing ---------------------------------------------------------------------------


def _existing(conn: db.Conn, tx_hashes: Iterable[str]) -> list[Existing]:
    rows = conn.execute(
        """SELECT id, source, wallet, tx_hash, asset_id, side, share_micros, log_index,
                  api_source_id, reorg_state, shadow_applied_at IS NOT NULL AS shadow_applied,
                  rtds_source_id
           FROM trade_event WHERE tx_hash = ANY(%(tx)s)""",
        {"tx": sorted(set(tx_hashes))},
    ).fetchall()
    return [Existing(**r) for r in rows]


_INSERT_API = """
INSERT INTO trade_event (source, source_id, followed_user_id, wallet, condition_id, asset_id,
    side, price_micros, share_micros, usdc_notional_micros, fee_micros, tx_hash, api_source_id,
    event_time, detect_time, api_seen_at, payload)
VALUES ('DATA_API', %(sid)s, %(uid)s, %(wallet)s, %(cond)s, %(asset)s, %(side)s, %(price)s,
    %(shares)s, %(usdc)s, 0, %(tx)s, %(sid)s, %(et)s, %(now)s, %(now)s, %(payload)s)
ON CONFLICT DO NOTHING
"""
_CONFIRM_WITH_API = """
UPDATE trade_event SET api_source_id = %(sid)s, confirmed_at = COALESCE(confirmed_at, %(now)s),
    api_seen_at = %(seen)s, condition_id = COALESCE(condition_id, %(cond)s), payload = %(payload)s
WHERE id = %(id)s AND api_source_id IS NULL
"""


def _api_fill_params(f: ApiFill, now: datetime) -> dict[str, Any]:
    return {
        "sid": f.source_id,
        "uid": f.followed_user_id,
        "wallet": f.wallet,
        "cond": f.condition_id,
        "asset": f.asset_id,
        "side": f.side,
        "price": f.price_micros,
        "shares": f.share_micros,
        "usdc": f.notional_micros,
        "tx": f.tx_hash,
        "et": f.event_time,
        "now": f.detect_time or now,
        "payload": Jsonb(f.payload, dumps=wire.json_text),
    }


def insert_rows(
    conn: db.Conn, sql: str, rows: Sequence[tuple[dict[str, Any], Any]], source: str
) -> tuple[int, list[wire.Reject]]:
    """Inserts (params, payload) rows in the caller's transaction: all at once, or, if
    one of them is refused by the database (a value out of range, a check), one by one,
    each in its own savepoint, so the bad one is rejected and the rest stored. Returns
    (rows inserted, rejects)."""
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(sql, [p for p, _ in rows])
            return max(cur.rowcount, 0), []
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError):
        pass
    inserted, rejects = 0, []
    for params, payload in rows:
        try:
            with conn.transaction():
                inserted += conn.execute(sql, params).rowcount
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
            reason = f"refused by the database: {str(exc).splitlines()[0][:300]}"
            rejects.append(wire.Reject(source, reason, wire.dump_payload(payload)))
    return inserted, rejects


def store_api_fills(conn: db.Conn, fills: Sequence[ApiFill], now: datetime) -> dict[str, int]:
    """Stores Data API fills in one transaction; returns counts (inserted, confirmed,
    duplicates refused, rows the database refused). Rows past the chain's count of
    their fill are quarantined DUPLICATE_ROW, not stored (`beyond_chain`). Fills of one
    user (a poll's) hold that user's ingest lock; a batch of several users' the
    exclusive one."""
    if not fills:
        return {}
    users = {f.followed_user_id for f in fills}
    with conn.transaction():
        db.lock_ingest(conn, users.pop() if len(users) == 1 else None)
        existing = _existing(conn, (f.tx_hash for f in fills))
        matches, inserts = plan_api_fills(fills, existing)
        inserts, extra = beyond_chain(inserts, existing)
        rejects = duplicate_rejects(extra)
        with conn.cursor() as cur:
            if matches:
                cur.executemany(
                    _CONFIRM_WITH_API,
                    [
                        {
                            "id": event_id,
                            "sid": f.source_id,
                            "now": now,
                            "seen": f.detect_time or now,
                            "cond": f.condition_id,
                            "payload": Jsonb(f.payload, dumps=wire.json_text),
                        }
                        for event_id, f in matches
                    ],
                )
        rows = [(_api_fill_params(f, now), f.payload) for f in inserts]
        inserted, refused = insert_rows(conn, _INSERT_API, rows, "data_api/fills")
        quarantine.record(conn, rejects + refused, now)
    return {
        "api_inserted": inserted,
        "api_confirmed_chain": len(matches),
        "api_duplicate_rows": sum(len(rows) for rows, _ in extra.values()),
        "api_refused_rows": len(refused),
    }


def chain_source_id(fill: chain.ChainFill) -> str:
    return f"{fill.tx_hash}:{fill.log_index}"


def store_chain_fill(
    conn: db.Conn, fill: chain.ChainFill, followed_user_id: int, now: datetime
) -> ChainAction:
    """Stores one decoded OrderFilled of a followed wallet (or undoes a removed one);
    returns what it did."""
    with conn.transaction():
        db.lock_ingest(conn, followed_user_id)
        action, target = plan_chain_fill(fill, _existing(conn, [fill.tx_hash]))
        params = {
            "sid": chain_source_id(fill),
            "uid": followed_user_id,
            "wallet": fill.owner,
            "asset": fill.asset_id,
            "side": fill.side,
            "price": fill.price_micros,
            "shares": fill.share_micros,
            "usdc": fill.collateral_micros,
            "fee": fill.fee_micros,
            "tx": fill.tx_hash,
            "li": fill.log_index,
            "block": fill.block_number,
            "role": "TAKER" if fill.is_taker_order else "MAKER",
            "et": fill.block_time or now,
            "now": now,
            "id": target.id if target else None,
        }
        if action == "insert":
            conn.execute(
                """INSERT INTO trade_event (source, source_id, followed_user_id, wallet,
                       condition_id, asset_id, side, role, price_micros, share_micros,
                       usdc_notional_micros, fee_micros, tx_hash, log_index, block_number,
                       event_time, detect_time, chain_seen_at)
                   VALUES ('CHAIN', %(sid)s, %(uid)s, %(wallet)s,
                       (SELECT condition_id FROM outcome_asset WHERE asset_id = %(asset)s),
                       %(asset)s, %(side)s, %(role)s, %(price)s, %(shares)s, %(usdc)s, %(fee)s,
                       %(tx)s, %(li)s, %(block)s, %(et)s, %(now)s, %(now)s)
                   ON CONFLICT DO NOTHING""",
                params,
            )
        elif action == "confirm":
            # The chain's amounts and fee are exact: they replace the Data API's. If the
            # shadow ledger already used the API's, it gets correcting entries.
            before = conn.execute(TRADES["confirm_from_chain"], params).fetchone()
            if before is not None and before["shadow_state"] == "APPLIED":
                old = records.TradeEvent.from_row(before)
                shadow.store(
                    conn,
                    old.followed_user_id,
                    ledger.correction_entries(old, fill.collateral_micros, fill.fee_micros),
                )
        elif action == "restore":
            conn.execute(
                "UPDATE trade_event SET reorg_state = NULL, block_number = %(block)s"
                " WHERE id = %(id)s",
                params,
            )
        elif action in ("remove", "flag"):
            conn.execute(
                "UPDATE trade_event SET reorg_state = %(state)s WHERE id = %(id)s",
                {**params, "state": "REMOVED" if action == "remove" else "FLAGGED"},
            )
    return action


ConversionAction = Literal["insert", "duplicate", "remove", "restore", "ignore"]


def conversion_source_id(c: chain.ChainConversion) -> str:
    """A conversion's stable id: the same after a re-inclusion in another block."""
    return f"{c.tx_hash}:{c.market_id}:{c.index_set:x}:{c.amount_micros}"


def store_chain_conversion(
    conn: db.Conn, c: chain.ChainConversion, followed_user_id: int, now: datetime, raw: str
) -> ConversionAction:
    """Stores one decoded PositionsConverted of a followed wallet as an activity_event
    (source CHAIN), or marks a removed one (reorg); returns what it did."""
    params = {
        "sid": conversion_source_id(c),
        "uid": followed_user_id,
        "wallet": c.owner,
        "market": c.market_id,
        "amount": c.amount_micros,
        "index_set": f"{c.index_set:#x}",
        "tx": c.tx_hash,
        "li": c.log_index,
        "block": c.block_number,
        "et": c.block_time or now,
        "now": now,
        "payload": Jsonb(
            {"adapter": c.adapter, "log": raw[: wire.MAX_PAYLOAD_CHARS]}, dumps=wire.json_text
        ),
    }
    with conn.transaction():
        db.lock_ingest(conn, followed_user_id)
        row = conn.execute(ACTIVITY["chain_conversion"], params).fetchone()
        if row is None:
            if c.removed:
                return "ignore"
            conn.execute(ACTIVITY["insert_chain_conversion"], params)
            return "insert"
        params["id"] = row["id"]
        if c.removed:
            if row["reorg_state"] == "REMOVED":
                return "duplicate"
            conn.execute(ACTIVITY["remove_chain_conversion"], params)
            return "remove"
        if row["reorg_state"] == "REMOVED":
            conn.execute(ACTIVITY["restore_chain_conversion"], params)
            return "restore"
        return "duplicate"


_INSERT_ACTIVITY = """
INSERT INTO activity_event (source, source_id, followed_user_id, wallet, activity_type,
    condition_id, share_micros, usdc_micros, price_micros, tx_hash, event_time, detect_time,
    payload)
VALUES ('DATA_API', %(sid)s, %(uid)s, %(wallet)s, %(type)s, %(cond)s, %(shares)s, %(usdc)s,
    %(price)s, %(tx)s, %(et)s, %(now)s, %(payload)s)
ON CONFLICT DO NOTHING
"""


def store_activities(conn: db.Conn, rows: Sequence[ApiActivity], now: datetime) -> int:
    """Stores SPLIT/MERGE/REDEEM/CONVERSION rows; returns how many were new (a row the
    database refuses is quarantined, the others stored)."""
    if not rows:
        return 0
    params = [
        (
            {
                "sid": a.source_id,
                "uid": a.followed_user_id,
                "wallet": a.wallet,
                "type": a.activity_type,
                "cond": a.condition_id,
                "shares": a.share_micros,
                "usdc": a.usdc_micros,
                "price": a.price_micros,
                "tx": a.tx_hash,
                "et": a.event_time,
                "now": a.detect_time or now,
                "payload": Jsonb(a.payload, dumps=wire.json_text),
            },
            a.payload,
        )
        for a in rows
    ]
    with conn.transaction():
        inserted, refused = insert_rows(conn, _INSERT_ACTIVITY, params, "data_api/activity")
        quarantine.record(conn, refused, now)
    return inserted
