-- Real copies (SPEC §10): the admin's copy wallets' fills and imported copy fills, their
-- pairing with the leader's groups, attribution and score (common/store/real_copies.py).

-- wallet_gone --
-- Copy-wallet fills that are no longer a copy of their leader: reorged out, or the
-- wallet was unmarked, marked as another leader's copy (re-added below if so) or removed.
DELETE FROM real_copy_fill r USING trade_event t, followed_user u
WHERE r.source = 'WALLET' AND t.id = r.trade_event_id AND u.id = r.wallet_user_id
  AND (t.reorg_state IS NOT NULL OR u.copy_mode = 'REMOVED'
       OR u.copy_of_user_id IS DISTINCT FROM r.leader_user_id);

-- wallet_new --
-- The copy wallets' fills not yet real copy fills (one already imported from a CSV —
-- same transaction, asset, side and size — is not added twice).
INSERT INTO real_copy_fill (leader_user_id, source, source_key, trade_event_id,
    wallet_user_id, tx_hash, asset_id, side, price_micros, share_micros, fee_micros,
    event_time, added_at)
SELECT u.copy_of_user_id, 'WALLET', t.id::text, t.id, u.id, t.tx_hash, t.asset_id, t.side,
       t.price_micros, t.share_micros, t.fee_micros, t.event_time, %(now)s
FROM followed_user u
JOIN trade_event t ON t.followed_user_id = u.id
WHERE u.copy_of_user_id IS NOT NULL AND u.copy_mode <> 'REMOVED' AND t.reorg_state IS NULL
  AND NOT EXISTS (SELECT 1 FROM real_copy_fill r
                  WHERE r.source = 'WALLET' AND r.source_key = t.id::text)
  AND NOT EXISTS (SELECT 1 FROM real_copy_fill c
                  WHERE c.source = 'CSV' AND c.tx_hash = t.tx_hash AND c.asset_id = t.asset_id
                    AND c.side = t.side AND c.share_micros = t.share_micros);

-- import_rows --
-- The imported rows in the temp table `import_real_copy_fill`, each fill once (a row
-- imported before, or a copy wallet's fill of the same transaction, asset, side and
-- size, is left as it is); returns those added.
INSERT INTO real_copy_fill (leader_user_id, source, source_key, import_file, import_line,
    tx_hash, asset_id, side, price_micros, share_micros, fee_micros, event_time, added_at)
SELECT i.leader_user_id, 'CSV', i.source_key, i.import_file, i.import_line, i.tx_hash,
       i.asset_id, i.side, i.price_micros, i.share_micros, i.fee_micros, i.event_time,
       i.added_at
FROM import_real_copy_fill i
WHERE NOT EXISTS (SELECT 1 FROM real_copy_fill w
                  WHERE w.source = 'WALLET' AND w.tx_hash = i.tx_hash
                    AND w.asset_id = i.asset_id AND w.side = i.side
                    AND w.share_micros = i.share_micros)
ON CONFLICT (source, source_key) DO NOTHING
RETURNING id;

-- to_pair --
-- The fills never paired, PAGE at a time by id.
SELECT id, leader_user_id, asset_id, side, event_time, copy_group_id
FROM real_copy_fill
WHERE paired_at IS NULL AND id > %(after)s
ORDER BY id LIMIT %(limit)s;

-- to_pair_again --
-- The fills a group closed since `since` may pair with (its leader, asset and side,
-- made up to 15 minutes after its first fill): a leader fill seen late may precede
-- them more nearly than their pair, or be the first to precede them at all.
SELECT DISTINCT f.id, f.leader_user_id, f.asset_id, f.side, f.event_time, f.copy_group_id
FROM copy_group g
JOIN real_copy_fill f ON f.leader_user_id = g.followed_user_id AND f.asset_id = g.asset_id
  AND f.side = g.action
  AND f.event_time BETWEEN g.window_start AND g.window_start + interval '15 minutes'
WHERE g.closed_at > %(since)s AND g.state IN ('CLOSED', 'DONE')
  AND g.action IN ('BUY', 'SELL') AND f.paired_at IS NOT NULL
ORDER BY f.id;

-- candidate_groups --
-- The leaders' closed BUY/SELL groups (their price is fixed; an open group's is not yet,
-- and a closed one never turns VOID) of these assets whose first fill is in [lo, hi].
SELECT id, followed_user_id, asset_id, action, window_start
FROM copy_group
WHERE followed_user_id = ANY(%(leaders)s::bigint[]) AND asset_id = ANY(%(assets)s::text[])
  AND action IN ('BUY', 'SELL') AND state IN ('CLOSED', 'DONE')
  AND window_start BETWEEN %(lo)s AND %(hi)s;

-- set_pairs --
-- Stores each fill's group (NULL: unpaired) and when pairing first looked, writing only
-- what changed; returns the fills whose group changed (their attribution and score are
-- then redone).
WITH v AS (SELECT * FROM unnest(%(ids)s::bigint[], %(groups)s::bigint[]) AS v(id, g)),
old AS (SELECT r.id, r.copy_group_id FROM real_copy_fill r JOIN v ON v.id = r.id)
UPDATE real_copy_fill r SET copy_group_id = v.g, paired_at = coalesce(r.paired_at, %(now)s)
FROM v JOIN old ON old.id = v.id
WHERE r.id = v.id AND (r.paired_at IS NULL OR r.copy_group_id IS DISTINCT FROM v.g)
RETURNING r.id, old.copy_group_id IS DISTINCT FROM v.g AS changed;

-- forget_attribution --
-- The attribution of fills whose pairing changed.
DELETE FROM real_copy_attribution WHERE real_copy_fill_id = ANY(%(ids)s::bigint[]);

-- forget_scores --
-- The scores of fills whose pairing changed.
DELETE FROM real_copy_score WHERE real_copy_fill_id = ANY(%(ids)s::bigint[]);

-- due --
-- The paired fills whose attribution is missing, or not final and marked at another
-- price than the asset's mark now, with that mark X (the function `asset_mark`, as in
-- copy_attribution's `due`: the payout once resolved, else the newest stored mark if
-- observed since `fresh`).
WITH assets AS (
  SELECT DISTINCT r.asset_id FROM real_copy_fill r
  LEFT JOIN real_copy_attribution c ON c.real_copy_fill_id = r.id
  WHERE r.copy_group_id IS NOT NULL AND (c.real_copy_fill_id IS NULL OR NOT c.final)),
x AS (
  SELECT s.asset_id, k.* FROM assets s CROSS JOIN LATERAL asset_mark(s.asset_id) k)
SELECT f.id, x.mark, x.marked_at, x.final
FROM real_copy_fill f
JOIN x ON x.asset_id = f.asset_id
JOIN copy_group g ON g.id = f.copy_group_id AND g.their_price_micros IS NOT NULL
LEFT JOIN real_copy_attribution c ON c.real_copy_fill_id = f.id
WHERE f.copy_group_id IS NOT NULL AND x.mark IS NOT NULL
  AND (x.final OR x.marked_at >= %(fresh)s)
  AND (c.real_copy_fill_id IS NULL OR (NOT c.final AND (c.mark_micros <> x.mark OR x.final)))
ORDER BY f.id;

-- pairs --
-- What attribution and the score read of the paired fills `ids`: the fill, its group
-- (their price P, first fill) and the stored book of its asset nearest its time within
-- 30 s.
SELECT f.id, f.leader_user_id, f.side, f.price_micros, f.share_micros, f.fee_micros,
       f.event_time, f.copy_group_id, g.window_start, g.their_price_micros,
       b.id AS book_id, b.bid_prices_micros, b.bid_sizes_micros, b.ask_prices_micros,
       b.ask_sizes_micros
FROM real_copy_fill f
JOIN copy_group g ON g.id = f.copy_group_id
LEFT JOIN LATERAL (
  SELECT s.id, s.bid_prices_micros, s.bid_sizes_micros, s.ask_prices_micros, s.ask_sizes_micros
  FROM order_book_snapshot s
  WHERE s.asset_id = f.asset_id
    AND s.fetched_at BETWEEN f.event_time - interval '30 seconds'
                         AND f.event_time + interval '30 seconds'
  ORDER BY abs(extract(epoch FROM s.fetched_at - f.event_time)), s.id LIMIT 1) b ON true
WHERE f.id = ANY(%(ids)s::bigint[])
ORDER BY f.id;

-- upsert_attribution --
-- The rows in the temp table `score_real_copy_attribution`; a final one is never changed.
INSERT INTO real_copy_attribution SELECT * FROM score_real_copy_attribution
ON CONFLICT (real_copy_fill_id) DO UPDATE SET
    copy_group_id = EXCLUDED.copy_group_id, their_price_micros = EXCLUDED.their_price_micros,
    order_book_snapshot_id = EXCLUDED.order_book_snapshot_id,
    mid_micros = EXCLUDED.mid_micros, mark_micros = EXCLUDED.mark_micros,
    ideal_micros = EXCLUDED.ideal_micros, exec_micros = EXCLUDED.exec_micros,
    latency_micros = EXCLUDED.latency_micros, slippage_micros = EXCLUDED.slippage_micros,
    fee_micros = EXCLUDED.fee_micros, marked_at = EXCLUDED.marked_at,
    final = EXCLUDED.final, updated_at = EXCLUDED.updated_at
WHERE NOT real_copy_attribution.final;

-- unscored --
-- The paired fills with no score of version `v` yet.
SELECT f.id FROM real_copy_fill f
JOIN copy_group g ON g.id = f.copy_group_id AND g.their_price_micros IS NOT NULL
LEFT JOIN real_copy_score s ON s.real_copy_fill_id = f.id AND s.version = %(v)s
WHERE s.real_copy_fill_id IS NULL
ORDER BY f.id;

-- insert_scores --
-- The scores in the temp table `score_real_copy_score`; an existing one stays.
INSERT INTO real_copy_score SELECT * FROM score_real_copy_score
ON CONFLICT (real_copy_fill_id, version) DO NOTHING;

-- retention --
-- A leader's paired real fills made since each window's start: how many, how many
-- attributed, and the sums of their attribution.
SELECT w.span,
       count(f.id) AS attempts, count(c.real_copy_fill_id) AS n,
       coalesce(sum(c.ideal_micros), 0)::bigint AS ideal,
       coalesce(sum(c.exec_micros), 0)::bigint AS exec,
       coalesce(sum(c.latency_micros), 0)::bigint AS latency,
       coalesce(sum(c.slippage_micros), 0)::bigint AS slippage,
       coalesce(sum(c.fee_micros), 0)::bigint AS fee
FROM (VALUES ('24h', %(d1)s::timestamptz), ('7d', %(d7)s), ('30d', %(d30)s)) w(span, since)
LEFT JOIN real_copy_fill f ON f.event_time >= w.since AND f.leader_user_id = %(u)s
  AND f.copy_group_id IS NOT NULL
LEFT JOIN real_copy_attribution c ON c.real_copy_fill_id = f.id
GROUP BY w.span;

-- counts --
-- A leader's real copy fills: paired, unpaired (and of those, made before the leader was
-- seeded: no group existed then), not looked at yet; the fills' sources; and the median
-- score of the pairs (version `v`, those with a book).
SELECT count(*) FILTER (WHERE f.copy_group_id IS NOT NULL) AS paired,
       count(*) FILTER (WHERE f.paired_at IS NOT NULL AND f.copy_group_id IS NULL) AS unpaired,
       count(*) FILTER (WHERE f.paired_at IS NOT NULL AND f.copy_group_id IS NULL
                          AND (l.seeded_at IS NULL OR f.event_time < l.seeded_at))
         AS before_follow,
       count(*) FILTER (WHERE f.paired_at IS NULL) AS pending,
       count(*) FILTER (WHERE f.source = 'WALLET') AS wallet,
       count(*) FILTER (WHERE f.source = 'CSV') AS csv,
       (SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY s.total_cpts)
        FROM real_copy_score s JOIN real_copy_fill x ON x.id = s.real_copy_fill_id
        WHERE x.leader_user_id = %(u)s AND s.version = %(v)s AND s.total_cpts IS NOT NULL)
         AS median_score_cpts
FROM real_copy_fill f JOIN followed_user l ON l.id = f.leader_user_id
WHERE f.leader_user_id = %(u)s;

-- unpaired --
-- A leader's newest real copy fills that paired with no group, with their market and
-- whether they were made before the leader was seeded (no group existed then).
SELECT f.id, f.source, f.import_file, f.import_line, f.tx_hash, f.asset_id, f.side,
       f.price_micros, f.share_micros, f.fee_micros, f.event_time, o.outcome,
       m.condition_id, m.question,
       (l.seeded_at IS NULL OR f.event_time < l.seeded_at) AS before_follow
FROM real_copy_fill f
JOIN followed_user l ON l.id = f.leader_user_id
LEFT JOIN outcome_asset o ON o.asset_id = f.asset_id
LEFT JOIN market m ON m.condition_id = o.condition_id
WHERE f.leader_user_id = %(u)s AND f.paired_at IS NOT NULL AND f.copy_group_id IS NULL
ORDER BY f.event_time DESC, f.id DESC LIMIT %(limit)s;

-- real_hourly --
-- A leader's real pairs by the hour of their fill: Σ ideal and Σ exec at today's marks.
SELECT date_trunc('hour', f.event_time) AS bucket,
       sum(c.ideal_micros)::bigint AS ideal, sum(c.exec_micros)::bigint AS exec
FROM real_copy_fill f JOIN real_copy_attribution c ON c.real_copy_fill_id = f.id
WHERE f.leader_user_id = %(u)s AND f.event_time >= %(since)s
GROUP BY 1 ORDER BY 1;

-- sim_hourly --
-- A leader's own simulated copy by the hour of decision: Σ ideal and Σ exec at today's
-- marks (the same marks as the real pairs').
SELECT date_trunc('hour', a.decision_time) AS bucket,
       sum(c.ideal_micros)::bigint AS ideal, sum(c.exec_micros)::bigint AS exec
FROM copy_attempt a JOIN copy_attribution c ON c.copy_attempt_id = a.id
WHERE a.portfolio_scope = 'EXEC_USER' AND a.followed_user_id = %(u)s
  AND a.decision_time >= %(since)s
GROUP BY 1 ORDER BY 1;

-- copy_wallets --
-- The leaders' copy wallets (not removed): (leader, wallet user, label, wallet).
SELECT u.copy_of_user_id AS leader, u.id, u.label, u.profile_wallet
FROM followed_user u
WHERE u.copy_of_user_id IS NOT NULL AND u.copy_mode <> 'REMOVED' ORDER BY u.id;
