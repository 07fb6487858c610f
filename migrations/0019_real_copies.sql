-- Real copies (SPEC §10): the admin's own copy wallets and imported copy fills, paired
-- with the leader's groups and attributed like the simulated copy (functions/score.py,
-- functions/import_copies.py).

-- A followed wallet that is the admin's own copy of one leader: polled like any other
-- (its shadow book is the admin's real portfolio), never copied itself (its fills are
-- not grouped), never in the league table.
ALTER TABLE followed_user ADD COLUMN copy_of_user_id bigint REFERENCES followed_user (id);
ALTER TABLE followed_user ADD CONSTRAINT followed_user_copy_of_other
    CHECK (copy_of_user_id IS NULL OR copy_of_user_id <> id);

-- One row per real copy fill: a copy wallet's fill (source WALLET, keyed by its
-- trade_event) or a row of an imported CSV (source CSV, keyed by its fields and their
-- occurrence in the file), and the leader's group it pairs with (NULL: unpaired).
CREATE TABLE real_copy_fill (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    leader_user_id   bigint      NOT NULL REFERENCES followed_user (id),
    source           text        NOT NULL CHECK (source IN ('WALLET', 'CSV')),
    source_key       text        NOT NULL,
    trade_event_id   bigint      REFERENCES trade_event (id),
    wallet_user_id   bigint      REFERENCES followed_user (id),
    import_file      text,
    import_line      integer,
    -- The formats are checked where the rows come from (trade_event's own checks, the
    -- importer's parser): a regular expression per row would triple an import's time.
    tx_hash          text        CHECK (length(tx_hash) = 66),
    asset_id         text        NOT NULL CHECK (length(asset_id) BETWEEN 1 AND 78),
    side             text        NOT NULL CHECK (side IN ('BUY', 'SELL')),
    price_micros     bigint      NOT NULL CHECK (price_micros BETWEEN 0 AND 1000000),
    share_micros     bigint      NOT NULL CHECK (share_micros > 0),
    fee_micros       bigint      NOT NULL DEFAULT 0 CHECK (fee_micros >= 0),
    event_time       timestamptz NOT NULL,
    added_at         timestamptz NOT NULL,
    copy_group_id    bigint      REFERENCES copy_group (id),
    paired_at        timestamptz,            -- when pairing last looked (NULL: not yet)
    CONSTRAINT real_copy_fill_key UNIQUE (source, source_key),
    CONSTRAINT real_copy_fill_source CHECK (
        (source = 'WALLET') = (trade_event_id IS NOT NULL AND wallet_user_id IS NOT NULL))
);
CREATE INDEX real_copy_fill_leader_time_idx ON real_copy_fill (leader_user_id, event_time);
CREATE INDEX real_copy_fill_tx_idx ON real_copy_fill (tx_hash);
CREATE INDEX real_copy_fill_unpaired_idx ON real_copy_fill (id) WHERE paired_at IS NULL;

-- The attribution of each paired real fill at its asset's mark X, as copy_attribution's
-- with T0 = T = F (so sizing, skip and unfilled are 0): ideal = σF(X − P), exec =
-- σF(X − V) − fee, latency = σF(M − P) and slippage = σF(V − M) with M the mid of the
-- stored book nearest the fill within 30 s (none: latency NULL, unknown, and slippage
-- holds V − P whole, as in copy_attribution).
CREATE TABLE real_copy_attribution (
    real_copy_fill_id      bigint PRIMARY KEY REFERENCES real_copy_fill (id) ON DELETE CASCADE,
    copy_group_id          bigint NOT NULL REFERENCES copy_group (id),
    their_price_micros     bigint NOT NULL,
    order_book_snapshot_id bigint REFERENCES order_book_snapshot (id),
    mid_micros             bigint,
    mark_micros            bigint NOT NULL CHECK (mark_micros BETWEEN 0 AND 1000000),
    ideal_micros           bigint NOT NULL,
    exec_micros            bigint NOT NULL,
    latency_micros         bigint,
    slippage_micros        bigint,
    fee_micros             bigint NOT NULL,
    marked_at              timestamptz NOT NULL,
    final                  boolean NOT NULL DEFAULT false,
    updated_at             timestamptz NOT NULL
);
ALTER TABLE real_copy_attribution SET (fillfactor = 80);
-- Prune keeps the books a pair names (the foreign key's check is this index's probe).
CREATE INDEX real_copy_attribution_book_idx ON real_copy_attribution (order_book_snapshot_id);

-- Pairing's lookups: a leader's groups of one asset and side by their first fill.
CREATE INDEX copy_group_pairing_idx ON copy_group (followed_user_id, asset_id, action, window_start)
    WHERE action IN ('BUY', 'SELL');
-- ... and the groups closed since its last run (fills they may pair with are looked at again).
CREATE INDEX copy_group_closed_idx ON copy_group (closed_at) WHERE action IN ('BUY', 'SELL');

-- The execution score of each paired real fill, per version (as execution_score). Cost
-- and congestion need the book: without one they, and the total, are NULL (unknown).
CREATE TABLE real_copy_score (
    real_copy_fill_id bigint  NOT NULL REFERENCES real_copy_fill (id) ON DELETE CASCADE,
    version           text    NOT NULL,
    timing_cpts       integer NOT NULL CHECK (timing_cpts BETWEEN 0 AND 4000),
    financial_cpts    integer NOT NULL CHECK (financial_cpts BETWEEN 0 AND 3500),
    cost_cpts         integer CHECK (cost_cpts BETWEEN 0 AND 1500),
    congestion_cpts   integer CHECK (congestion_cpts BETWEEN 0 AND 1000),
    total_cpts        integer CHECK (total_cpts BETWEEN 0 AND 10000),
    scored_at         timestamptz NOT NULL,
    PRIMARY KEY (real_copy_fill_id, version)
);

-- The mark X of an asset for attribution (SPEC §10), one rule for the simulated and the
-- real copies' rows: its payout once its market resolved (final), else its newest stored
-- mid and when that was observed (the caller decides whether it is fresh enough).
-- Plain SQL, so the planner inlines it into the caller's query.
CREATE FUNCTION asset_mark(asset text)
RETURNS TABLE (mark bigint, marked_at timestamptz, final boolean)
LANGUAGE sql STABLE AS $$
  SELECT coalesce(r.payout_micros, m.mid_micros), coalesce(r.resolved_at, m.observed_at),
         r.payout_micros IS NOT NULL
  FROM (SELECT) one
  LEFT JOIN LATERAL (
    SELECT o.payout_micros, k.resolved_at FROM outcome_asset o
    JOIN market k ON k.condition_id = o.condition_id
    WHERE o.asset_id = asset AND o.payout_micros IS NOT NULL AND k.resolved_at IS NOT NULL
  ) r ON true
  LEFT JOIN LATERAL (
    SELECT p.mid_micros, p.observed_at FROM market_price_snapshot p
    WHERE p.asset_id = asset ORDER BY p.bucket DESC LIMIT 1
  ) m ON true
$$;
