-- Ingestion bookkeeping (issue 3): which events the shadow ledger has applied, and the
-- look-ups that matching a chain log to its Data API row needs.

-- shadow_state, set together with shadow_applied_at: APPLIED (ledger entries exist),
-- COVERED_BY_SEED (the fill was already in the /positions the user was seeded from), or
-- NOT_APPLIED (e.g. a CONVERSION whose neg-risk legs the Data API row does not carry).
ALTER TABLE trade_event ADD COLUMN shadow_applied_at timestamptz;
ALTER TABLE trade_event ADD COLUMN shadow_state text
    CHECK (shadow_state IN ('APPLIED', 'COVERED_BY_SEED', 'NOT_APPLIED'));
ALTER TABLE activity_event ADD COLUMN shadow_applied_at timestamptz;
ALTER TABLE activity_event ADD COLUMN shadow_state text
    CHECK (shadow_state IN ('APPLIED', 'COVERED_BY_SEED', 'NOT_APPLIED'));

CREATE INDEX trade_event_shadow_pending_idx ON trade_event (followed_user_id, event_time)
    WHERE shadow_applied_at IS NULL;
CREATE INDEX activity_event_shadow_pending_idx ON activity_event (followed_user_id, event_time)
    WHERE shadow_applied_at IS NULL;
CREATE INDEX trade_event_match_idx ON trade_event (wallet, tx_hash, asset_id, side);
CREATE INDEX activity_event_tx_idx ON activity_event (tx_hash);
CREATE INDEX ledger_entry_ref_idx ON ledger_entry (ref_id);
