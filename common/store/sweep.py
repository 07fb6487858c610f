"""The latency sweep (SPEC §12): the what-if's `evaluate` — the same `decide`, the
same portfolios from the range start — replayed once per ladder delay, each BUY/SELL
group decided at its first fill + the delay on its ladder's book of that moment
(`book_ladder`), and what each portfolio kept measured by `common.domain.latency`:
PnL, retention, fill rate and median slippage per leader (EXEC_USER) and for the
global portfolio (EXEC_GLOBAL), and each one's half-life.

Only BUY/SELL groups whose ladder holds every delay are replayed, so each delay sees
the same groups; the others are counted (`groups_without_ladder`) and left out of every
delay. MERGE / SPLIT groups are decided as the what-if decides them, at every delay
alike. Every delay is valued at the assets' marks now (X: the payout once resolved;
`asset_mark`), an asset without a mark fresher than OCULUS_SCORE_MARK_MAX_AGE_S counts
in attempts, not in PnL or retention. Deterministic: the same rows give the same
report, key for key.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from common.domain import attribution, copy_config, decide, exits, latency, money, records
from common.store import db, ladder, whatif

log = logging.getLogger(__name__)

_MARKS = """
SELECT s.asset_id, k.mark FROM unnest(%(assets)s::text[]) s(asset_id)
CROSS JOIN LATERAL asset_mark(s.asset_id) k
WHERE k.mark IS NOT NULL AND (k.final OR k.marked_at >= %(fresh)s)
"""


def marks_now(conn: db.Conn, assets: Iterable[str], fresh: datetime) -> dict[str, int]:
    """Each asset's mark X (`asset_mark`): its payout once resolved, else its newest
    mid if observed since `fresh`; an asset with neither is left out."""
    rows = conn.execute(_MARKS, {"assets": sorted(set(assets)), "fresh": fresh})
    return {r["asset_id"]: int(r["mark"]) for r in rows}


def _book(
    g: decide.Group, rung: ladder.Stored, d_ms: int, stored: records.OrderBookSnapshot | None
) -> records.OrderBookSnapshot:
    """A rung as the book the group is decided on at its first fill + `d_ms` (the
    minimum order size is the asset's, from the book the copy engine stored)."""
    book = records.Book(
        bids=tuple((money.Price(p), money.Shares(n)) for p, n in rung.levels.bids),
        asks=tuple((money.Price(p), money.Shares(n)) for p, n in rung.levels.asks),
        min_order_size=stored.book.min_order_size if stored is not None else 0,
    )
    at = g.window_start + timedelta(milliseconds=d_ms)
    return records.OrderBookSnapshot(book, g.asset_id or "", at)


def _in_order(g: decide.Group, rungs: dict[int, ladder.Stored], delays_ms: tuple[int, ...]) -> bool:
    """Whether each rung's book is no later than the next delay's moment. A +0 taken at
    detection (the asset was not watched before the fill) can be later than +2 s when
    the fill was found late: such a group would start its sweep from a later book than
    its next delay's, so it is left out (`groups_late_base`)."""
    for d, nxt in itertools.pairwise(sorted(delays_ms)):
        if rungs[d].book_at > g.window_start + timedelta(milliseconds=nxt):
            return False
    return True


def run(
    inputs: whatif.Inputs,
    configs: copy_config.ConfigSet,
    rungs: dict[int, dict[int, ladder.Stored]],
    delays_ms: tuple[int, ...],
    marks: dict[str, int],
    until: datetime | None = None,
) -> dict[str, Any]:
    """The sweep of loaded inputs (pure): per portfolio, one point per delay, and its
    half-life. With an exit overlay on in `configs`, the exits are checked as the
    what-if checks them (up to `until`), and `without_exits` holds the same sweep with
    the overlays off, for comparison."""
    on = whatif.overlays_on(configs)
    out = _sweep(inputs, configs, rungs, delays_ms, marks, until if on else None, on)
    if on:
        bare = _sweep(
            inputs, whatif.without_overlays(configs), rungs, delays_ms, marks, until, True
        )
        out["without_exits"] = {"global": bare["global"], "leaders": bare["leaders"]}
    return out


def _sweep(
    inputs: whatif.Inputs,
    configs: copy_config.ConfigSet,
    rungs: dict[int, dict[int, ladder.Stored]],
    delays_ms: tuple[int, ...],
    marks: dict[str, int],
    until: datetime | None,
    with_exits: bool,
) -> dict[str, Any]:
    scored = [g for g in inputs.groups if g.action in attribution.SCORED]
    full = {g.id for g in scored if all(d in rungs.get(g.id, {}) for d in delays_ms)}
    late = {g.id for g in scored if g.id in full and not _in_order(g, rungs[g.id], delays_ms)}
    full -= late
    groups = [g for g in inputs.groups if g.action not in attribution.SCORED or g.id in full]
    points: dict[tuple[str, int | None], list[latency.Point]] = {}
    for d in delays_ms:
        books = dict(inputs.books)
        for g in groups:
            if g.id in full:
                books[g.id] = _book(g, rungs[g.id][d], d, inputs.books.get(g.id))
        now: dict[tuple[str, int | None], latency.Point] = {}

        def observe(scope: str, dec: decide.Decision, d: int = d, now: Any = now) -> None:
            g = dec.group
            if g.action not in attribution.SCORED:
                return
            key = (scope, g.user_id if scope == "EXEC_USER" else None)
            point = now.setdefault(key, latency.Point(d))
            mark = marks.get(g.asset_id or "")
            if g.key.startswith(exits.KEY_PREFIX):
                point.add_exit(dec, mark)
            else:
                point.add(dec, mark, latency.attempt_of(dec))

        subset = dataclasses.replace(inputs, groups=groups, books=books)
        whatif.evaluate(subset, configs, observe, exits=with_exits, until=until)
        for key, point in now.items():
            points.setdefault(key, []).append(point)

    def series(key: tuple[str, int | None]) -> dict[str, Any]:
        pts = points.get(key, [])
        hl = latency.half_life([(p.delay_ms, p.retention) for p in pts])
        return {"points": [p.as_dict() for p in pts], "half_life": hl.as_dict()}

    leaders = sorted(u for s, u in points if s == "EXEC_USER" and u is not None)
    return {
        "delays_ms": list(delays_ms),
        "groups": len(full),
        "groups_without_ladder": len(scored) - len(full) - len(late),
        "groups_late_base": len(late),
        "global": series(("EXEC_GLOBAL", None)),
        "leaders": {str(u): series(("EXEC_USER", u)) for u in leaders},
    }


def report(
    conn: db.Conn,
    inputs: whatif.Inputs,
    configs: copy_config.ConfigSet,
    delays_ms: tuple[int, ...],
    now: datetime,
    mark_max_age_s: float,
) -> dict[str, Any]:
    """The sweep of `inputs` (as `whatif.load` read them) under `configs`."""
    rungs = ladder.load(conn, [g.id for g in inputs.groups], delays_ms)
    assets = {g.asset_id for g in inputs.groups if g.asset_id}
    marks = marks_now(conn, assets, now - timedelta(seconds=mark_max_age_s))
    return run(inputs, configs, rungs, delays_ms, marks, now)


@dataclass(frozen=True)
class Latest:
    """The newest stored sweep (`functions.sweep`)."""

    taken_at: datetime
    range_start: datetime
    range_end: datetime
    report: dict[str, Any]

    @property
    def hours(self) -> float:
        return (self.range_end - self.range_start).total_seconds() / 3600

    def of(self, user_id: int | None) -> dict[str, Any] | None:
        """A leader's series (None: the global portfolio's); None if it had no copies."""
        if user_id is None:
            return dict(self.report["global"])
        got = self.report["leaders"].get(str(user_id))
        return None if got is None else dict(got)


_NEWEST_IDS = "SELECT id FROM latency_sweep ORDER BY taken_at DESC, id DESC LIMIT 5"
_ONE = "SELECT id, taken_at, range_start, range_end, report FROM latency_sweep WHERE id = %(i)s"


# What the pages read of a point (a report stored by an older version may lack the rest).
POINT_KEYS = frozenset(("delay_ms", "attempts", "executed", "fill_rate", "pnl_micros",
                        "ideal_micros", "retention", "median_slippage_bps"))  # fmt: skip


def well_formed(report: Any) -> bool:
    """Whether a stored report has the shape the pages read (a row written by another
    version, or edited by hand, must not break them)."""

    def series(x: Any) -> bool:
        return (isinstance(x, dict) and isinstance(x.get("points"), list)
                and all(isinstance(p, dict) and p.keys() >= POINT_KEYS
                        and isinstance(p["delay_ms"], int) for p in x["points"])
                and isinstance(x.get("half_life"), dict)
                and isinstance(x["half_life"].get("label"), str))  # fmt: skip

    return (
        isinstance(report, dict)
        and isinstance(report.get("delays_ms"), list)
        and all(isinstance(d, int) and d >= 0 for d in report["delays_ms"])
        and isinstance(report.get("groups"), int)
        and isinstance(report.get("groups_without_ladder"), int)
        and series(report.get("global"))
        and isinstance(report.get("leaders"), dict)
        and all(series(v) for v in report["leaders"].values())
    )


def latest(conn: db.Conn) -> Latest | None:
    """The newest stored sweep the pages can read (a malformed one is passed over)."""
    for newest in conn.execute(_NEWEST_IDS).fetchall():  # a report is read only if needed
        row = conn.execute(_ONE, {"i": newest["id"]}).fetchone()
        if row is None:
            continue
        if well_formed(row["report"]):
            return Latest(row["taken_at"], row["range_start"], row["range_end"], row["report"])
        log.warning("latency_sweep %s: malformed report, passed over", row["id"])
    return None
