-- Dashboard reads that must not scan (issue 6 benchmarks, 50 users × 30 days):
-- the global copy's peak equity (drawdown), and the newest mark (status page; the
-- prune job will delete old marks by bucket too).
CREATE INDEX portfolio_snapshot_global_equity_idx ON portfolio_snapshot (equity_micros)
    WHERE portfolio_scope = 'EXEC_GLOBAL';
CREATE INDEX market_price_snapshot_bucket_idx ON market_price_snapshot (bucket);
-- A market page's open positions.
CREATE INDEX portfolio_position_condition_idx ON portfolio_position (condition_id)
    WHERE share_micros <> 0;
