-- by_ids --
-- Stored books by id, levels best first as stored (records.OrderBookSnapshot).
SELECT id, asset_id, fetched_at, bid_prices_micros, bid_sizes_micros, ask_prices_micros,
       ask_sizes_micros, min_order_size_micros
FROM order_book_snapshot WHERE id = ANY(%(ids)s);

-- insert --
-- A fetched book (sorted best first; `source` REST, or LIVE: the watcher's). The same
-- book served again keeps its row: the
-- no-op update makes RETURNING give the existing id, levels and first fetch time.
INSERT INTO order_book_snapshot (asset_id, condition_id, book_hash, book_time, fetched_at,
    bid_prices_micros, bid_sizes_micros, ask_prices_micros, ask_sizes_micros, tick_size_micros,
    min_order_size_micros, neg_risk, last_trade_price_micros, source)
VALUES (%(asset)s, %(cond)s, %(hash)s, %(time)s, %(at)s, %(bp)s, %(bs)s, %(ap)s, %(as)s,
    %(tick)s, %(min)s, %(neg)s, %(last)s, %(source)s)
ON CONFLICT (asset_id, book_time, book_hash) DO UPDATE SET asset_id = EXCLUDED.asset_id
RETURNING id, fetched_at, bid_prices_micros, bid_sizes_micros, ask_prices_micros,
    ask_sizes_micros, asset_id, min_order_size_micros;

-- newest_mids --
-- Per asset, the newest stored two-sided book at or before `t` (its mid marks it).
SELECT a.asset_id, b.fetched_at, b.id, b.bid, b.ask
FROM unnest(%(a)s::text[]) AS a(asset_id)
CROSS JOIN LATERAL (
  SELECT fetched_at, id, bid_prices_micros[1] AS bid, ask_prices_micros[1] AS ask
  FROM order_book_snapshot o
  WHERE o.asset_id = a.asset_id AND o.fetched_at <= %(t)s
    AND cardinality(bid_prices_micros) > 0 AND cardinality(ask_prices_micros) > 0
  ORDER BY fetched_at DESC, id DESC LIMIT 1) b;
