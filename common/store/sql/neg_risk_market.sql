-- A neg-risk market a conversion named: how many questions Gamma lists for it (with no
-- gap) and the adapter's fee, and its questions' conditions and assets (`market`).

-- to_probe --
-- The neg-risk markets of pending chain conversions that Gamma was not asked about
-- since the conversion (questions can be added to a market) or in the last minute
-- (one not fully listed yet is asked again while they wait), with the adapter that
-- logged them and the index sets named (hex).
SELECT a.neg_risk_market_id AS market_id, max(a.payload->>'adapter') AS adapter,
       array_agg(DISTINCT a.index_set) AS index_sets
FROM activity_event a
LEFT JOIN neg_risk_market n ON n.market_id = a.neg_risk_market_id
WHERE a.source = 'CHAIN' AND a.shadow_applied_at IS NULL
  AND a.payload->>'adapter' ~ '^0x[0-9a-f]{40}$'
  AND (n.probed_at IS NULL OR n.probed_at < a.event_time
       OR n.probed_at < %(now)s::timestamptz - interval '1 minute')
GROUP BY a.neg_risk_market_id
ORDER BY a.neg_risk_market_id
LIMIT %(limit)s;

-- known_indices --
-- The question indices of a neg-risk market already stored.
SELECT question_index FROM market
WHERE neg_risk_market_id = %(m)s AND question_index IS NOT NULL;

-- set_question --
-- A condition found by its derived id is that question of the market, whatever Gamma's
-- own fields say (the derivation is the adapter's).
UPDATE market SET neg_risk_market_id = %(m)s, question_index = %(i)s
WHERE condition_id = %(c)s;

-- upsert --
-- What the probe found: the question count (NULL for a gap) and the fee.
INSERT INTO neg_risk_market (market_id, question_count, fee_bips, probed_at)
VALUES (%(m)s, %(n)s,
    (SELECT max(neg_risk_fee_bips) FROM market WHERE neg_risk_market_id = %(m)s), %(now)s)
ON CONFLICT (market_id) DO UPDATE SET question_count = EXCLUDED.question_count,
    fee_bips = EXCLUDED.fee_bips, probed_at = EXCLUDED.probed_at;

-- questions --
-- The given neg-risk markets with their questions, each with its outcome assets in
-- outcome order (Yes, No); a market probed with no question found has one row of NULLs.
SELECT n.market_id, n.question_count, n.fee_bips, m.question_index, m.condition_id,
       array(SELECT o.asset_id FROM outcome_asset o WHERE o.condition_id = m.condition_id
             ORDER BY o.outcome_index) AS assets
FROM neg_risk_market n
LEFT JOIN market m ON m.neg_risk_market_id = n.market_id AND m.question_index IS NOT NULL
WHERE n.market_id = ANY(%(m)s)
ORDER BY n.market_id, m.question_index;
