-- The attribution of each BUY/SELL copy attempt at its asset's mark, and the execution
-- score of each EXECUTE (SPEC §10; functions/score.py, common/domain/attribution.py).

-- fill_ideal --
-- T0 of attempts decided before the copy engine recorded it, from their stored fields:
-- opens from the copy percent their configs held (the engine's integer floors), exits
-- from their target (an exit is never clamped but for the book's minimum order, which
-- is not recoverable here).
UPDATE copy_attempt a SET ideal_share_micros = CASE
    WHEN a.action = 'BUY' THEN
        (a.their_notional_micros * coalesce(o.copy_pct_bps, g.copy_pct_bps, 100) / 10000)
        * 1000000 / greatest(1, coalesce(a.their_price_micros, 0))
    WHEN a.action = 'SPLIT' THEN
        a.their_notional_micros * coalesce(o.copy_pct_bps, g.copy_pct_bps, 100) / 10000
    ELSE a.target_share_micros END
FROM copy_attempt x
LEFT JOIN copy_sizing_config g ON g.id = x.copy_sizing_config_id
LEFT JOIN copy_sizing_config o ON o.id = x.sizing_override_id
WHERE x.id = a.id AND a.ideal_share_micros IS NULL;

-- due --
-- The ids of the BUY/SELL attempts whose attribution is missing, or
-- not final and marked at another price than the asset's mark now, with that mark X
-- (the function `asset_mark`, migration 0019): the payout once the market resolved
-- (final), else the newest stored mark if it was observed since `fresh` (an older one
-- is no mark: the row waits). Ordered by id.
-- An asset is looked at row by row only when its newest attempt is due: a run writes
-- every due row of an asset at one mark, by ascending id, so if the newest row holds the
-- mark now, so do the older ones (a run cut short leaves its newest rows unwritten). A
-- steady minute thus reads one attempt per asset, not every attempt of the month.
WITH assets AS (
  SELECT DISTINCT asset_id FROM copy_attempt
  WHERE action IN ('BUY', 'SELL') AND asset_id IS NOT NULL),
x AS (
  SELECT s.asset_id, k.* FROM assets s CROSS JOIN LATERAL asset_mark(s.asset_id) k
  WHERE k.mark IS NOT NULL AND (k.final OR k.marked_at >= %(fresh)s)),
stale AS (
  SELECT x.* FROM x
  CROSS JOIN LATERAL (
    SELECT a.id FROM copy_attempt a
    WHERE a.asset_id = x.asset_id AND a.action IN ('BUY', 'SELL')
    ORDER BY a.id DESC LIMIT 1) newest
  LEFT JOIN copy_attribution c ON c.copy_attempt_id = newest.id
  WHERE c.copy_attempt_id IS NULL OR (NOT c.final AND (c.mark_micros <> x.mark OR x.final)))
SELECT a.id, x.mark, x.marked_at, x.final
FROM stale x
JOIN copy_attempt a ON a.asset_id = x.asset_id AND a.action IN ('BUY', 'SELL')
LEFT JOIN copy_attribution c ON c.copy_attempt_id = a.id
WHERE a.copy_group_id IS NOT NULL
  AND (c.copy_attempt_id IS NULL OR (NOT c.final AND (c.mark_micros <> x.mark OR x.final)))
ORDER BY a.id;

-- waiting --
-- BUY/SELL attempts with no attribution yet (their asset has no fresh mark): two counts,
-- every attribution row being one attempt's. (An attempt with no asset or no group, which
-- no copy engine writes, is left out here as in `due`.)
SELECT (SELECT count(*) FROM copy_attempt WHERE action IN ('BUY', 'SELL')
          AND asset_id IS NOT NULL AND copy_group_id IS NOT NULL)
     - (SELECT count(*) FROM copy_attribution) AS n;

-- upsert_rows --
-- The rows in the temp table `score_copy_attribution` into copy_attribution; a final one is never
-- changed again.
INSERT INTO copy_attribution SELECT * FROM score_copy_attribution
ON CONFLICT (copy_attempt_id) DO UPDATE SET
    mark_micros = EXCLUDED.mark_micros, ideal_micros = EXCLUDED.ideal_micros,
    exec_micros = EXCLUDED.exec_micros, sizing_micros = EXCLUDED.sizing_micros,
    skip_micros = EXCLUDED.skip_micros, skip_reason = EXCLUDED.skip_reason,
    unfilled_micros = EXCLUDED.unfilled_micros, latency_micros = EXCLUDED.latency_micros,
    slippage_micros = EXCLUDED.slippage_micros, fee_micros = EXCLUDED.fee_micros,
    marked_at = EXCLUDED.marked_at, final = EXCLUDED.final, updated_at = EXCLUDED.updated_at
WHERE NOT copy_attribution.final;

-- unscored --
-- The ids of the EXECUTE BUY/SELL attempts after id `after` that filled with no score of
-- version `v` yet (an attempt is whole when written: the job looks again only at the
-- ones past what its last run saw, less a margin).
SELECT a.id FROM copy_attempt a
LEFT JOIN execution_score s ON s.copy_attempt_id = a.id AND s.version = %(v)s
WHERE a.id > %(after)s
  AND a.decision = 'EXECUTE' AND a.action IN ('BUY', 'SELL') AND a.copy_group_id IS NOT NULL
  AND a.filled_share_micros > 0 AND s.copy_attempt_id IS NULL
ORDER BY a.id;

-- newest_attempt --
-- The newest attempt's id (what a scoring run has seen).
SELECT coalesce(max(id), 0) AS id FROM copy_attempt;

-- attempts --
-- What attribution and the score read of the attempts `ids` (and their groups).
SELECT a.id, a.action, a.decision, a.reason_codes, a.ideal_share_micros,
       a.target_share_micros, a.target_notional_micros, a.filled_share_micros,
       a.filled_notional_micros, a.their_price_micros, a.vwap_micros, a.mid_micros,
       a.best_bid_micros, a.best_ask_micros, a.depth_in_band_micros, a.fee_micros,
       a.decision_time, g.window_start
FROM copy_attempt a
JOIN copy_group g ON g.id = a.copy_group_id
WHERE a.id = ANY(%(ids)s::bigint[])
ORDER BY a.id;

-- insert_scores --
-- The scores in the temp table `score_execution_score`; an existing one stays.
INSERT INTO execution_score SELECT * FROM score_execution_score
ON CONFLICT (copy_attempt_id, version) DO NOTHING;

-- retention --
-- One portfolio's BUY/SELL attempts decided since each window's start (`d1`, `d7`,
-- `d30`): how many, how many attributed, and the sums of the attribution (SPEC §10).
-- `u` NULL: the global portfolio (scope EXEC_GLOBAL, every user).
SELECT w.span,
       count(a.id) AS attempts, count(c.copy_attempt_id) AS n,
       coalesce(sum(c.ideal_micros), 0)::bigint AS ideal,
       coalesce(sum(c.exec_micros), 0)::bigint AS exec,
       coalesce(sum(c.sizing_micros), 0)::bigint AS sizing,
       coalesce(sum(c.unfilled_micros), 0)::bigint AS unfilled,
       coalesce(sum(c.latency_micros), 0)::bigint AS latency,
       coalesce(sum(c.slippage_micros), 0)::bigint AS slippage,
       coalesce(sum(c.fee_micros), 0)::bigint AS fee
FROM (VALUES ('24h', %(d1)s::timestamptz), ('7d', %(d7)s), ('30d', %(d30)s)) w(span, since)
LEFT JOIN copy_attempt a ON a.decision_time >= w.since
  AND a.portfolio_scope = %(scope)s
  AND (%(u)s::bigint IS NULL OR a.followed_user_id = %(u)s)
  AND a.action IN ('BUY', 'SELL')
LEFT JOIN copy_attribution c ON c.copy_attempt_id = a.id
GROUP BY w.span;

-- retention_skips --
-- The skip losses of those attempts by first reason code, per window.
SELECT w.span, c.skip_reason, sum(c.skip_micros)::bigint AS skip
FROM (VALUES ('24h', %(d1)s::timestamptz), ('7d', %(d7)s), ('30d', %(d30)s)) w(span, since)
JOIN copy_attempt a ON a.decision_time >= w.since
  AND a.portfolio_scope = %(scope)s
  AND (%(u)s::bigint IS NULL OR a.followed_user_id = %(u)s)
  AND a.action IN ('BUY', 'SELL') AND a.decision = 'SKIP'
JOIN copy_attribution c ON c.copy_attempt_id = a.id
GROUP BY w.span, c.skip_reason;

-- totals --
-- Σ ideal and Σ exec per portfolio (own copies by user, the global one as user NULL) over
-- every attributed BUY/SELL attempt: the ideal copy's PnL now.
SELECT a.portfolio_scope,
       CASE WHEN a.portfolio_scope = 'EXEC_USER' THEN a.followed_user_id END AS followed_user_id,
       sum(c.ideal_micros)::bigint AS ideal, sum(c.exec_micros)::bigint AS exec,
       count(*)::int AS attempts
FROM copy_attribution c JOIN copy_attempt a ON a.id = c.copy_attempt_id
WHERE %(u)s::bigint IS NULL OR (a.portfolio_scope = 'EXEC_USER' AND a.followed_user_id = %(u)s)
GROUP BY 1, 2;

-- hourly --
-- This hour's point of the ideal copy curve, per portfolio: written by the hour's first
-- run, never changed.
INSERT INTO ideal_hourly (portfolio_scope, followed_user_id, bucket, ideal_micros,
    exec_micros, attempts)
SELECT a.portfolio_scope,
       CASE WHEN a.portfolio_scope = 'EXEC_USER' THEN a.followed_user_id END,
       date_trunc('hour', %(now)s::timestamptz),
       sum(c.ideal_micros), sum(c.exec_micros), count(*)
FROM copy_attribution c JOIN copy_attempt a ON a.id = c.copy_attempt_id
WHERE NOT EXISTS (  -- the hour's point is written: the other runs of the hour skip the sums
  SELECT 1 FROM ideal_hourly h
  WHERE h.portfolio_scope = 'EXEC_GLOBAL' AND h.followed_user_id IS NULL
    AND h.bucket = date_trunc('hour', %(now)s::timestamptz))
GROUP BY 1, 2
ON CONFLICT (portfolio_scope, followed_user_id, bucket) DO NOTHING;

-- hourly_series --
-- One portfolio's ideal copy points since `since`, oldest first.
SELECT bucket, ideal_micros, exec_micros FROM ideal_hourly
WHERE portfolio_scope = %(scope)s AND followed_user_id IS NOT DISTINCT FROM %(u)s
  AND bucket >= %(since)s
ORDER BY bucket;
