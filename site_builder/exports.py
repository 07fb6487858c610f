"""CSV downloads of the pages' tables (`public/csv/*.csv`), written with their page from
the same context, so a download holds exactly the numbers the page shows: amounts and
prices as plain decimals (USDC and probabilities, not micros), times in ISO 8601 UTC,
one header row. The links sit above each table."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from common.domain import money

Row = dict[str, Any]


def micros(value: int | None) -> str:
    """Micros as a plain decimal ("" for none): 1234500 → "1.2345"."""
    return "" if value is None else money.format_micros(value)


FORMULA = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet runs as a formula


def plain(value: Any) -> str:
    """A cell's text. Text that a spreadsheet would run as a formula (a market question
    or a label from upstream starting with "=") gets a leading apostrophe; numbers,
    times and lists of codes are written as they are."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    text = str(value)
    if isinstance(value, str) and text.startswith(FORMULA):
        try:
            Decimal(text)
        except ArithmeticError:
            return "'" + text
    return text


def table(columns: Sequence[tuple[str, Callable[[Row], Any]]], rows: Iterable[Row]) -> str:
    """The CSV text of `rows`: one column per (header, getter)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow([name for name, _ in columns])
    for r in rows:
        w.writerow([plain(get(r)) for _, get in columns])
    return out.getvalue()


def _m(key: str) -> Callable[[Row], str]:
    return lambda r: micros(r.get(key))


def _k(key: str) -> Callable[[Row], Any]:
    return lambda r: r.get(key)


ATTEMPTS = (
    ("id", _k("id")), ("decided_at", _k("decision_time")), ("user_id", _k("followed_user_id")),
    ("user", _k("label")), ("portfolio", _k("portfolio_scope")), ("action", _k("action")),
    ("condition_id", _k("condition_id")), ("market", _k("question")), ("outcome", _k("outcome")),
    ("asset_id", _k("asset_id")), ("their_price", _m("their_price_micros")),
    ("their_notional_usdc", _m("their_notional_micros")),
    ("target_usdc", _m("target_notional_micros")), ("target_shares", _m("target_share_micros")),
    ("filled_usdc", _m("filled_notional_micros")), ("filled_shares", _m("filled_share_micros")),
    ("vwap", _m("vwap_micros")), ("mid", _m("mid_micros")), ("best_bid", _m("best_bid_micros")),
    ("best_ask", _m("best_ask_micros")), ("fee_usdc", _m("fee_micros")),
    ("decision", _k("decision")), ("reasons", _k("reason_codes")),
)  # fmt: skip
FILLS = (
    ("id", _k("id")), ("event_time", _k("event_time")), ("detect_time", _k("detect_time")),
    ("source", _k("source")), ("confirmed_at", _k("confirmed_at")),
    ("user_id", _k("followed_user_id")), ("user", _k("label")),
    ("condition_id", _k("condition_id")), ("market", _k("question")), ("outcome", _k("outcome")),
    ("asset_id", _k("asset_id")), ("side", _k("side")), ("price", _m("price_micros")),
    ("shares", _m("share_micros")), ("notional_usdc", _m("usdc_notional_micros")),
    ("tx_hash", _k("tx_hash")), ("state", lambda r: r.get("reorg_state") or r.get("group_state")),
)  # fmt: skip
POSITIONS = (
    ("condition_id", _k("condition_id")), ("market", _k("question")), ("outcome", _k("outcome")),
    ("asset_id", _k("asset_id")), ("shares", _m("share_micros")), ("cost_usdc", _m("cost_micros")),
    ("mark", _m("mark_micros")), ("marked_by", _k("marked_by")),
    ("value_usdc", _m("value_micros")), ("unrealized_usdc", _m("unrealized_micros")),
    ("realized_usdc", _m("realized_micros")),
)  # fmt: skip
CLOSED = (
    ("closed_at", _k("closed_at")), ("condition_id", _k("condition_id")),
    ("market", _k("question")), ("outcome", _k("outcome")), ("asset_id", _k("asset_id")),
    ("closed_by", _k("closed_as")), ("realized_usdc", _m("realized_micros")),
)  # fmt: skip
LEADERS = (
    ("rank", lambda r: r["rank"]), ("rank_change_24h", lambda r: r["rank_change"]),
    ("user_id", lambda r: r["user"]["id"]), ("leader", lambda r: r["user"]["label"]),
    ("roi_7d", lambda r: r["roi_7d"]), ("roi_30d", lambda r: r["roi_30d"]),
    ("retention_30d", lambda r: r["retention"]),
    ("retention_exec_usdc", lambda r: micros(r["retention_sums"][0])),
    ("retention_ideal_usdc", lambda r: micros(r["retention_sums"][1])),
    ("execution_score_median", lambda r: r["score"]), ("scored", lambda r: r["scored"]),
    ("fill_rate", lambda r: r["fill_rate"]), ("slippage_p50_bps", lambda r: r["slippage_bps"]),
    ("max_drawdown_30d", lambda r: r["drawdown"]),
    ("shadow_pnl_30d_usdc", lambda r: micros(r["shadow_pnl_30d"])),
    ("attempts_30d", lambda r: r["attempts"]),
    ("half_life_s", lambda r: r["half_life_s"]), ("half_life", lambda r: r["half_life_label"]),
)  # fmt: skip
