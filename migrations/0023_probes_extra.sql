-- SPEC §11 / issue 19: `portfolio.drawdown_pct` reads each portfolio's highest equity so
-- far every 30 s (functions.metrics). Without this index that is a walk of all the
-- portfolio's snapshots (43,000 a month per portfolio: 15 s for 100 of them on the
-- 50-user benchmark); with it, the first entry of its portfolio (under 5 ms for all).
-- The global portfolio has its own (portfolio_snapshot_global_equity_idx): left out
-- here, so the pages' reads of it keep walking the indexes they walk today.
CREATE INDEX portfolio_snapshot_peak_idx
    ON portfolio_snapshot (portfolio_scope, followed_user_id, equity_micros DESC, bucket)
    WHERE followed_user_id IS NOT NULL;
