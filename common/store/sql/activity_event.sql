-- pending_for_user --
-- A user's SPLIT / MERGE / REDEEM / CONVERSION rows not yet applied to the shadow
-- ledger, from `since`, oldest first (records.ActivityEvent).
SELECT id, followed_user_id, activity_type, condition_id, share_micros, usdc_micros,
       event_time, tx_hash, source, detect_time, neg_risk_market_id, index_set,
       -- a chain conversion the Data API reports too: no reorg took it out
       (source = 'CHAIN' AND EXISTS (
           SELECT 1 FROM activity_event d
           WHERE d.source = 'DATA_API' AND d.activity_type = 'CONVERSION'
             AND d.followed_user_id = activity_event.followed_user_id
             AND d.tx_hash = activity_event.tx_hash)) AS confirmed,
       -- before the seed: the /positions it was seeded from may hold it already
       event_time < (SELECT seeded_at FROM followed_user u
                     WHERE u.id = activity_event.followed_user_id) AS before_seed
FROM activity_event
WHERE shadow_applied_at IS NULL AND followed_user_id = %(u)s AND event_time >= %(since)s
ORDER BY event_time, id
LIMIT %(limit)s;

-- cover_by_seed --
-- A user's unapplied activity older than the seed window: the seed's positions hold it.
UPDATE activity_event SET shadow_applied_at = %(now)s, shadow_state = 'COVERED_BY_SEED'
WHERE followed_user_id = %(u)s AND shadow_applied_at IS NULL AND event_time < %(since)s;

-- mark_state --
-- APPLIED, or NOT_APPLIED (a CONVERSION whose legs cannot be told).
UPDATE activity_event SET shadow_applied_at = %(now)s, shadow_state = %(s)s
WHERE id = ANY(%(ids)s);

-- chain_conversion --
-- A stored PositionsConverted of the chain, by its stable id (tx, market, index set,
-- amount: a re-inclusion in another block keeps it, where the log index may move).
SELECT id, shadow_state, reorg_state FROM activity_event
WHERE source = 'CHAIN' AND source_id = %(sid)s;

-- insert_chain_conversion --
-- A PositionsConverted of a followed wallet. condition_id holds the neg-risk market id
-- (a conversion spans that market's questions; no one condition is its own).
INSERT INTO activity_event (source, source_id, followed_user_id, wallet, activity_type,
    condition_id, share_micros, usdc_micros, tx_hash, event_time, detect_time, payload,
    neg_risk_market_id, index_set, log_index, block_number)
VALUES ('CHAIN', %(sid)s, %(uid)s, %(wallet)s, 'CONVERSION', %(market)s, %(amount)s, 0,
    %(tx)s, %(et)s, %(now)s, %(payload)s, %(market)s, %(index_set)s, %(li)s, %(block)s)
ON CONFLICT DO NOTHING;

-- remove_chain_conversion --
-- The log was reorged out: a conversion not yet applied ends REMOVED, and a Data API
-- row of its transaction superseded by it is pending again (it waits for the log to be
-- re-included, else ends NOT_APPLIED: uncertain); one applied stays in the shadow book,
-- flagged (uncertain_conversion shows it).
WITH c AS (
  UPDATE activity_event SET reorg_state = 'REMOVED',
      shadow_state = CASE WHEN shadow_applied_at IS NULL THEN 'REMOVED' ELSE shadow_state END,
      shadow_applied_at = coalesce(shadow_applied_at, %(now)s)
  WHERE id = %(id)s
  RETURNING followed_user_id, tx_hash, shadow_state)
UPDATE activity_event d SET shadow_state = NULL, shadow_applied_at = NULL
FROM c
WHERE c.shadow_state = 'REMOVED' AND d.source = 'DATA_API'
  AND d.activity_type = 'CONVERSION' AND d.followed_user_id = c.followed_user_id
  AND d.tx_hash = c.tx_hash AND d.shadow_state = 'SUPERSEDED';

-- restore_chain_conversion --
-- The log is back (re-included): pending again if it had ended REMOVED.
UPDATE activity_event SET reorg_state = NULL, block_number = %(block)s, log_index = %(li)s,
    shadow_applied_at = CASE WHEN shadow_state = 'REMOVED' THEN NULL ELSE shadow_applied_at END,
    shadow_state = CASE WHEN shadow_state = 'REMOVED' THEN NULL ELSE shadow_state END
WHERE id = %(id)s;

-- cover_chain_conversions --
-- A user's pending chain conversions whose Data API row the seed covered: the
-- /positions the user was seeded from holds them already.
UPDATE activity_event c SET shadow_state = 'COVERED_BY_SEED', shadow_applied_at = %(now)s
WHERE c.followed_user_id = %(u)s AND c.source = 'CHAIN' AND c.shadow_applied_at IS NULL
  AND EXISTS (SELECT 1 FROM activity_event d
              WHERE d.source = 'DATA_API' AND d.activity_type = 'CONVERSION'
                AND d.followed_user_id = c.followed_user_id AND d.tx_hash = c.tx_hash
                AND d.shadow_state = 'COVERED_BY_SEED');

-- supersede_api_conversions --
-- A user's Data API CONVERSION rows whose transaction's PositionsConverted log is
-- stored (and not reorged out): the chain's names the legs, so it is the one applied.
UPDATE activity_event a SET shadow_state = 'SUPERSEDED',
    shadow_applied_at = coalesce(a.shadow_applied_at, %(now)s)
WHERE a.followed_user_id = %(u)s AND a.source = 'DATA_API' AND a.activity_type = 'CONVERSION'
  AND (a.shadow_state IS NULL OR a.shadow_state = 'NOT_APPLIED')
  AND EXISTS (SELECT 1 FROM activity_event c
              WHERE c.source = 'CHAIN' AND c.followed_user_id = a.followed_user_id
                AND c.tx_hash = a.tx_hash AND c.reorg_state IS NULL);
