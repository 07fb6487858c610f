-- SPEC §12 / issue 20: detection before the block. Polymarket's real-time data service
-- (RTDS, topic activity/trades) is a third source of fills: it reports a trade when it is
-- matched, before the chain log and the Data API row. The three sightings of one fill
-- are one trade_event (common.store.rtds): the first inserts it (its detect_time is the
-- first sighting), the others confirm it; each source's sighting is kept.
--
-- source 'RTDS': inserted by an RTDS trade; rtds_source_id is that trade's identity
-- (wallet, tx, asset, side, shares, price and an ordinal), once seen; rtds_seen_at,
-- chain_seen_at and api_seen_at are when each source first reported the fill.
-- reorg_state 'UNSETTLED': an RTDS trade neither the chain nor the Data API confirmed
-- within OCULUS_RTDS_SETTLE_GRACE_S (flagged by reconcile; out of every sum).
ALTER TABLE trade_event DROP CONSTRAINT trade_event_source_check;
ALTER TABLE trade_event ADD CONSTRAINT trade_event_source_check
    CHECK (source IN ('DATA_API', 'CHAIN', 'RTDS'));
ALTER TABLE trade_event DROP CONSTRAINT trade_event_reorg_state_check;
ALTER TABLE trade_event ADD CONSTRAINT trade_event_reorg_state_check
    CHECK (reorg_state IN ('REMOVED', 'FLAGGED', 'CONTRADICTED', 'UNSETTLED'));
ALTER TABLE trade_event ADD COLUMN rtds_source_id text UNIQUE;
ALTER TABLE trade_event ADD COLUMN rtds_seen_at timestamptz;
ALTER TABLE trade_event ADD COLUMN chain_seen_at timestamptz;
ALTER TABLE trade_event ADD COLUMN api_seen_at timestamptz;

-- What was known before: a chain row was seen on chain at its detect time, a Data API
-- row by the API at its own.
UPDATE trade_event SET chain_seen_at = detect_time WHERE source = 'CHAIN';
UPDATE trade_event SET api_seen_at = detect_time WHERE source = 'DATA_API';

-- The RTDS trades no other source has confirmed yet: reconcile reads them every run.
CREATE INDEX trade_event_rtds_unsettled_idx ON trade_event (rtds_seen_at)
    WHERE rtds_source_id IS NOT NULL AND log_index IS NULL AND api_source_id IS NULL
      AND reorg_state IS NULL;
