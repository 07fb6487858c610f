"""Per-leader figures of their own executable copy (EXEC_USER), as the Leaders page
(site_builder/pages/leaders.py) shows them and the metric catalogue publishes them
(`leader.*` in common/store/metrics.py): one reading for both, so the page and the
metrics agree by construction.

ROI 7 d and 30 d = PnL in the window / equity at its start; alpha retention 30 d; the
copy attempts of the window; the median execution score; the shadow's PnL 30 d; the
same ROI and attempts for the window ending 24 h ago (the page's rank change); and, on
its own (it costs the most), the max drawdown 30 d on the hourly snapshots."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from common.domain import attribution
from common.store import db

Row = dict[str, Any]
DAYS = 30

# A portfolio's snapshot at or before a time (or, younger than that, its first one),
# walking the unique index backwards from the time.
_AT = """
LEFT JOIN LATERAL (
  SELECT equity_micros, contributed_micros FROM (
    (SELECT equity_micros, contributed_micros, 0 AS o FROM portfolio_snapshot
     WHERE portfolio_scope = '{scope}' AND followed_user_id = u.id AND bucket <= %({at})s
     ORDER BY portfolio_scope DESC, followed_user_id DESC, bucket DESC LIMIT 1)
    UNION ALL
    (SELECT equity_micros, contributed_micros, 1 FROM portfolio_snapshot
     WHERE portfolio_scope = '{scope}' AND followed_user_id = u.id AND bucket <= %(now)s
     ORDER BY portfolio_scope, followed_user_id, bucket LIMIT 1)) s
  ORDER BY o LIMIT 1) {alias} ON true
"""
_POINTS = (  # alias, scope, time
    ("e_now", "EXEC_USER", "now"),
    ("e_7", "EXEC_USER", "d7"),
    ("e_30", "EXEC_USER", "d30"),
    ("e_then", "EXEC_USER", "then"),
    ("e_then30", "EXEC_USER", "then30"),
    ("s_now", "SHADOW_USER", "now"),
    ("s_30", "SHADOW_USER", "d30"),
)
_SNAPSHOTS = (  # built from the constants above, no input
    "SELECT u.id, u.label, u.copy_mode, u.enabled, "  # noqa: S608
    + ", ".join(
        f"{a}.equity_micros AS {a}_equity, {a}.contributed_micros AS {a}_contributed"
        for a, _, _ in _POINTS
    )
    + " FROM followed_user u "
    + "".join(_AT.format(scope=s, at=t, alias=a) for a, s, t in _POINTS)
    + " WHERE u.copy_mode <> 'REMOVED' AND u.copy_of_user_id IS NULL ORDER BY u.id"
)
# Max drawdown over the window, on the hourly points (index probes per user).
_DRAWDOWN = """
SELECT u.id, max(1 - d.equity_micros::numeric / nullif(d.peak, 0)) AS drawdown
FROM followed_user u
CROSS JOIN LATERAL (
  SELECT equity_micros, max(equity_micros) OVER (ORDER BY bucket) AS peak
  FROM portfolio_snapshot
  WHERE portfolio_scope = 'EXEC_USER' AND followed_user_id = u.id
    AND bucket = ANY(ARRAY(SELECT generate_series(%(first_hour)s::timestamptz, %(now)s,
                                                  '1 hour')))) d
WHERE u.copy_mode <> 'REMOVED' AND u.copy_of_user_id IS NULL
GROUP BY u.id
"""
# Attempts in the window (and in the one ending 24 h ago), retention and the median
# execution score, per user.
_ATTEMPTS = """
SELECT a.followed_user_id AS id,
       count(*) FILTER (WHERE a.decision_time >= %(d30)s) AS attempts,
       count(*) FILTER (WHERE a.decision_time >= %(d30)s AND a.decision = 'EXECUTE')
         AS executed,
       count(*) FILTER (WHERE a.decision_time < %(then)s) AS attempts_then,
       count(c.copy_attempt_id) FILTER (WHERE a.decision_time >= %(d30)s) AS attributed,
       coalesce(sum(c.ideal_micros) FILTER (WHERE a.decision_time >= %(d30)s), 0) AS ideal,
       coalesce(sum(c.exec_micros) FILTER (WHERE a.decision_time >= %(d30)s), 0) AS exec,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY s.total_cpts)
         FILTER (WHERE a.decision_time >= %(d30)s) AS score_cpts,
       count(s.copy_attempt_id) FILTER (WHERE a.decision_time >= %(d30)s) AS scored
FROM copy_attempt a
LEFT JOIN copy_attribution c ON c.copy_attempt_id = a.id
LEFT JOIN execution_score s ON s.copy_attempt_id = a.id AND s.version = %(v)s
WHERE a.portfolio_scope = 'EXEC_USER' AND a.decision_time >= %(then30)s
GROUP BY a.followed_user_id
"""


@dataclass(frozen=True)
class Figures:
    """One leader's figures at `now` (None: no snapshot to compute it from)."""

    user: Row  # id, label, copy_mode, enabled
    roi_7d: Decimal | None
    roi_30d: Decimal | None
    roi_30d_then: Decimal | None  # the same, for the window ending 24 h ago
    attempts: int  # copy attempts decided in the last 30 d
    attempts_then: int  # ... in the 30 d ending 24 h ago
    executed: int
    retention: Decimal | None  # Σ exec / Σ ideal (attribution.retention_ratio)
    retention_sums: tuple[int, int]  # (Σ exec, Σ ideal), shown when the ratio is n/a
    score_cpts: int | None  # median execution score, hundredths of a point
    scored: int
    shadow_pnl_30d: int | None

    @property
    def user_id(self) -> int:
        return int(self.user["id"])


def _pnl(row: Row, alias: str) -> int | None:
    equity = row[f"{alias}_equity"]
    return None if equity is None else int(equity - row[f"{alias}_contributed"])


def _roi(row: Row, now: str, then: str) -> Decimal | None:
    """PnL from `then` to `now` over the equity at `then` (both aliases of _POINTS)."""
    a, b = _pnl(row, now), _pnl(row, then)
    start = row[f"{then}_equity"]
    if a is None or b is None or not start:
        return None
    return (Decimal(a - b) / Decimal(start)).quantize(Decimal("0.0001"))


def _params(now: datetime) -> dict[str, Any]:
    d30 = now - timedelta(days=DAYS)
    return {
        "now": now,
        "d7": now - timedelta(days=7),
        "d30": d30,
        "then": now - timedelta(days=1),
        "then30": now - timedelta(days=DAYS + 1),
        "first_hour": d30.replace(minute=0, second=0, microsecond=0),
        "v": attribution.VERSION,
    }


def figures(conn: db.Conn, now: datetime) -> list[Figures]:
    """Every leader's figures (not REMOVED, not a real copy's wallet), by user id."""
    params = _params(now)
    attempts = {r["id"]: r for r in conn.execute(_ATTEMPTS, params)}
    out = []
    for r in conn.execute(_SNAPSHOTS, params):
        a = attempts.get(r["id"]) or {}
        ideal, exec_ = int(a.get("ideal", 0)), int(a.get("exec", 0))
        shadow_now, shadow_then = _pnl(r, "s_now"), _pnl(r, "s_30")
        score = a.get("score_cpts")
        out.append(
            Figures(
                user={k: r[k] for k in ("id", "label", "copy_mode", "enabled")},
                roi_7d=_roi(r, "e_now", "e_7"),
                roi_30d=_roi(r, "e_now", "e_30"),
                roi_30d_then=_roi(r, "e_then", "e_then30"),
                attempts=int(a.get("attempts", 0)),
                attempts_then=int(a.get("attempts_then", 0)),
                executed=int(a.get("executed", 0)),
                retention=attribution.retention_ratio(a.get("attributed", 0), ideal, exec_),
                retention_sums=(exec_, ideal),
                score_cpts=None if score is None else int(score),
                scored=int(a.get("scored", 0)),
                shadow_pnl_30d=(
                    None if shadow_now is None or shadow_then is None else shadow_now - shadow_then
                ),
            )
        )
    return out


def max_drawdowns(conn: db.Conn, now: datetime) -> dict[int, Decimal | None]:
    """User → the largest fall (a fraction) of its copy's equity from its running peak
    over the last 30 d, on the hourly snapshots."""
    return {r["id"]: r["drawdown"] for r in conn.execute(_DRAWDOWN, _params(now))}
