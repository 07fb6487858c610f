"""Exact conversion of wire amounts to integer micros (6 decimals, the CLOB's own unit).

Every value goes through `Decimal` built from the value's shortest text form, never
through a float product: `to_micros(0.709999959)` is 709999 + rounding, not whatever
`0.709999959 * 1e6` happens to be. Rounding is half-to-even (banker's rounding) at the
sixth decimal, so repeated conversions do not drift in one direction; values with six or
fewer decimals are exact.
"""

from __future__ import annotations

import math
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import NewType

# Three kinds of integer micros that must not be mixed up: mypy keeps them apart in
# every signature that names them (arithmetic on them gives a plain int, so a sum is
# re-typed on purpose where it is stored). Free at run time.
Usdc = NewType("Usdc", int)  # collateral: cash, notional, fees, cost, PnL
Shares = NewType("Shares", int)  # outcome tokens (a complete set is one of each)
Price = NewType("Price", int)  # USDC per share, 0 … 1_000_000

MICROS = 1_000_000
_QUANTUM = Decimal(1)
INT64_MAX = 2**63 - 1  # a bigint column: every amount stored must fit


class AmountError(ValueError):
    """A value that is not a finite amount."""


def to_decimal(value: str | int | float | Decimal) -> Decimal:
    """Returns `value` as a finite Decimal. Floats go through repr(), their shortest
    round-tripping text, so 0.1 is Decimal('0.1'). Raises AmountError."""
    if isinstance(value, bool):
        raise AmountError(f"not an amount: {value!r:.40}")
    try:
        if isinstance(value, float):
            if not math.isfinite(value):
                raise AmountError(f"not a finite amount: {value!r:.40}")
            result = Decimal(repr(value))
        elif isinstance(value, str):
            text = value.strip()
            if not text:
                raise AmountError("empty amount")
            result = Decimal(text)
        else:
            result = Decimal(value)
    except InvalidOperation as exc:
        raise AmountError(f"not an amount: {value!r:.40}") from exc
    if not result.is_finite():
        raise AmountError(f"not a finite amount: {value!r:.40}")
    return result


def to_micros(value: str | int | float | Decimal) -> int:
    """Returns `value` (units) in integer micros, rounded half-to-even. Raises
    AmountError for what is not a finite amount or does not fit a bigint (1e300 would
    otherwise raise decimal's InvalidOperation, which no boundary model catches)."""
    amount = to_decimal(value)
    if amount and amount.adjusted() > 18:  # > 10^19 units: far past a bigint of micros
        raise AmountError(f"amount out of range: {value!r:.40}")
    try:
        micros = int((amount * MICROS).quantize(_QUANTUM, rounding=ROUND_HALF_EVEN))
    except InvalidOperation as exc:
        raise AmountError(f"amount out of range: {value!r:.40}") from exc
    if abs(micros) > INT64_MAX:
        raise AmountError(f"amount out of range: {value!r:.40}")
    return micros


def from_micros(micros: int) -> Decimal:
    """Returns micros as an exact Decimal of units."""
    return Decimal(micros) / MICROS


def format_micros(micros: int, places: int = 6) -> str:
    """Returns micros as a plain decimal string ('0.47', '12.5'), trailing zeros dropped."""
    text = f"{from_micros(micros):.{places}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _div_half_even(a: int, b: int) -> int:
    """Returns a ÷ b rounded half-to-even, in integers only (the hot path of equity)."""
    if b == 0:
        raise AmountError("division by zero")
    if b < 0:
        a, b = -a, -b
    q, r = divmod(a, b)  # floor division: 0 <= r < b
    if 2 * r > b or (2 * r == b and q % 2):
        q += 1
    return q


def mul_micros(a: int, b: int) -> int:
    """Returns a × b for two micro amounts (e.g. price × shares), rounded half-to-even."""
    return _div_half_even(a * b, MICROS)


def div_round(a: int, b: int) -> int:
    """Returns a ÷ b for integers, rounded half-to-even (e.g. a mid of two prices)."""
    return _div_half_even(a, b)


def div_micros_floor(a: int, b: int) -> int:
    """Returns a ÷ b in micros, rounded down (e.g. notional ÷ price = shares)."""
    if b <= 0:
        raise AmountError(f"division by a non-positive amount: {b}")
    return int((Decimal(a) * MICROS / Decimal(b)).to_integral_value(rounding=ROUND_FLOOR))


def price_micros(collateral_micros: int, share_micros: int) -> int:
    """Returns the price of a fill (collateral ÷ shares) in micros, half-to-even."""
    if share_micros <= 0:
        raise AmountError(f"price of a fill with no shares: {share_micros}")
    return int(
        (Decimal(collateral_micros) * MICROS / Decimal(share_micros)).quantize(
            _QUANTUM, rounding=ROUND_HALF_EVEN
        )
    )


FEE_QUANTUM = 10  # the chain charges fees in whole 0.00001 USDC (checked on real vectors)


def taker_fee(share_micros: int, price: int, rate_micros: int, exponent: int = 1) -> int:
    """Returns Polymarket's taker fee in collateral micros for a fill of `share_micros`
    at `price`: shares × rate × (p × (1 − p))^exponent, truncated to 10 micros."""
    if share_micros < 0 or not 0 <= price <= MICROS or rate_micros < 0 or exponent < 0:
        raise AmountError(f"bad fee inputs: {share_micros}, {price}, {rate_micros}, {exponent}")
    curve: int = (price * (MICROS - price)) ** exponent
    scale: int = MICROS * (MICROS * MICROS) ** exponent
    raw = share_micros * rate_micros * curve // scale
    return raw // FEE_QUANTUM * FEE_QUANTUM
