-- SPEC §12 / issue 20: the book ladder. For each copy group of a BUY or SELL, its
-- asset's book at fixed delays after the leader's first fill (copy_group.window_start):
-- +0 (just before the fill; or, when the asset was not watched yet, the first book after
-- detection) and +2, +5, +10, +30, +60 s (OCULUS_LADDER_DELAYS_S), taken by
-- functions.watch_books from its live books. Compact: levels within ±0.10 of mid, at
-- most 50 a side, as [[price_micros, size_micros], ...] best first.
CREATE TABLE book_ladder (
    copy_group_id   bigint      NOT NULL REFERENCES copy_group (id) ON DELETE CASCADE,
    delay_ms        integer     NOT NULL CHECK (delay_ms >= 0),
    book_at         timestamptz NOT NULL,     -- the moment the book is of
    source          text        NOT NULL CHECK (source IN ('LIVE', 'LIVE_AFTER', 'REST')),
    best_bid_micros bigint,
    best_ask_micros bigint,
    bids            jsonb       NOT NULL,
    asks            jsonb       NOT NULL,
    taken_at        timestamptz NOT NULL,
    PRIMARY KEY (copy_group_id, delay_ms)
);
CREATE INDEX book_ladder_taken_idx ON book_ladder (taken_at);
-- The watcher finds the groups whose ladder is due by their first fill's time.
CREATE INDEX copy_group_window_start_idx ON copy_group (window_start);
