"""The bucket edges of the slippage and detect-lag histograms, and which bucket a value
falls in: the rollup counts into them and the pages draw and filter by them, so both
read them here."""

SLIP_EDGES_BPS = (-100, -50, -20, -10, -5, 0, 5, 10, 20, 50, 100, 200, 500)
LAG_EDGES_MS = (250, 500, 1_000, 2_000, 3_000, 5_000, 10_000, 30_000, 60_000, 300_000)


def bucket(value: float, edges: tuple[int, ...]) -> str:
    """Returns the histogram key of a value: the first edge ≥ it, else "inf"."""
    for edge in edges:
        if value <= edge:
            return str(edge)
    return "inf"


def slippage_bps(action: str, price: int | None, reference: int | None) -> float | None:
    """How much worse than `reference` we traded, in bps (negative = better)."""
    if price is None or not reference:
        return None
    worse = price - reference if action == "BUY" else reference - price
    return worse * 10_000 / reference
