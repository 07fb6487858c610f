-- Neg-risk conversions from the chain (SPEC §6): the NegRiskAdapter's
-- PositionsConverted log of a followed wallet is stored as an activity_event with source
-- CHAIN, and names the adapter's market and the index set of the questions converted.
ALTER TABLE activity_event
    ADD COLUMN neg_risk_market_id text CHECK (neg_risk_market_id ~ '^0x[0-9a-f]{64}$'),
    -- the index set as hex (a uint256 bitmap: bit i = question i)
    ADD COLUMN index_set text CHECK (index_set ~ '^0x[1-9a-f][0-9a-f]{0,63}$'),
    ADD COLUMN log_index integer,
    ADD COLUMN block_number bigint,
    -- REMOVED: the log was reorged out (a later re-inclusion clears it).
    ADD COLUMN reorg_state text CHECK (reorg_state IN ('REMOVED'));
CREATE INDEX activity_event_neg_risk_idx ON activity_event (followed_user_id, neg_risk_market_id)
    WHERE neg_risk_market_id IS NOT NULL;
ALTER TABLE activity_event ADD CONSTRAINT activity_event_chain_conversion CHECK (
    source <> 'CHAIN' OR (activity_type = 'CONVERSION'
        AND neg_risk_market_id IS NOT NULL AND index_set IS NOT NULL));

-- Two more ends of an activity row: SUPERSEDED (a Data API CONVERSION row whose chain
-- log is applied instead: the chain's names the legs) and REMOVED (reorged out before
-- it was applied).
ALTER TABLE activity_event DROP CONSTRAINT activity_event_shadow_state_check;
ALTER TABLE activity_event ADD CONSTRAINT activity_event_shadow_state_check
    CHECK (shadow_state IN ('APPLIED', 'COVERED_BY_SEED', 'NOT_APPLIED', 'SUPERSEDED', 'REMOVED'));

-- What is known of each neg-risk market a conversion named, from Gamma: how many
-- questions it has (0 … n−1 found with no gap; NULL when a gap leaves it unknown) and
-- the adapter's fee. probed_at: when Gamma was last asked (a conversion newer than that
-- asks again: questions can be added to a market).
CREATE TABLE neg_risk_market (
    market_id      text PRIMARY KEY CHECK (market_id ~ '^0x[0-9a-f]{64}$'),
    question_count integer CHECK (question_count BETWEEN 0 AND 256),
    fee_bips       integer CHECK (fee_bips BETWEEN 0 AND 10000),
    probed_at      timestamptz NOT NULL
);

-- Gamma's negRiskFeeBips of a neg-risk question's market.
ALTER TABLE market ADD COLUMN neg_risk_fee_bips integer
    CHECK (neg_risk_fee_bips BETWEEN 0 AND 10000);

-- The conversions that leave a user's shadow book uncertain (SPEC §6), one definition
-- for reconcile and the pages: not applied (no chain log to name the legs, or legs that
-- could not be told), or applied and then reorged out of the chain.
CREATE VIEW uncertain_conversion AS
SELECT id, followed_user_id, source, event_time, tx_hash,
       CASE WHEN shadow_state = 'NOT_APPLIED' THEN 'not applied' ELSE 'reorged out' END AS why
FROM activity_event
WHERE activity_type = 'CONVERSION'
  AND (shadow_state = 'NOT_APPLIED' OR (shadow_state = 'APPLIED' AND reorg_state = 'REMOVED'));
