-- portfolio_entries --
-- One portfolio's entries in id order, effective before `until` when given, with the
-- followed user each copy came from (the global portfolio's attribution):
-- records.LedgerEntry, folded by portfolio.Portfolio.apply.
SELECT l.portfolio_scope, l.followed_user_id, l.entry_type, l.asset_id, l.condition_id,
       l.share_delta_micros, l.cash_delta_micros, l.price_micros, l.id,
       a.followed_user_id AS copied_from, NULL::text AS ref_id, l.effective_time
FROM ledger_entry l LEFT JOIN copy_attempt a ON a.id = l.copy_attempt_id
WHERE l.portfolio_scope = %(s)s AND l.followed_user_id IS NOT DISTINCT FROM %(u)s
  AND (%(until)s::timestamptz IS NULL OR l.effective_time < %(until)s)
ORDER BY l.id;

-- between_ids --
-- Every portfolio's entries with id in (lo, hi], in id order (the snapshot's fold).
SELECT portfolio_scope, followed_user_id, entry_type, asset_id, condition_id,
       share_delta_micros, cash_delta_micros, price_micros, id, NULL::bigint AS copied_from,
       NULL::text AS ref_id, effective_time
FROM ledger_entry WHERE id > %(lo)s AND id <= %(hi)s ORDER BY id;

-- exec_watermark --
-- The newest executable entry: another writer moved the exec ledgers if it changed.
SELECT max(id) AS id FROM ledger_entry WHERE portfolio_scope <> 'SHADOW_USER';

-- insert_shadow --
-- One shadow entry; its key (scope, ref, type) makes a reapply collide.
INSERT INTO ledger_entry (portfolio_scope, followed_user_id, condition_id, asset_id,
    entry_type, share_delta_micros, cash_delta_micros, price_micros, ref_id, effective_time)
VALUES ('SHADOW_USER', %(u)s, %(cond)s, %(asset)s, %(type)s, %(shares)s, %(cash)s,
    %(price)s, %(ref)s, %(t)s)
ON CONFLICT (portfolio_scope, ref_id, entry_type) DO NOTHING;

-- shadow_holdings --
-- A user's shadow shares of the given assets.
SELECT asset_id, sum(share_delta_micros)::bigint AS shares FROM ledger_entry
WHERE portfolio_scope = 'SHADOW_USER' AND followed_user_id = %(u)s AND asset_id = ANY(%(a)s)
GROUP BY asset_id;

-- unredeemed_settlements --
-- A user's shadow SETTLEMENT entries in the given markets not yet undone by a REDEEM.
SELECT l.id, l.portfolio_scope, l.followed_user_id, l.entry_type, l.asset_id,
       l.condition_id, l.share_delta_micros, l.cash_delta_micros, l.price_micros, l.ref_id,
       l.effective_time
FROM ledger_entry l
WHERE l.portfolio_scope = 'SHADOW_USER' AND l.followed_user_id = %(u)s
  AND l.entry_type = 'SETTLEMENT' AND l.condition_id = ANY(%(c)s)
  AND NOT EXISTS (SELECT 1 FROM ledger_entry x
                  WHERE x.portfolio_scope = 'SHADOW_USER' AND x.entry_type = 'SETTLEMENT'
                    AND x.ref_id = l.ref_id || ':undo');

-- copy_exec --
-- The executable entries of a batch of decisions, by COPY (the attempt ids known).
COPY ledger_entry (portfolio_scope, followed_user_id, condition_id, asset_id, entry_type,
    share_delta_micros, cash_delta_micros, price_micros, ref_id, effective_time,
    copy_attempt_id) FROM STDIN;

-- portfolio_entries_after --
-- One portfolio's entries newer than a fold checkpoint (id > `after`), in id order.
SELECT portfolio_scope, followed_user_id, entry_type, asset_id, condition_id,
       share_delta_micros, cash_delta_micros, price_micros, id, NULL::bigint AS copied_from,
       NULL::text AS ref_id, effective_time
FROM ledger_entry
WHERE portfolio_scope = %(s)s AND followed_user_id IS NOT DISTINCT FROM %(u)s
  AND id > %(after)s
ORDER BY id;

-- copied_by_user --
-- The global portfolio's shares per (followed user, asset): what each user's signals
-- brought in, summed over its copies.
SELECT a.followed_user_id AS u, l.asset_id, sum(l.share_delta_micros)::bigint AS n
FROM ledger_entry l JOIN copy_attempt a ON a.id = l.copy_attempt_id
WHERE l.portfolio_scope = 'EXEC_GLOBAL' AND l.asset_id IS NOT NULL
GROUP BY 1, 2;

