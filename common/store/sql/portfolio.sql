-- Portfolio rows: the snapshot fold's saved state (portfolio_state, portfolio_position)
-- and its minute rows (portfolio_snapshot), which the circuit breakers read back.

-- states --
-- Every portfolio's running totals (records.PortfolioState).
SELECT portfolio_scope, followed_user_id, cash_micros, contributed_micros,
       realized_pnl_micros, fees_micros
FROM portfolio_state;

-- open_positions --
-- Every open position (records.PositionRow).
SELECT portfolio_scope, followed_user_id, asset_id, condition_id, share_micros, cost_micros,
       last_price_micros, realized_micros, closed_by, closed_at, opened_at
FROM portfolio_position WHERE share_micros <> 0;

-- closed_user_positions --
-- The closed positions of per-user portfolios about to move (their last price matters
-- if they reopen).
SELECT p.portfolio_scope, p.followed_user_id, p.asset_id, p.condition_id, p.share_micros,
       p.cost_micros, p.last_price_micros, p.realized_micros, p.closed_by, p.closed_at,
       p.opened_at
FROM unnest(%(s)s::text[], %(u)s::bigint[], %(a)s::text[]) AS t(s, u, a)
JOIN portfolio_position p
  ON p.portfolio_scope = t.s AND p.followed_user_id = t.u AND p.asset_id = t.a
WHERE p.share_micros = 0;

-- closed_global_positions --
-- The global portfolio's closed positions about to move.
SELECT portfolio_scope, followed_user_id, asset_id, condition_id, share_micros, cost_micros,
       last_price_micros, realized_micros, closed_by, closed_at, opened_at
FROM portfolio_position
WHERE portfolio_scope = 'EXEC_GLOBAL' AND followed_user_id IS NULL AND asset_id = ANY(%(a)s)
  AND share_micros = 0;

-- upsert_state --
INSERT INTO portfolio_state (portfolio_scope, followed_user_id, cash_micros,
    contributed_micros, realized_pnl_micros, fees_micros, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (portfolio_scope, followed_user_id) DO UPDATE SET
    cash_micros = EXCLUDED.cash_micros, contributed_micros = EXCLUDED.contributed_micros,
    realized_pnl_micros = EXCLUDED.realized_pnl_micros, fees_micros = EXCLUDED.fees_micros,
    updated_at = EXCLUDED.updated_at;

-- upsert_position --
INSERT INTO portfolio_position (portfolio_scope, followed_user_id, asset_id, condition_id,
    share_micros, cost_micros, last_price_micros, realized_micros, closed_by, closed_at,
    opened_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (portfolio_scope, followed_user_id, asset_id) DO UPDATE SET
    condition_id = EXCLUDED.condition_id, share_micros = EXCLUDED.share_micros,
    cost_micros = EXCLUDED.cost_micros, last_price_micros = EXCLUDED.last_price_micros,
    realized_micros = EXCLUDED.realized_micros, closed_by = EXCLUDED.closed_by,
    closed_at = EXCLUDED.closed_at, opened_at = EXCLUDED.opened_at;

-- upsert_snapshot --
-- One portfolio's row of one minute, with the ledger cut and marks time it was taken at.
INSERT INTO portfolio_snapshot (portfolio_scope, followed_user_id, bucket, equity_micros,
    cash_micros, exposure_micros, unrealized_pnl_micros, realized_pnl_micros, fees_micros,
    open_positions, last_ledger_entry_id, as_of, contributed_micros)
VALUES (%(scope)s, %(u)s, %(bucket)s, %(equity)s, %(cash)s, %(exposure)s, %(unrealized)s,
    %(realized)s, %(fees)s, %(open)s, %(cut)s, %(as_of)s, %(contributed)s)
ON CONFLICT (portfolio_scope, followed_user_id, bucket) DO UPDATE SET
    equity_micros = EXCLUDED.equity_micros, cash_micros = EXCLUDED.cash_micros,
    exposure_micros = EXCLUDED.exposure_micros,
    unrealized_pnl_micros = EXCLUDED.unrealized_pnl_micros,
    realized_pnl_micros = EXCLUDED.realized_pnl_micros, fees_micros = EXCLUDED.fees_micros,
    open_positions = EXCLUDED.open_positions,
    last_ledger_entry_id = EXCLUDED.last_ledger_entry_id, as_of = EXCLUDED.as_of,
    contributed_micros = EXCLUDED.contributed_micros;

-- snapshots_since --
-- The rows `snapshot --rebuild` recomputes, in the order their cuts were taken.
SELECT portfolio_scope, followed_user_id, bucket, last_ledger_entry_id, as_of,
       equity_micros, cash_micros, exposure_micros, unrealized_pnl_micros,
       realized_pnl_micros, fees_micros, open_positions, contributed_micros
FROM portfolio_snapshot WHERE bucket >= %(t)s AND as_of IS NOT NULL
ORDER BY last_ledger_entry_id, as_of;

-- breaker_ref --
-- A user portfolio's equity at a period's start: the last row at or before it, else
-- the period's first row. (`= %(u)s`, not IS NOT DISTINCT FROM, which no index serves:
-- the global portfolio has its own statements, *_global.)
SELECT COALESCE(
  (SELECT equity_micros FROM portfolio_snapshot
   WHERE portfolio_scope = %(s)s AND followed_user_id = %(u)s
     AND bucket <= %(start)s ORDER BY bucket DESC LIMIT 1),
  (SELECT equity_micros FROM portfolio_snapshot
   WHERE portfolio_scope = %(s)s AND followed_user_id = %(u)s
     AND bucket > %(start)s AND bucket <= %(t)s ORDER BY bucket LIMIT 1)) AS equity;

-- breaker_ref_global --
-- breaker_ref of the global portfolio.
SELECT COALESCE(
  (SELECT equity_micros FROM portfolio_snapshot
   WHERE portfolio_scope = %(s)s AND followed_user_id IS NULL
     AND bucket <= %(start)s ORDER BY bucket DESC LIMIT 1),
  (SELECT equity_micros FROM portfolio_snapshot
   WHERE portfolio_scope = %(s)s AND followed_user_id IS NULL
     AND bucket > %(start)s AND bucket <= %(t)s ORDER BY bucket LIMIT 1)) AS equity;

-- breaker_peak --
-- A user portfolio's highest equity so far.
SELECT max(equity_micros) AS equity FROM portfolio_snapshot
WHERE portfolio_scope = %(s)s AND followed_user_id = %(u)s AND bucket <= %(t)s;

-- breaker_peak_global --
-- breaker_peak of the global portfolio.
SELECT max(equity_micros) AS equity FROM portfolio_snapshot
WHERE portfolio_scope = %(s)s AND followed_user_id IS NULL AND bucket <= %(t)s;

-- saved_state --
-- One portfolio's totals as the snapshot job last saved them (records.PortfolioState).
SELECT portfolio_scope, followed_user_id, cash_micros, contributed_micros,
       realized_pnl_micros, fees_micros
FROM portfolio_state
WHERE portfolio_scope = %(s)s AND followed_user_id IS NOT DISTINCT FROM %(u)s;

-- saved_positions --
-- One portfolio's positions as the snapshot job last saved them, closed ones included
-- (their last price marks a reopened position) (records.PositionRow).
SELECT portfolio_scope, followed_user_id, asset_id, condition_id, share_micros, cost_micros,
       last_price_micros, realized_micros, closed_by, closed_at, opened_at
FROM portfolio_position
WHERE portfolio_scope = %(s)s AND followed_user_id IS NOT DISTINCT FROM %(u)s;
