-- The dashboard's closed positions (SPEC §5, issue 18): each position keeps the PnL it
-- has realized over its lifetimes and what last closed it and when (the entry type: TRADE_FILL
-- sold, MERGE, REDEEM, SETTLEMENT, CONVERSION), both by the one fold. The fold's saved
-- state is derived, never the ledger: it is emptied here and the snapshot job's next run
-- refolds it from the ledger (TRUNCATE waits for a snapshot run in progress).
ALTER TABLE portfolio_position
    ADD COLUMN realized_micros bigint NOT NULL DEFAULT 0,
    ADD COLUMN closed_by text CHECK (closed_by IN ('DEPOSIT', 'SEED', 'TRADE_FILL', 'MERGE',
        'SPLIT', 'REDEEM', 'CONVERSION', 'FEE', 'MARK', 'SETTLEMENT')),
    ADD COLUMN closed_at timestamptz;
TRUNCATE portfolio_position, portfolio_state;
DELETE FROM system_checkpoint WHERE name = 'snapshot.ledger' AND followed_user_id IS NULL;

-- The config page counts the skips of the last 24 hours by reason.
CREATE INDEX copy_attempt_skip_time_idx ON copy_attempt (decision_time) WHERE decision = 'SKIP';
