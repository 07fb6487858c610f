-- Copy truth (SPEC §4, §6 revised).
-- A reduction records the leader's position it was sized against.
ALTER TABLE copy_attempt ADD COLUMN their_position_micros bigint;

-- The leader's position before a group is read from their events per asset.
CREATE INDEX trade_event_user_asset_time_idx ON trade_event (followed_user_id, asset_id, event_time);

-- SPLIT / MERGE / REDEEM legs now carry cost by the outcomes' marks: the snapshot job's
-- saved fold (derived state, never the ledger) is refolded from the ledger under the
-- new rule by its next run. History rows are recomputed with `snapshot --rebuild`.
-- TRUNCATE waits for a snapshot run in progress (its lock conflicts with any writer).
TRUNCATE portfolio_position, portfolio_state;
DELETE FROM system_checkpoint WHERE name = 'snapshot.ledger' AND followed_user_id IS NULL;

-- The pages' price of a held position when they have no mark for it: the last fill
-- price, else the average cost per share (a SPLIT leg opens at its allocated cost), so
-- no held position shows as worth nothing for want of a price.
CREATE FUNCTION held_price(last_price bigint, cost bigint, shares bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT coalesce(last_price, cost * 1000000 / nullif(shares, 0), 0) $$;

-- A neg-risk market's questions (what a CONVERSION's index set names): the adapter's
-- market id and each question's index in it, from Gamma.
ALTER TABLE market ADD COLUMN neg_risk_market_id text
    CHECK (neg_risk_market_id ~ '^0x[0-9a-f]{64}$'),
    ADD COLUMN question_index integer CHECK (question_index BETWEEN 0 AND 255);
CREATE INDEX market_neg_risk_idx ON market (neg_risk_market_id, question_index)
    WHERE neg_risk_market_id IS NOT NULL;
