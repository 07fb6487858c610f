-- newest_mids --
-- Per asset, the newest stored mid at or before `t`.
SELECT a.asset_id, m.observed_at, m.mid_micros
FROM unnest(%(a)s::text[]) AS a(asset_id)
CROSS JOIN LATERAL (
  SELECT observed_at, mid_micros FROM market_price_snapshot p
  WHERE p.asset_id = a.asset_id AND p.observed_at <= %(t)s
  ORDER BY bucket DESC LIMIT 1) m;

-- newest_within --
-- Per asset, the newest stored mid observed in [t - max_age, t] (by its 30 s bucket, so
-- the key's index bounds the scan).
SELECT a.asset_id, m.observed_at, m.mid_micros
FROM unnest(%(a)s::text[]) AS a(asset_id)
CROSS JOIN LATERAL (
  SELECT observed_at, mid_micros FROM market_price_snapshot p
  WHERE p.asset_id = a.asset_id
    AND p.bucket BETWEEN %(t)s::timestamptz - %(age)s::interval - interval '30 seconds' AND %(t)s::timestamptz
    AND p.observed_at BETWEEN %(t)s::timestamptz - %(age)s::interval AND %(t)s::timestamptz
  ORDER BY p.bucket DESC LIMIT 1) m;

-- insert --
-- One mark per asset per 30 s bucket; the first stays.
INSERT INTO market_price_snapshot (asset_id, bucket, mid_micros, price_source, observed_at)
VALUES (%s, %s, %s, %s, %s) ON CONFLICT (asset_id, bucket) DO NOTHING;
