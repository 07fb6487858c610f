"""Ground truth: every canonical leader event up to a time, and what it adds up to."""

from typing import Any

_FIELDS = (
    "wallet", "type", "role", "tx_hash", "log_index", "block_number", "asset", "condition_id",
    "side", "price_micros", "shares_micros", "usdc_micros", "fee_micros", "deltas",
    "cash_delta_micros",
)  # fmt: skip


def build(
    recs: list[dict[str, Any]], wallets: list[str], anchor_ms: int, until_ms: int | None
) -> dict[str, Any]:
    """Returns {anchor_ms, until_ms, events, leaders}; t_ms are absolute (anchor + offset).
    Events at or before until_ms (all of them when None) are included."""
    events = []
    summary = {w: {"positions": {}, "cash_delta_micros": 0, "event_count": 0} for w in wallets}
    for rec in recs:
        t_abs = anchor_ms + rec["t_ms"]
        if until_ms is not None and t_abs > until_ms:
            break
        event = {name: rec[name] for name in _FIELDS}
        event["t_ms"] = t_abs
        events.append(event)
        mine = summary[rec["wallet"]]
        mine["cash_delta_micros"] += rec["cash_delta_micros"]
        mine["event_count"] += 1
        for asset, delta in rec["deltas"].items():
            mine["positions"][asset] = mine["positions"].get(asset, 0) + delta
    for mine in summary.values():
        mine["positions"] = {a: n for a, n in sorted(mine["positions"].items()) if n}
    return {"anchor_ms": anchor_ms, "until_ms": until_ms, "events": events, "leaders": summary}
