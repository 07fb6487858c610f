-- newest_mids --
-- Per asset, the newest stored mid at or before `t`.
SELECT a.asset_id, m.observed_at, m.mid_micros
FROM unnest(%(a)s::text[]) AS a(asset_id)
CROSS JOIN LATERAL (
  SELECT observed_at, mid_micros FROM market_price_snapshot p
  WHERE p.asset_id = a.asset_id AND p.observed_at <= %(t)s
  ORDER BY bucket DESC LIMIT 1) m;
