"""The bucket edges of the slippage and detect-lag histograms: the rollup counts into
them and the pages draw them, so both read them here."""

SLIP_EDGES_BPS = (-100, -50, -20, -10, -5, 0, 5, 10, 20, 50, 100, 200, 500)
LAG_EDGES_MS = (250, 500, 1_000, 2_000, 3_000, 5_000, 10_000, 30_000, 60_000, 300_000)
