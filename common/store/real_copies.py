"""Real copies (SPEC §10): the admin's copy wallets' fills and imported CSV fills
(`real_copy_fill`), paired with the leader's groups, attributed at the asset's mark
(`real_copy_attribution`) and scored (`real_copy_score`) by the formulas of the
simulated copy (common/domain/real_copies.py). The score job runs `sync`, `pair`,
`attribute` and `score`; the pages read `retention`, `summary`, `unpaired` and the
hourly series. SQL in sql/real_copy_fill.sql."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from common.domain import attribution, copy_config, real_copies
from common.store import checkpoints, copy_configs, db, queries

SQL = queries.load("real_copy_fill")
PAGE = 5_000
WINDOWS = {"24h": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}
Row = dict[str, Any]

IMPORT_TEMP = "import_real_copy_fill"
IMPORT_COLUMNS = (
    "leader_user_id", "source_key", "import_file", "import_line", "tx_hash", "asset_id",
    "side", "price_micros", "share_micros", "fee_micros", "event_time", "added_at",
)  # fmt: skip
IMPORT_MAKE = f"""CREATE TEMP TABLE IF NOT EXISTS {IMPORT_TEMP} (
    leader_user_id bigint, source_key text, import_file text, import_line integer,
    tx_hash text, asset_id text, side text, price_micros bigint, share_micros bigint,
    fee_micros bigint, event_time timestamptz, added_at timestamptz) ON COMMIT DELETE ROWS"""
ATTRIBUTION = (
    "real_copy_fill_id", "copy_group_id", "their_price_micros", "order_book_snapshot_id",
    "mid_micros", "mark_micros", "ideal_micros", "exec_micros", "latency_micros",
    "slippage_micros", "fee_micros", "marked_at", "final", "updated_at",
)  # fmt: skip
SCORES = (
    "real_copy_fill_id", "version", "timing_cpts", "financial_cpts", "cost_cpts",
    "congestion_cpts", "total_cpts", "scored_at",
)  # fmt: skip


def import_rows(conn: db.Conn, rows: Iterable[Sequence[Any]]) -> int:
    """Adds imported fills (IMPORT_COLUMNS), each once; returns how many were new."""
    return db.copy_then(conn, IMPORT_MAKE, IMPORT_TEMP, IMPORT_COLUMNS, rows, SQL["import_rows"])


def sync(conn: db.Conn, now: datetime) -> tuple[int, int]:
    """Makes the copy wallets' fills real copy fills (and drops those no longer one);
    returns (added, dropped)."""
    with conn.transaction():
        dropped = conn.execute(SQL["wallet_gone"]).rowcount
        added = conn.execute(SQL["wallet_new"], {"now": now}).rowcount
    return added, dropped


PAIRING = "score.pairing"  # when pairing last ran: groups closed since may pair again
PAIRING_MARGIN = timedelta(minutes=5)  # clocks and commits: look a little further back


def _pair_rows(conn: db.Conn, rows: list[Row], now: datetime) -> int:
    """Pairs `rows` (fills) with their leaders' closed groups and stores what changed;
    returns how many fills' groups changed."""
    fills = [real_copies.Fill(r["id"], r["asset_id"], r["side"], r["event_time"]) for r in rows]
    leaders = sorted({r["leader_user_id"] for r in rows})
    params = {
        "leaders": leaders,
        "assets": sorted({r["asset_id"] for r in rows}),
        "lo": min(f.at for f in fills) - real_copies.PAIR_WITHIN,
        "hi": max(f.at for f in fills),
    }
    groups: dict[int, list[real_copies.Group]] = {}
    for g in conn.execute(SQL["candidate_groups"], params):
        groups.setdefault(g["followed_user_id"], []).append(
            real_copies.Group(g["id"], g["asset_id"], g["action"], g["window_start"])
        )
    found: dict[int, int | None] = {}
    for leader in leaders:
        mine = [f for f, r in zip(fills, rows, strict=True) if r["leader_user_id"] == leader]
        found.update(real_copies.pair(mine, groups.get(leader, [])))
    ids = list(found)
    with conn.transaction():
        result = conn.execute(
            SQL["set_pairs"], {"ids": ids, "groups": [found[i] for i in ids], "now": now}
        ).fetchall()
        moved = [r["id"] for r in result if r["changed"]]
        if moved:
            conn.execute(SQL["forget_attribution"], {"ids": moved})
            conn.execute(SQL["forget_scores"], {"ids": moved})
    return len(moved)


def pair(conn: db.Conn, now: datetime) -> tuple[int, int]:
    """Pairs the fills never looked at (a page per transaction), then those a group
    closed since the last run may pair with; returns (fills looked at for the first
    time, fills whose group changed)."""
    first = changed = 0
    after = 0
    while rows := conn.execute(SQL["to_pair"], {"after": after, "limit": PAGE}).fetchall():
        after = rows[-1]["id"]
        changed += _pair_rows(conn, rows, now)
        first += len(rows)
    last = checkpoints.read(conn, PAIRING)
    start = last["cursor_time"] if last and last["cursor_time"] else now - real_copies.PAIR_WITHIN
    since = start - PAIRING_MARGIN
    again = conn.execute(SQL["to_pair_again"], {"since": since}).fetchall()
    for i in range(0, len(again), PAGE):
        changed += _pair_rows(conn, again[i : i + PAGE], now)
    checkpoints.advance(conn, PAIRING, now, time=now)
    return first, changed


def _pages(conn: db.Conn, ids: list[int]) -> Iterable[list[Row]]:
    for i in range(0, len(ids), PAGE):
        yield conn.execute(SQL["pairs"], {"ids": ids[i : i + PAGE]}).fetchall()


def _attempt(row: Row, configs: copy_config.ConfigSet) -> attribution.Attempt:
    their = row["their_price_micros"] or 0
    book = real_copies.NO_BOOK
    if row["book_id"] is not None:
        book = real_copies.book_at(
            row["side"],
            tuple(zip(row["bid_prices_micros"], row["bid_sizes_micros"], strict=True)),
            tuple(zip(row["ask_prices_micros"], row["ask_sizes_micros"], strict=True)),
            max(1, their),
            row["share_micros"],
            configs.for_user(row["leader_user_id"]).guards(),
        )
    return real_copies.attempt(
        row["side"], row["price_micros"], row["share_micros"], row["fee_micros"],
        row["event_time"], their, row["window_start"], book,
    )  # fmt: skip


def attribute(conn: db.Conn, now: datetime, max_age: timedelta) -> int:
    """Writes the attribution of the paired fills due (at their asset's fresh mark);
    returns how many."""
    due = {r["id"]: r for r in conn.execute(SQL["due"], {"fresh": now - max_age})}
    configs = copy_configs.load(conn)
    written = 0
    for rows in _pages(conn, list(due)):
        out = []
        for row in rows:
            m, a = due[row["id"]], _attempt(row, configs)
            t = attribution.attribute(a, m["mark"])
            out.append(
                (
                    row["id"], row["copy_group_id"], row["their_price_micros"] or 0,
                    row["book_id"], a.mid, t.mark, t.ideal, t.exec,
                    t.latency, t.slippage, t.fee, m["marked_at"], m["final"], now,
                )
            )  # fmt: skip
        with conn.transaction():
            db.copy_like(conn, "real_copy_attribution", ATTRIBUTION, out, SQL["upsert_attribution"])
        written += len(out)
    return written


def score(conn: db.Conn, now: datetime) -> int:
    """Scores the paired fills not scored in this version; returns how many."""
    ids = [r["id"] for r in conn.execute(SQL["unscored"], {"v": attribution.VERSION})]
    configs = copy_configs.load(conn)
    done = 0
    for rows in _pages(conn, ids):
        out = []
        for row in rows:
            s = real_copies.score(_attempt(row, configs))
            if s is not None:
                out.append(
                    (row["id"], s.version, s.timing, s.financial, s.cost, s.congestion,
                     s.total, now)
                )  # fmt: skip
        with conn.transaction():
            db.copy_like(conn, "real_copy_score", SCORES, out, SQL["insert_scores"])
        done += len(out)
    return done


# -- the pages ------------------------------------------------------------------------


def retention(conn: db.Conn, now: datetime, leader: int) -> dict[str, attribution.Retention]:
    """A leader's real copy's retention over 24 h, 7 d and 30 d (its paired fills; with
    T0 = T = F there is no sizing, skip or unfilled term)."""
    params = {"u": leader, **{f"d{w.days}": now - w for w in WINDOWS.values()}}
    out = {}
    for r in conn.execute(SQL["retention"], params):
        out[r["span"]] = attribution.Retention(
            window=r["span"], attempts=r["attempts"], n=r["n"], ideal=r["ideal"],
            exec=r["exec"], sizing=0, skips=(), unfilled=0, latency=r["latency"],
            slippage=r["slippage"], fee=r["fee"],
        )  # fmt: skip
    return {w: out[w] for w in WINDOWS}


@dataclass(frozen=True)
class Summary:
    paired: int
    unpaired: int
    before_follow: int  # of the unpaired: made before the leader was seeded
    pending: int
    wallet: int
    csv: int
    median_score_cpts: int | None

    @property
    def total(self) -> int:
        return self.paired + self.unpaired + self.pending


def summary(conn: db.Conn, leader: int) -> Summary:
    r = conn.execute(SQL["counts"], {"u": leader, "v": attribution.VERSION}).fetchone()
    assert r is not None
    return Summary(**r)


def unpaired(conn: db.Conn, leader: int, limit: int = 50) -> list[Row]:
    return conn.execute(SQL["unpaired"], {"u": leader, "limit": limit}).fetchall()


def cumulative(
    conn: db.Conn, leader: int, since: datetime
) -> dict[str, list[tuple[datetime, int, int]]]:
    """The leader's simulated copy ("sim") and real copy ("real"): Σ ideal and Σ exec
    at today's marks, cumulated by the hour of decision (or fill) since `since`."""
    out = {}
    for name, query in (("sim", "sim_hourly"), ("real", "real_hourly")):
        ideal = exec_ = 0
        points = []
        for r in conn.execute(SQL[query], {"u": leader, "since": since}):
            ideal += int(r["ideal"])
            exec_ += int(r["exec"])
            points.append((r["bucket"] + timedelta(hours=1), ideal, exec_))
        out[name] = points
    return out


def copy_wallets(conn: db.Conn) -> dict[int, list[Row]]:
    """Each leader's copy wallets (followed users marked as its copy)."""
    out: dict[int, list[Row]] = {}
    for r in conn.execute(SQL["copy_wallets"]):
        out.setdefault(r["leader"], []).append(r)
    return out
