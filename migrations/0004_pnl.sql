-- Marks, settlement and snapshots (issue 5).

-- The running state the snapshot job keeps per portfolio, so each run reads only the
-- ledger entries newer than its watermark: totals per portfolio and, per asset, the
-- shares and their average-cost basis.
CREATE TABLE portfolio_state (
    portfolio_scope      text   NOT NULL CHECK (portfolio_scope IN ('SHADOW_USER', 'EXEC_USER', 'EXEC_GLOBAL')),
    followed_user_id     bigint REFERENCES followed_user (id),
    cash_micros          bigint NOT NULL DEFAULT 0,
    contributed_micros   bigint NOT NULL DEFAULT 0,   -- deposits + the cost of seeded positions
    realized_pnl_micros  bigint NOT NULL DEFAULT 0,   -- fees included
    fees_micros          bigint NOT NULL DEFAULT 0,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT portfolio_state_key UNIQUE NULLS NOT DISTINCT (portfolio_scope, followed_user_id)
);
CREATE TABLE portfolio_position (
    portfolio_scope      text   NOT NULL,
    followed_user_id     bigint REFERENCES followed_user (id),
    asset_id             text   NOT NULL,
    condition_id         text,
    share_micros         bigint NOT NULL,
    cost_micros          bigint NOT NULL,
    last_price_micros    bigint,
    CONSTRAINT portfolio_position_key UNIQUE NULLS NOT DISTINCT (portfolio_scope, followed_user_id, asset_id)
);
CREATE INDEX portfolio_position_asset_idx ON portfolio_position (asset_id) WHERE share_micros <> 0;

-- A snapshot names its cut: ledger entries up to last_ledger_entry_id (already there),
-- marks observed up to as_of; a rebuild from the ledger reproduces it exactly.
ALTER TABLE portfolio_snapshot ADD COLUMN as_of timestamptz;
ALTER TABLE portfolio_snapshot ADD COLUMN contributed_micros bigint NOT NULL DEFAULT 0;
CREATE INDEX portfolio_snapshot_bucket_idx ON portfolio_snapshot (bucket);

-- The notional inside the allowed price band when the copy was decided (market pages).
ALTER TABLE copy_attempt ADD COLUMN depth_in_band_micros bigint;

-- Rollups for the pages, kept incrementally by `functions/rollup.py` (histograms are
-- {bucket upper edge: count} objects, mergeable day by day).
CREATE TABLE rollup_attempt_daily (
    portfolio_scope     text   NOT NULL,
    followed_user_id    bigint NOT NULL REFERENCES followed_user (id),
    day                 date   NOT NULL,
    attempts            integer NOT NULL DEFAULT 0,
    executed            integer NOT NULL DEFAULT 0,
    partial             integer NOT NULL DEFAULT 0,
    target_notional_micros bigint NOT NULL DEFAULT 0,
    filled_notional_micros bigint NOT NULL DEFAULT 0,
    fees_micros         bigint NOT NULL DEFAULT 0,
    reasons             jsonb  NOT NULL DEFAULT '{}',
    slip_their_bps      jsonb  NOT NULL DEFAULT '{}',
    slip_mid_bps        jsonb  NOT NULL DEFAULT '{}',
    PRIMARY KEY (portfolio_scope, followed_user_id, day)
);
CREATE TABLE rollup_detect_daily (
    followed_user_id    bigint NOT NULL REFERENCES followed_user (id),
    source              text   NOT NULL,
    day                 date   NOT NULL,
    fills               integer NOT NULL DEFAULT 0,
    lag_ms              jsonb  NOT NULL DEFAULT '{}',
    PRIMARY KEY (followed_user_id, source, day)
);
CREATE TABLE rollup_market_daily (
    condition_id        text   NOT NULL,
    day                 date   NOT NULL,
    decisions           integer NOT NULL DEFAULT 0,
    executed            integer NOT NULL DEFAULT 0,
    spread_sum_micros   bigint NOT NULL DEFAULT 0,
    spread_n            integer NOT NULL DEFAULT 0,
    depth_sum_micros    bigint NOT NULL DEFAULT 0,
    depth_n             integer NOT NULL DEFAULT 0,
    slip_their_bps      jsonb  NOT NULL DEFAULT '{}',
    PRIMARY KEY (condition_id, day)
);
-- One row per position closed by a resolution: WON / LOST, and whether the shadow user
-- left it unredeemed (settled by us; honest win rates count it).
CREATE TABLE rollup_resolution (
    portfolio_scope     text   NOT NULL,
    followed_user_id    bigint REFERENCES followed_user (id),
    asset_id            text   NOT NULL,
    condition_id        text,
    ref_id              text   NOT NULL,
    outcome             text   NOT NULL CHECK (outcome IN ('WON', 'LOST')),
    unredeemed          boolean NOT NULL DEFAULT false,
    share_micros        bigint NOT NULL,
    payout_micros       bigint NOT NULL,
    resolved_at         timestamptz NOT NULL,
    CONSTRAINT rollup_resolution_key UNIQUE NULLS NOT DISTINCT (portfolio_scope, followed_user_id, asset_id, ref_id)
);

-- The global portfolio's shares attributed to the user whose signal bought them (the
-- "exposure by user" view); a settlement zeroes the asset for everyone.
CREATE TABLE rollup_global_exposure (
    followed_user_id    bigint NOT NULL REFERENCES followed_user (id),
    asset_id            text   NOT NULL,
    condition_id        text,
    share_micros        bigint NOT NULL,
    PRIMARY KEY (followed_user_id, asset_id)
);
