"""Integer micros (6 decimals) and their wire renderings."""

MICRO = 1_000_000


def text(micros: int) -> str:
    """Returns micros as a short decimal string: 470000 -> "0.47", 5000000 -> "5"."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICRO)
    if not frac:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:06d}".rstrip("0")


def num(micros: int) -> float:
    """Returns micros as a JSON number (the Data API sends floats)."""
    return micros / MICRO


def ratio(numerator: int, denominator: int) -> float:
    """Returns numerator/denominator rounded to 10 places, like the Data API's prices."""
    return round(numerator / denominator, 10) if denominator else 0.0


def mul(shares: int, price: int) -> int:
    """Returns shares × price in micros, rounded half up."""
    return (shares * price + MICRO // 2) // MICRO


def taker_fee(shares: int, price: int, rate_bps: int) -> int:
    """Returns the V2 taker fee in collateral micros: shares × rate × p × (1 − p).

    The real chain truncates to 10 micros (checked against the fixture vectors).
    """
    raw = shares * rate_bps * price * (MICRO - price)
    return raw // (10_000 * MICRO * MICRO * 10) * 10
