"""Followed users (users.html) and one page per user (users/<id>.html): shadow vs
executable, tracking gap, attempt / fill / partial-fill rates, slippage and detect-lag
distributions, skip reasons, positions, and the trade feed with copy outcomes.

The "ideal copy" line is the shadow's PnL since copying began, scaled by the user's
copy percentage: what an instant, uncapped, always-filled copy would have made. The
tracking gap is the executable copy's PnL minus that."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from common.domain import attribution, reasons
from common.store import attributions, db
from site_builder import svg
from site_builder.pages import common, latency, portfolio, real_copy

Row = dict[str, Any]
RATE_DAYS = 30
FEED_ROWS = 100


@dataclass(frozen=True)
class Rates:
    attempts: int = 0
    executed: int = 0
    partial: int = 0
    target: int = 0
    filled: int = 0
    fees: int = 0

    @property
    def fill_rate(self) -> float | None:
        return common.ratio(self.executed, self.attempts)

    @property
    def partial_rate(self) -> float | None:
        return common.ratio(self.partial, self.executed)

    @property
    def notional_rate(self) -> float | None:
        return common.ratio(self.filled, self.target)


@dataclass(frozen=True)
class UserSummary:
    user: Row
    shadow: Row | None
    exec: Row | None
    ideal_pnl: int | None
    gap: int | None
    rates: Rates
    top_reason: str | None
    last_fill_at: datetime | None


@dataclass(frozen=True)
class UsersContext:
    frame: common.Frame
    users: list[UserSummary]


@dataclass(frozen=True)
class Curve:
    """The exec equity, the ideal copy (contributed + Σ ideal of the copy's attempts at
    that hour's marks, SPEC §10) and the gap between their PnLs, over time."""

    times: list[datetime]
    exec_equity: list[float]
    ideal_times: list[datetime]
    ideal_equity: list[float]
    gap: list[float]  # at ideal_times


@dataclass(frozen=True)
class UserContext:
    frame: common.Frame
    summary: UserSummary
    wallets: list[str]
    copy_pct_bps: int
    rates_by_scope: dict[str, Rates]
    skip_reasons: list[tuple[str, int, str]]
    slippage_their: list[tuple[str, int, str]]  # (label, count, bucket key)
    lag: dict[str, dict[str, int]]  # per source
    lag_buckets: list[tuple[str, int, str]]  # every source
    positions: dict[str, list[Row]]  # open, valued at the snapshot's marks
    closed: list[Row]  # the executable copy's closed positions, newest first
    realized: portfolio.Realized | None  # its realized PnL explained
    feed: list[Row]
    activity: list[Row]
    curve: Curve
    retention: dict[str, attribution.Retention]
    real: real_copy.RealCopy | None  # the admin's real copy of this leader, if any
    copy_of: Row | None  # the leader this user is the admin's copy wallet of, if any
    latency: latency.Latency | None = None  # the newest latency sweep (SPEC §12)


def _rates(rows: list[Row]) -> Rates:
    return Rates(
        attempts=sum(r["attempts"] for r in rows),
        executed=sum(r["executed"] for r in rows),
        partial=sum(r["partial"] for r in rows),
        target=sum(r["target_notional_micros"] for r in rows),
        filled=sum(r["filled_notional_micros"] for r in rows),
        fees=sum(r["fees_micros"] for r in rows),
    )


def attempt_rollups(conn: db.Conn, since: datetime, user: int | None = None) -> list[Row]:
    return list(
        conn.execute(
            """SELECT * FROM rollup_attempt_daily WHERE day >= %(d)s
               AND (%(u)s::bigint IS NULL OR followed_user_id = %(u)s)""",
            {"d": since.date(), "u": user},
        )
    )


def _curve(conn: db.Conn, user: int, ideal_now: int | None, now: datetime) -> Curve:
    execs = common.series(conn, "EXEC_USER", user, now)
    by_bucket = {r["bucket"]: r for r in execs}
    points = attributions.ideal_series(conn, user, now - timedelta(days=common.HISTORY_DAYS))
    if execs and ideal_now is not None:
        points.append((execs[-1]["bucket"], ideal_now))  # the last point: now
    ideal_times, ideal, gap = [], [], []
    for t, ideal_pnl in points:
        r = by_bucket.get(t)
        if r is None:
            continue  # no exec snapshot that minute (the copy had not started)
        ideal_times.append(t)
        ideal.append((r["contributed_micros"] + ideal_pnl) / 1e6)
        gap.append((r["equity_micros"] - r["contributed_micros"] - ideal_pnl) / 1e6)
    return Curve(
        [r["bucket"] for r in execs],
        [r["equity_micros"] / 1e6 for r in execs],
        ideal_times,
        ideal,
        gap,
    )


def summaries(
    conn: db.Conn, now: datetime, only: int | None = None, rollups: list[Row] | None = None
) -> list[UserSummary]:
    """Every user's (or `only` that user's) summary row; `rollups`: their 30 days of
    rollup_attempt_daily when the caller has read them already."""
    users = list(
        conn.execute(
            """SELECT u.*, (SELECT max(event_time) FROM trade_event t
                            WHERE t.followed_user_id = u.id) AS last_fill_at,
                      (SELECT min(event_time) FROM uncertain_conversion a
                       WHERE a.followed_user_id = u.id) AS uncertain_since
               FROM followed_user u WHERE %(u)s::bigint IS NULL OR u.id = %(u)s
               ORDER BY u.copy_mode = 'REMOVED', lower(u.label), u.id""",
            {"u": only},
        )
    )
    snaps = common.snapshots_at(conn, common.latest_bucket(conn))
    ideals = attributions.totals(conn, only)
    if rollups is None:
        rollups = attempt_rollups(conn, now - timedelta(days=RATE_DAYS), only)
    out = []
    for u in users:
        mine = [r for r in rollups if r["followed_user_id"] == u["id"]]
        user_rows = [r for r in mine if r["portfolio_scope"] == "EXEC_USER"]
        skipped = Counter(common.merge_histograms(user_rows, "reasons"))
        shadow = snaps.get(("SHADOW_USER", u["id"]))
        execr = snaps.get(("EXEC_USER", u["id"]))
        ideal = ideals.get(("EXEC_USER", u["id"]))
        exec_pnl = common.pnl(execr)
        out.append(
            UserSummary(
                user=u,
                shadow=shadow,
                exec=execr,
                ideal_pnl=ideal,
                gap=None if ideal is None or exec_pnl is None else exec_pnl - ideal,
                rates=_rates(user_rows),
                top_reason=skipped.most_common(1)[0][0] if skipped else None,
                last_fill_at=u["last_fill_at"],
            )
        )
    return out


def users_context(conn: db.Conn, now: datetime) -> UsersContext:
    return UsersContext(frame=common.frame(conn, now), users=summaries(conn, now))


_FEED = """
SELECT t.id, t.source, t.event_time, t.detect_time, t.side, t.price_micros, t.share_micros,
       t.usdc_notional_micros, t.asset_id, t.condition_id, t.group_state, t.reorg_state,
       m.question, o.outcome,
       au.decision AS user_decision, au.reason_codes AS user_reasons,
       au.filled_ratio_micros AS user_filled, au.vwap_micros AS user_vwap,
       ag.decision AS global_decision, ag.reason_codes AS global_reasons,
       ag.filled_ratio_micros AS global_filled
FROM trade_event t
LEFT JOIN market m ON m.condition_id = t.condition_id
LEFT JOIN outcome_asset o ON o.asset_id = t.asset_id
LEFT JOIN copy_attempt au ON au.copy_group_id = t.copy_group_id AND t.copy_group_id IS NOT NULL
     AND au.portfolio_scope = 'EXEC_USER'
LEFT JOIN copy_attempt ag ON ag.copy_group_id = t.copy_group_id AND t.copy_group_id IS NOT NULL
     AND ag.portfolio_scope = 'EXEC_GLOBAL'
WHERE t.followed_user_id = %(u)s
ORDER BY t.event_time DESC, t.id DESC LIMIT %(n)s
"""
_ACTIVITY = """
SELECT a.*, m.question FROM activity_event a LEFT JOIN market m USING (condition_id)
WHERE a.followed_user_id = %(u)s ORDER BY a.event_time DESC, a.id DESC LIMIT 20
"""


def user_context(conn: db.Conn, user_id: int, now: datetime) -> UserContext | None:
    since = now - timedelta(days=RATE_DAYS)
    rollups = attempt_rollups(conn, since, user_id)
    found = summaries(conn, now, only=user_id, rollups=rollups)
    if not found:
        return None
    by_scope = {
        scope: _rates([r for r in rollups if r["portfolio_scope"] == scope])
        for scope in ("EXEC_USER", "EXEC_GLOBAL")
    }
    user_rows = [r for r in rollups if r["portfolio_scope"] == "EXEC_USER"]
    skipped = Counter(common.merge_histograms(user_rows, "reasons"))
    lag_rows = list(
        conn.execute(
            "SELECT * FROM rollup_detect_daily WHERE followed_user_id = %(u)s AND day >= %(d)s",
            {"u": user_id, "d": since.date()},
        )
    )
    pct = common.config(conn).for_user(user_id).copy_pct_bps
    held = {
        scope: portfolio.positions(conn, scope, user_id, open=True)
        for scope in ("SHADOW_USER", "EXEC_USER")
    }
    closed = portfolio.positions(conn, "EXEC_USER", user_id, open=False)
    execr = found[0].exec
    return UserContext(
        frame=common.frame(conn, now),
        summary=found[0],
        wallets=[
            r["wallet"]
            for r in conn.execute(
                "SELECT wallet FROM followed_user_proxy_wallet WHERE followed_user_id = %(u)s"
                " ORDER BY id",
                {"u": user_id},
            )
        ],
        copy_pct_bps=pct,
        rates_by_scope=by_scope,
        skip_reasons=[(k, n, reasons.describe(k)) for k, n in skipped.most_common()],
        slippage_their=common.keyed(
            common.merge_histograms(user_rows, "slip_their_bps"), common.SLIP_EDGES
        ),
        lag_buckets=common.keyed(
            common.merge_histograms(lag_rows, "lag_ms"), common.LAG_EDGES, common.duration
        ),
        lag={
            source: common.merge_histograms(
                [r for r in lag_rows if r["source"] == source], "lag_ms"
            )
            for source in sorted({r["source"] for r in lag_rows})
        },
        positions=held,
        closed=closed,
        realized=None if execr is None else portfolio.realized(execr, held["EXEC_USER"], closed),
        feed=list(conn.execute(_FEED, {"u": user_id, "n": FEED_ROWS})),
        activity=list(conn.execute(_ACTIVITY, {"u": user_id})),
        curve=_curve(conn, user_id, found[0].ideal_pnl, now),
        retention=attributions.retention(conn, now, user_id),
        real=real_copy.context(conn, user_id, now),
        copy_of=real_copy.copy_of(conn, user_id),
        latency=latency.context(conn, user_id),
    )


def equity_chart(ctx: UserContext, since: datetime | None) -> bytes:
    c = ctx.curve
    return svg.lines(
        "Executable copy vs ideal copy (their price, at once, unclamped): equity",
        [
            svg.Series("executable", c.times, c.exec_equity),
            svg.Series("ideal copy", c.ideal_times, c.ideal_equity, color=svg.SHADOW, dashed=True),
        ],
        until=ctx.frame.now,
        since=since,
    )


def gap_chart(ctx: UserContext, since: datetime | None) -> bytes:
    c = ctx.curve
    return svg.lines(
        "Tracking gap: executable PnL − ideal copy PnL",
        [svg.Series("", c.ideal_times, c.gap, color=svg.LOSS)],
        zero=True,
        fill_below=True,
        until=ctx.frame.now,
        since=since,
    )


def waterfall_chart(ctx: UserContext) -> bytes:
    return common.retention_chart(ctx.retention["30d"], "own copy")
