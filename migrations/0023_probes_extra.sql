-- SPEC §11 / issue 19: `portfolio.drawdown_pct` reads each portfolio's highest equity so
-- far every 30 s (functions.metrics). Without this index that is a walk of all the
-- portfolio's snapshots (43,000 a month per portfolio: 15 s for 100 of them on the
-- 50-user benchmark); with it, the first entry of its portfolio (1 ms for all).
CREATE INDEX portfolio_snapshot_peak_idx
    ON portfolio_snapshot (portfolio_scope, followed_user_id, equity_micros DESC, bucket);
