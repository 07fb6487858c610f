-- Hardening (issue 13).
--
-- A Data API fill the chain contradicts: its transaction's logs for the wallet are
-- stored and none is left for it (an upstream repeating a row). Like a reorged fill it
-- leaves every sum (reorg_state IS NOT NULL); reconcile reverses its shadow entries if
-- they were already applied.
ALTER TABLE trade_event DROP CONSTRAINT trade_event_reorg_state_check;
ALTER TABLE trade_event ADD CONSTRAINT trade_event_reorg_state_check
    CHECK (reorg_state IN ('REMOVED', 'FLAGGED', 'CONTRADICTED'));

-- Quarantine keeps at most a prefix of a payload: payload_sha256 and payload_bytes are
-- of the whole. Rows are pruned after OCULUS_PRUNE_QUARANTINE_DAYS, and a source that
-- floods is rate-limited (the payloads past the limit are counted on one row a minute).
ALTER TABLE quarantine ADD COLUMN payload_bytes bigint;
CREATE INDEX quarantine_source_first_seen_idx ON quarantine (source, first_seen_at);
CREATE INDEX quarantine_last_seen_idx ON quarantine (last_seen_at);
