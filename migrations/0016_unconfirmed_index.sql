-- The chain fills the Data API has not confirmed yet: poll reads them every second of a
-- run (its quick lane, common.store.polling.Confirming) and at every run's start (Due).
-- A partial index holds only those few rows, whatever the size of trade_event.
CREATE INDEX trade_event_unconfirmed_idx ON trade_event (detect_time)
    WHERE source = 'CHAIN' AND api_source_id IS NULL AND reorg_state IS NULL;
