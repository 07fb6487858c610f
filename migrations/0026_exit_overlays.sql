-- SPEC §12 / issue 20: exit overlays, per portfolio, off by default (0 = off). Global in
-- the GLOBAL guardrail row, overridable per user (NULL inherits, 0 turns one off):
-- take profit at +take_profit_bps of the average cost, stop loss at −stop_loss_bps,
-- exit exit_before_close_s before the market's end, exit after max_hold_s held.
-- functions.exits checks them every 60 s on the marks and records the exits as SELL
-- copy attempts (group key exit:...) through the same book walk and guardrails.
ALTER TABLE guardrail_config
    ADD COLUMN take_profit_bps integer CHECK (take_profit_bps >= 0),
    ADD COLUMN stop_loss_bps integer CHECK (stop_loss_bps BETWEEN 0 AND 10000),
    ADD COLUMN exit_before_close_s integer CHECK (exit_before_close_s >= 0),
    ADD COLUMN max_hold_s integer CHECK (max_hold_s >= 0);
UPDATE guardrail_config
SET take_profit_bps = 0, stop_loss_bps = 0, exit_before_close_s = 0, max_hold_s = 0
WHERE scope = 'GLOBAL';
ALTER TABLE guardrail_config ADD CONSTRAINT guardrail_config_global_exits CHECK (
    scope = 'USER' OR (take_profit_bps IS NOT NULL AND stop_loss_bps IS NOT NULL
        AND exit_before_close_s IS NOT NULL AND max_hold_s IS NOT NULL));

-- The holding time starts when a position opened (from zero, or flipped side), kept by
-- the one fold. The fold's saved state is derived, never the ledger: it is emptied here
-- and the snapshot job's next run refolds it from the ledger (as 0020 did).
ALTER TABLE portfolio_position ADD COLUMN opened_at timestamptz;
TRUNCATE portfolio_position, portfolio_state;
DELETE FROM system_checkpoint WHERE name = 'snapshot.ledger' AND followed_user_id IS NULL;
