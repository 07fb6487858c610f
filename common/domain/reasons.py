"""Every reason a copy attempt may be skipped (SPEC §5), in one place. The codes are
stable: stored in `copy_attempt.reason_codes`, filtered on by the dashboard, counted by
the what-if. README.md's reason-code table is generated from this list (a test keeps
them in step), and every code has a table-driven test that makes it happen.

"Opens" are BUY and SPLIT; "reductions" are SELL and MERGE. The lifecycle, risk and
circuit-breaker rules stop opens only: a reduction is always allowed to go.
"""

from __future__ import annotations

REASONS: dict[str, str] = {
    # The operator's switches.
    "PAUSED": "The global pause is on: nothing is copied.",
    "USER_DISABLED": "The followed user is disabled or removed.",
    "MODE_PAUSED": "The user's copy mode is PAUSED.",
    "MODE_BUY_ONLY": "The user's copy mode is BUY_ONLY and this is a reduction.",
    "MODE_SELL_ONLY": "The user's copy mode is SELL_ONLY and this is an open.",
    "BLACKLISTED": "The market is blacklisted: no new opens in it.",
    # The market and the signal.
    "UNKNOWN_MARKET": "The market's metadata (assets, close time, fees) is not known.",
    "MARKET_CLOSING": "Open with less than the configured time (30 min) to the market's "
    "close, or after it closed.",
    "SIGNAL_TOO_OLD": "Open detected longer after the leader's fill than max_signal_age_s "
    "(e.g. found by a backfill after downtime).",
    # Sizing and the portfolio.
    "BELOW_MIN_NOTIONAL": "The largest allowed trade (min of the max notional and the "
    "share of equity) is below the minimum trade notional.",
    "NO_POSITION": "A SELL or MERGE with nothing (or no complete set) held to reduce.",
    "BELOW_MIN_ORDER_SIZE": "An open smaller than the book's min_order_size (shares), or "
    "an exit below it when the position is smaller than that minimum (an exit below it is "
    "raised to it when the position allows), or a reduction whose fraction of our "
    "position rounds to nothing.",
    "INSUFFICIENT_CASH": "An open with less cash than the minimum trade notional (after fees).",
    # Risk.
    "RISK_CAP_TOTAL": "Total exposure would exceed its share of equity (70%) by more than "
    "a minimum trade.",
    "RISK_CAP_MARKET": "Exposure to this market would exceed its share of equity (5%).",
    "RISK_CAP_USER": "Global portfolio: exposure copied from this user would exceed its "
    "share of equity (20%).",
    "RISK_CAP_GLOBAL": "Global portfolio: a risk cap blocked this group (always with the "
    "RISK_CAP_* code of the cap).",
    "CIRCUIT_DAILY": "Equity is down more than the daily loss limit (3%) since the start of "
    "the UTC day: no new opens.",
    "CIRCUIT_WEEKLY": "Equity is down more than the weekly loss limit (8%) since the start "
    "of the ISO week (Monday, UTC): no new opens.",
    "CIRCUIT_DRAWDOWN": "Equity is more than the max drawdown (12%) below its peak: no new opens.",
    # The book at decision time.
    "NO_BOOK": "No order book for the asset at decision time (404, empty side, or the "
    "fetch failed after retries).",
    "SPREAD_TOO_WIDE": "Best ask − best bid is wider than the allowed spread (0.02).",
    "PRICE_WORSE_THAN_THEIRS": "The best level is already worse than the leader's price by "
    "more than the allowed amount (0.01).",
    "CHASE_VS_MID": "The best level is further from the mid than the allowed chase (0.015).",
    "INSUFFICIENT_DEPTH": "Notional inside the allowed price band is below the depth ratio "
    "(1.25) × the target, or a partial fill when partial fills are off.",
    "NO_LIQUIDITY_WITHIN_BOUNDS": "Nothing could be filled without the VWAP crossing the "
    "price bound.",
    # Exit overlays (SPEC §12): why functions.exits sold a position. The code is first on
    # the exit's attempt whether it EXECUTEd (its only code) or was SKIPped (followed by
    # the guardrails' codes that stopped it).
    "EXIT_STOP_LOSS": "Exit overlay: the mark fell to the stop loss (stop_loss_bps below "
    "the average cost) or lower. Wins over the other exit codes.",
    "EXIT_TAKE_PROFIT": "Exit overlay: the mark rose to the take profit (take_profit_bps "
    "above the average cost) or higher.",
    "EXIT_BEFORE_CLOSE": "Exit overlay: the market ends within exit_before_close_s.",
    "EXIT_MAX_HOLD": "Exit overlay: the position has been held max_hold_s or longer.",
}

EXITS = ("EXIT_STOP_LOSS", "EXIT_TAKE_PROFIT", "EXIT_BEFORE_CLOSE", "EXIT_MAX_HOLD")


def describe(code: str) -> str:
    """Returns the code's one-line meaning (KeyError for an unknown code)."""
    return REASONS[code]
