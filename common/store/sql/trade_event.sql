-- pending_for_user --
-- A user's fills not yet applied to the shadow ledger, from `since`, in apply order; an
-- RTDS repeat (ordinal > 0) only once the chain or the Data API confirmed it
-- (records.TradeEvent). chain_contradicts: a Data API fill with no log of its own in a
-- transaction whose logs for its wallet are stored (the chain has no room for it).
SELECT id, followed_user_id, asset_id, condition_id, side, price_micros, share_micros,
       usdc_notional_micros, fee_micros, event_time, detect_time, source, confirmed_at,
       tx_hash, wallet, payload,
       (t.log_index IS NULL AND EXISTS (
           SELECT 1 FROM trade_event c WHERE c.tx_hash = t.tx_hash AND c.wallet = t.wallet
             AND c.log_index IS NOT NULL AND c.reorg_state IS NULL)) AS chain_contradicts
FROM trade_event t
WHERE shadow_applied_at IS NULL AND reorg_state IS NULL AND followed_user_id = %(u)s
  AND event_time >= %(since)s
  -- an RTDS trade seen again (ordinal > 0) waits for a confirmation: a repeated message
  -- must not count twice (reconcile flags it UNSETTLED if none comes)
  AND NOT (t.source = 'RTDS' AND t.confirmed_at IS NULL AND t.rtds_source_id !~ ':0$')
ORDER BY event_time, id
LIMIT %(limit)s;

-- cover_by_seed --
-- A user's unapplied fills older than the seed window: the seed's positions hold them.
UPDATE trade_event SET shadow_applied_at = %(now)s, shadow_state = 'COVERED_BY_SEED'
WHERE followed_user_id = %(u)s AND shadow_applied_at IS NULL AND event_time < %(since)s;

-- mark_applied --
UPDATE trade_event SET shadow_applied_at = %(now)s, shadow_state = 'APPLIED'
WHERE id = ANY(%(ids)s);

-- mark_contradicted --
-- Fills the chain contradicts: never applied, and out of every sum (reorg_state set).
UPDATE trade_event SET shadow_applied_at = %(now)s, shadow_state = 'NOT_APPLIED',
    reorg_state = 'CONTRADICTED'
WHERE id = ANY(%(ids)s);

-- confirm_from_chain --
-- The chain's log of a fill the Data API or RTDS reported: its amounts and fee are exact
-- and replace theirs. Returns the row as it was (records.TradeEvent, plus shadow_state),
-- so an applied fill gets correcting entries.
UPDATE trade_event t SET log_index = %(li)s, block_number = %(block)s, role = %(role)s,
    confirmed_at = COALESCE(old.confirmed_at, %(now)s), chain_seen_at = %(now)s,
    price_micros = %(price)s, usdc_notional_micros = %(usdc)s, fee_micros = %(fee)s
FROM trade_event old WHERE t.id = %(id)s AND old.id = t.id
RETURNING old.id, old.followed_user_id, old.asset_id, old.condition_id, old.side,
    old.price_micros, old.share_micros, old.usdc_notional_micros, old.fee_micros,
    old.event_time, old.detect_time, old.shadow_state;

-- applied_contradicted --
-- Data API (or RTDS) fills applied past the grace without a chain log, whose
-- transaction's logs for the wallet have all arrived (none newer than `settled`) and
-- leave no room for them: the shadow ledger must take them back out.
SELECT t.id, t.followed_user_id, t.wallet, t.tx_hash, t.asset_id, t.condition_id, t.side,
       t.price_micros, t.share_micros, t.usdc_notional_micros, t.fee_micros, t.event_time,
       t.detect_time
FROM trade_event t
WHERE t.source <> 'CHAIN' AND t.reorg_state IS NULL AND t.shadow_state = 'APPLIED'
  AND t.log_index IS NULL
  AND EXISTS (SELECT 1 FROM trade_event c WHERE c.tx_hash = t.tx_hash AND c.wallet = t.wallet
                AND c.log_index IS NOT NULL AND c.reorg_state IS NULL)
  AND NOT EXISTS (SELECT 1 FROM trade_event c WHERE c.tx_hash = t.tx_hash
                    AND c.log_index IS NOT NULL AND c.detect_time > %(settled)s)
ORDER BY t.id
LIMIT 1000;

-- mark_voided --
UPDATE trade_event SET reorg_state = 'CONTRADICTED' WHERE id = %(id)s;

-- leader_positions_before --
-- Followed users' shares of a market's outcome assets (and of the group's asset) just
-- before each of a batch of copy groups, as the shadow ledger applies their events: the
-- seed, then their fills, SPLITs, MERGEs and chain CONVERSIONs ordered before the
-- group's first event (by event time, fills before activity, then id), a REDEEM
-- leaving nothing. Read from the events, so it does not depend on whether the shadow
-- ledger has caught up; only events detected by the group's decision moment `seen`
-- count (a replay sees what the live decision saw), and never a Data API fill the
-- chain contradicts. One row per (group,
-- asset); the arrays are the groups' id, user, window start, rank (0 for a fill group,
-- 1 for an activity group), decision moment, market and asset.
WITH q AS (
  SELECT q.*, u.seeded_at - %(window)s::interval AS since,
         coalesce((SELECT min(id) FROM trade_event
                   WHERE copy_group_id = q.gid AND event_time = q.t),
                  (SELECT min(id) FROM activity_event
                   WHERE copy_group_id = q.gid AND event_time = q.t), 0) AS first
  FROM unnest(%(g)s::bigint[], %(u)s::bigint[], %(t)s::timestamptz[], %(rank)s::int[],
              %(seen)s::timestamptz[], %(c)s::text[], %(asset)s::text[])
       AS q(gid, u, t, rank, seen, c, asset)
  JOIN followed_user u ON u.id = q.u),
r AS (
  SELECT q.*, lr.t AS rt, lr.id AS rid
  FROM q LEFT JOIN LATERAL (
    SELECT a.event_time AS t, a.id FROM activity_event a
    WHERE a.followed_user_id = q.u AND a.condition_id = q.c AND a.activity_type = 'REDEEM'
      AND a.event_time >= q.since AND a.shadow_state IS DISTINCT FROM 'COVERED_BY_SEED'
      AND a.detect_time <= q.seen AND (a.event_time, 1, a.id) < (q.t, q.rank, q.first)
    ORDER BY a.event_time DESC, a.id DESC LIMIT 1) lr ON true)
SELECT r.gid, x.asset_id, x.outcome,
  (CASE WHEN r.rid IS NULL THEN coalesce((
      SELECT sum(l.share_delta_micros) FROM ledger_entry l
      WHERE l.portfolio_scope = 'SHADOW_USER' AND l.followed_user_id = r.u
        AND l.entry_type = 'SEED' AND l.asset_id = x.asset_id), 0) ELSE 0 END
   + coalesce((
      SELECT sum(CASE WHEN t.side = 'BUY' THEN t.share_micros ELSE -t.share_micros END)
      FROM trade_event t
      WHERE t.followed_user_id = r.u AND t.asset_id = x.asset_id
        AND t.reorg_state IS NULL AND t.event_time >= r.since
        AND t.shadow_state IS DISTINCT FROM 'COVERED_BY_SEED'
        AND t.detect_time <= r.seen AND (t.event_time, 0, t.id) < (r.t, r.rank, r.first)
        AND (r.rid IS NULL OR (t.event_time, 0, t.id) > (r.rt, 1, r.rid))
        AND NOT (t.log_index IS NULL AND EXISTS (
            SELECT 1 FROM trade_event c WHERE c.tx_hash = t.tx_hash AND c.wallet = t.wallet
              AND c.log_index IS NOT NULL AND c.reorg_state IS NULL))), 0)
   + CASE WHEN x.outcome THEN coalesce((
      SELECT sum(CASE WHEN a.activity_type = 'SPLIT' THEN a.share_micros
                      ELSE -a.share_micros END)
      FROM activity_event a
      WHERE a.followed_user_id = r.u AND a.condition_id = r.c
        AND a.activity_type IN ('SPLIT', 'MERGE') AND a.event_time >= r.since
        AND a.shadow_state IS DISTINCT FROM 'COVERED_BY_SEED'
        AND a.detect_time <= r.seen AND (a.event_time, 1, a.id) < (r.t, r.rank, r.first)
        AND (r.rid IS NULL OR (a.event_time, 1, a.id) > (r.rt, 1, r.rid))), 0)
     ELSE 0 END
   -- neg-risk conversions from the chain (PositionsConverted): `amount` NO shares of a
   -- question in the index set leave, `amount − fee` YES shares of every other
   -- question arrive, once the market's questions are all known (as the shadow applies)
   + coalesce((
      SELECT sum(CASE
          WHEN o.outcome_index = 1 AND get_bit(b.bits, 255 - m.question_index) = 1
            THEN -a.share_micros
          WHEN o.outcome_index = 0 AND get_bit(b.bits, 255 - m.question_index) = 0
            THEN a.share_micros - a.share_micros * coalesce(n.fee_bips, 0) / 10000
          ELSE 0 END)
      FROM outcome_asset o
      JOIN market m ON m.condition_id = o.condition_id AND m.question_index IS NOT NULL
      JOIN activity_event a ON a.neg_risk_market_id = m.neg_risk_market_id
      JOIN neg_risk_market n ON n.market_id = a.neg_risk_market_id
           AND m.question_index < n.question_count
           -- every question known, the index set within them: the legs can be told
           AND n.question_count = (SELECT count(*) FROM market q
                                   WHERE q.neg_risk_market_id = n.market_id
                                     AND q.question_index < n.question_count)
      CROSS JOIN LATERAL (
        SELECT ('x' || lpad(substr(a.index_set, 3), 64, '0'))::bit(256) AS bits) b
      WHERE o.asset_id = x.asset_id
        AND position('1' IN substring(b.bits::text FOR 256 - n.question_count)) = 0 AND a.followed_user_id = r.u AND a.source = 'CHAIN'
        AND a.reorg_state IS NULL AND a.shadow_state IS DISTINCT FROM 'NOT_APPLIED'
        AND a.event_time >= r.since
        AND NOT EXISTS (  -- the seed holds it (store.shadow covers it)
            SELECT 1 FROM activity_event d
            WHERE d.source = 'DATA_API' AND d.activity_type = 'CONVERSION'
              AND d.followed_user_id = a.followed_user_id AND d.tx_hash = a.tx_hash
              AND d.shadow_state = 'COVERED_BY_SEED')
        AND a.shadow_state IS DISTINCT FROM 'COVERED_BY_SEED'
        AND a.detect_time <= r.seen AND (a.event_time, 1, a.id) < (r.t, r.rank, r.first)
        AND (r.rid IS NULL OR (a.event_time, 1, a.id) > (r.rt, 1, r.rid))), 0)
   )::bigint AS shares
FROM r CROSS JOIN LATERAL (
  SELECT o.asset_id, true AS outcome FROM outcome_asset o WHERE o.condition_id = r.c
  UNION ALL
  SELECT r.asset, false WHERE r.asset IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM outcome_asset o
                    WHERE o.condition_id = r.c AND o.asset_id = r.asset)) x;

-- rtds_unsettled --
-- RTDS trades neither the chain nor the Data API has confirmed, first seen before `cut`:
-- fills reported at match time that never settled (reconcile flags them UNSETTLED).
SELECT id, followed_user_id, wallet, tx_hash, asset_id, condition_id, side, price_micros,
       share_micros, usdc_notional_micros, fee_micros, event_time, detect_time, rtds_seen_at,
       shadow_state
FROM trade_event
WHERE rtds_source_id IS NOT NULL AND log_index IS NULL AND api_source_id IS NULL
  AND reorg_state IS NULL AND rtds_seen_at < %(cut)s
ORDER BY rtds_seen_at, id
LIMIT 1000;

-- mark_unsettled --
UPDATE trade_event SET reorg_state = 'UNSETTLED'
WHERE id = %(id)s AND reorg_state IS NULL AND log_index IS NULL AND api_source_id IS NULL;
