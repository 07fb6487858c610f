"""Config (config.html): the guardrails, sizing and risk limits in force, per-user
overrides, the pause switch, blacklisted markets, the audit log with revert buttons, and
"Test config"; plus one page per finished config test (config-test/<id>.html). The forms
post JSON to the write API (/api/...); the next build shows the change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from common.domain import copy_config, reasons
from common.store import copy_configs, db
from site_builder.pages import common

Row = dict[str, Any]
AUDIT_ROWS = 50
TEST_PAGES = 20

# (field, label, unit): unit says how the form shows and reads it (micros as dollars or
# prices, bps as percent).
FIELDS: tuple[tuple[str, str, str], ...] = (
    ("copy_pct_bps", "Copy size (of their notional)", "bps"),
    ("min_trade_notional_micros", "Minimum trade", "usd"),
    ("max_trade_notional_micros", "Maximum trade", "usd"),
    ("max_trade_equity_bps", "Maximum trade (of equity)", "bps"),
    ("starting_cash_micros", "Starting cash per portfolio", "usd"),
    ("max_worse_than_theirs_micros", "Worse than their price by at most", "price"),
    ("max_chase_vs_mid_micros", "Worse than the mid by at most", "price"),
    ("max_spread_micros", "Maximum spread", "price"),
    ("min_depth_ratio_bps", "Depth in band ≥ target ×", "ratio"),
    ("allow_partial_fills", "Allow partial fills", "bool"),
    ("decision_delay_ms", "Decision delay after the window", "ms"),
    ("decision_jitter_ms", "Decision jitter (up to)", "ms"),
    ("group_window_ms", "Grouping window", "ms"),
    ("no_open_before_close_s", "No opens this close to the market's end", "s"),
    ("max_signal_age_s", "No opens for signals older than", "s"),
    ("max_total_exposure_bps", "Total exposure cap (of equity)", "bps"),
    ("max_market_exposure_bps", "Per-market exposure cap", "bps"),
    ("max_user_exposure_bps", "Per-user exposure cap", "bps"),
    ("daily_loss_limit_bps", "Daily loss breaker", "bps"),
    ("weekly_loss_limit_bps", "Weekly loss breaker", "bps"),
    ("max_drawdown_bps", "Drawdown breaker", "bps"),
    ("take_profit_bps", "Exit: take profit at + (of average cost; 0 = off)", "bps"),
    ("stop_loss_bps", "Exit: stop loss at − (of average cost; 0 = off)", "bps"),
    ("exit_before_close_s", "Exit this close to the market's end (0 = off)", "s"),
    ("max_hold_s", "Exit after holding this long (0 = off)", "s"),
)
assert {f for f, _, _ in FIELDS} == set(copy_config.GUARDRAIL_FIELDS) | set(
    copy_config.SIZING_FIELDS
), "every config field has a row on the config page"

# What each setting does, in plain words, and the skip reasons it causes (SPEC §5).
HELP: dict[str, tuple[str, tuple[str, ...]]] = {
    "copy_pct_bps": ("How much of each leader trade's notional a copy buys or sells.", ()),
    "min_trade_notional_micros": (
        "A copy smaller than this is not placed; an open needs at least this much cash.",
        ("BELOW_MIN_NOTIONAL", "INSUFFICIENT_CASH"),
    ),
    "max_trade_notional_micros": ("No single copy is larger than this.", ()),
    "max_trade_equity_bps": ("No single copy is larger than this share of equity.", ()),
    "starting_cash_micros": ("What each simulated portfolio starts with.", ()),
    "max_worse_than_theirs_micros": (
        "Never pay more (or sell for less) than the leader by more than this.",
        ("PRICE_WORSE_THAN_THEIRS",),
    ),
    "max_chase_vs_mid_micros": (
        "Never trade further than this from the mid at decision.",
        ("CHASE_VS_MID",),
    ),
    "max_spread_micros": ("Skip when the book's spread is wider than this.", ("SPREAD_TOO_WIDE",)),
    "min_depth_ratio_bps": (
        "Skip unless the book within the price bound holds this multiple of the order.",
        ("INSUFFICIENT_DEPTH",),
    ),
    "allow_partial_fills": (
        "Take what the book holds within the bound, instead of all or nothing.",
        ("NO_LIQUIDITY_WITHIN_BOUNDS",),
    ),
    "decision_delay_ms": ("How long after a group closes the copy is decided (latency).", ()),
    "decision_jitter_ms": ("A random extra delay, up to this, per group.", ()),
    "group_window_ms": ("Leader fills this close together are copied as one order.", ()),
    "no_open_before_close_s": (
        "No new positions this close to a market's end.",
        ("MARKET_CLOSING",),
    ),
    "max_signal_age_s": (
        "No new positions from leader fills older than this when seen.",
        ("SIGNAL_TOO_OLD",),
    ),
    "max_total_exposure_bps": (
        "Open positions may not exceed this share of equity.",
        ("RISK_CAP_TOTAL",),
    ),
    "max_market_exposure_bps": (
        "Exposure to one market may not exceed this share of equity.",
        ("RISK_CAP_MARKET",),
    ),
    "max_user_exposure_bps": (
        "Global copy: what is copied from one leader may not exceed this share of equity.",
        ("RISK_CAP_USER",),
    ),
    "daily_loss_limit_bps": (
        "No new positions once equity is down this much since 00:00 UTC.",
        ("CIRCUIT_DAILY",),
    ),
    "weekly_loss_limit_bps": (
        "No new positions once equity is down this much since Monday 00:00 UTC.",
        ("CIRCUIT_WEEKLY",),
    ),
    "max_drawdown_bps": (
        "No new positions once equity is this far below its peak.",
        ("CIRCUIT_DRAWDOWN",),
    ),
    "take_profit_bps": (
        "Sell a position once its mark is this far above its average cost (checked every "
        "minute; through the same book walk and guardrails).",
        ("EXIT_TAKE_PROFIT",),
    ),
    "stop_loss_bps": (
        "Sell a position once its mark is this far below its average cost.",
        ("EXIT_STOP_LOSS",),
    ),
    "exit_before_close_s": (
        "Sell every position this long before its market's end.",
        ("EXIT_BEFORE_CLOSE",),
    ),
    "max_hold_s": (
        "Sell a position once it has been held this long.",
        ("EXIT_MAX_HOLD",),
    ),
}
assert set(HELP) == {f for f, _, _ in FIELDS}, "every config field has its help"
assert {c for _, codes in HELP.values() for c in codes} <= set(reasons.REASONS)


@dataclass(frozen=True)
class Override:
    user: Row
    values: dict[str, Any]  # only the overridden fields


@dataclass(frozen=True)
class ConfigContext:
    frame: common.Frame
    fields: tuple[tuple[str, str, str], ...]
    base: dict[str, Any]
    guardrail_id: int | None
    sizing_id: int | None
    overrides: list[Override]
    users: list[Row]
    blacklisted: list[Row]
    audit: list[Row]
    tests: list[Row]
    skips_24h: dict[str, int]  # reason code → attempts it skipped in the last 24 h
    help: dict[str, tuple[str, tuple[str, ...]]]

    def changes(self, row: Row) -> list[Change]:
        return audit_changes(row)


@dataclass(frozen=True)
class Change:
    """One field an audited write changed, for a person: its label, the unit the page
    shows it in ("" for a plain value), before and after (None: unset / inherit)."""

    label: str
    unit: str
    before: Any
    after: Any


_LABELS = {name: (label, unit) for name, label, unit in FIELDS}
_PLAIN = {  # the other audited fields, in words
    "paused": "Copying paused", "reason": "Reason", "blacklisted": "Blacklisted",
    "enabled": "Enabled", "copy_mode": "Copy mode", "copy_of_user_id": "Copy wallet of user",
    "label": "Label", "wallets": "Wallets", "hours": "Hours",
}  # fmt: skip


def _flat(value: Any) -> dict[str, Any]:
    """An audit row's before/after as {field: value} (a config's sit under "values" or
    "override")."""
    if not isinstance(value, dict):
        return {}
    for key in ("values", "override"):
        if isinstance(value.get(key), dict):
            return dict(value[key])
    return dict(value)


def audit_changes(row: Row) -> list[Change]:
    """What an audit row changed, field by field, in the config page's words and units
    (the fields that did not change are left out)."""
    before, after = _flat(row["before"]), _flat(row["after"])
    order = [n for n, _, _ in FIELDS] + sorted(set(before) | set(after))
    out = []
    for name in dict.fromkeys(order):
        if name not in before and name not in after:
            continue
        old, new = before.get(name), after.get(name)
        if old == new or name in ("id", "profile_wallet"):
            continue
        label, unit = _LABELS.get(name, (_PLAIN.get(name, name.replace("_", " ")), ""))
        out.append(Change(label, unit, old, new))
    return out


@dataclass(frozen=True)
class ConfigTestContext:
    frame: common.Frame
    test: Row
    labels: dict[str, str]  # user id (as in the report's sweep) → label


def _values(cfg: copy_config.Config) -> dict[str, Any]:
    return {f: getattr(cfg, f) for f, _, _ in FIELDS} | {
        "guardrail_id": cfg.guardrail_id,
        "sizing_id": cfg.sizing_id,
    }


def _overrides(conn: db.Conn, users: list[Row]) -> list[Override]:
    """Each user's overridden fields (the newest USER rows' non-NULL values)."""
    rows: dict[int, dict[str, Any]] = {}
    for latest, names in zip(
        copy_configs.latest_rows(conn),
        (copy_config.GUARDRAIL_FIELDS, copy_config.SIZING_FIELDS),
        strict=True,
    ):
        for r in latest:
            if r["scope"] == "USER":
                mine = rows.setdefault(r["followed_user_id"], {})
                mine.update({n: r[n] for n in names if r[n] is not None})
    by_id = {u["id"]: u for u in users}
    return [
        Override(by_id[u], values) for u, values in sorted(rows.items()) if values and u in by_id
    ]


def context(conn: db.Conn, now: datetime) -> ConfigContext:
    cfg = copy_configs.load(conn).base
    users = list(
        conn.execute(
            "SELECT id, label, profile_wallet, enabled, copy_mode FROM followed_user"
            " ORDER BY label, id"
        )
    )
    skips = conn.execute(
        """SELECT code, count(*) AS n FROM copy_attempt, unnest(reason_codes) AS code
           WHERE decision = 'SKIP' AND decision_time > %(t)s GROUP BY code""",
        {"t": now - timedelta(hours=24)},
    )
    return ConfigContext(
        frame=common.frame(conn, now),
        skips_24h={r["code"]: r["n"] for r in skips},
        help=HELP,
        fields=FIELDS,
        base=_values(cfg),
        guardrail_id=cfg.guardrail_id,
        sizing_id=cfg.sizing_id,
        overrides=_overrides(conn, users),
        users=users,
        blacklisted=list(
            conn.execute(
                "SELECT condition_id, question FROM market WHERE blacklisted ORDER BY question"
            )
        ),
        audit=list(
            conn.execute("SELECT * FROM audit_log ORDER BY id DESC LIMIT %(n)s", {"n": AUDIT_ROWS})
        ),
        tests=list(
            conn.execute(
                """SELECT id, requested_at, requested_by, state, finished_at, hours, error
                   FROM config_test ORDER BY id DESC LIMIT %(n)s""",
                {"n": TEST_PAGES},
            )
        ),
    )


def test_ids(conn: db.Conn) -> list[int]:
    """The config tests that have (or will have) a page: the newest ones."""
    rows = conn.execute(
        "SELECT id FROM config_test ORDER BY id DESC LIMIT %(n)s", {"n": TEST_PAGES}
    )
    return [r["id"] for r in rows]


def test_context(conn: db.Conn, test_id: int, now: datetime) -> ConfigTestContext | None:
    row = conn.execute("SELECT * FROM config_test WHERE id = %(i)s", {"i": test_id}).fetchone()
    if row is None:
        return None
    labels = {str(r["id"]): r["label"] for r in conn.execute("SELECT id, label FROM followed_user")}
    return ConfigTestContext(frame=common.frame(conn, now), test=row, labels=labels)
