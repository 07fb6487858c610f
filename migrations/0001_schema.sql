-- Oculus data model (SPEC §3). Money, prices and share amounts are BIGINT micros
-- (6 decimals); nothing here is a float. Every time is UTC timestamptz.
-- Natural keys are constraints: a replay collides instead of double-counting.

CREATE TABLE followed_user (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    label           text        NOT NULL CHECK (length(label) BETWEEN 1 AND 100),
    profile_wallet  text        NOT NULL UNIQUE CHECK (profile_wallet ~ '^0x[0-9a-f]{40}$'),
    enabled         boolean     NOT NULL DEFAULT true,
    copy_mode       text        NOT NULL DEFAULT 'ACTIVE'
                    CHECK (copy_mode IN ('ACTIVE', 'BUY_ONLY', 'SELL_ONLY', 'PAUSED', 'REMOVED')),
    followed_at     timestamptz NOT NULL,
    seeded_at       timestamptz,            -- when /positions seeded the shadow book
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- The wallets whose fills belong to a followed user (Polymarket proxy / safe wallets).
CREATE TABLE followed_user_proxy_wallet (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    followed_user_id bigint      NOT NULL REFERENCES followed_user (id),
    wallet           text        NOT NULL UNIQUE CHECK (wallet ~ '^0x[0-9a-f]{40}$'),
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX followed_user_proxy_wallet_user_idx ON followed_user_proxy_wallet (followed_user_id);

-- Guardrails: one GLOBAL row per version (every column set) and optional USER override
-- versions (NULL = inherit). A change inserts version + 1; the highest version is in force.
CREATE TABLE guardrail_config (
    id                         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope                      text    NOT NULL CHECK (scope IN ('GLOBAL', 'USER')),
    followed_user_id           bigint  REFERENCES followed_user (id),
    version                    integer NOT NULL CHECK (version >= 1),
    max_worse_than_theirs_micros bigint CHECK (max_worse_than_theirs_micros >= 0),
    max_chase_vs_mid_micros    bigint  CHECK (max_chase_vs_mid_micros >= 0),
    max_spread_micros          bigint  CHECK (max_spread_micros >= 0),
    min_depth_ratio_bps        integer CHECK (min_depth_ratio_bps >= 0),
    allow_partial_fills        boolean,
    decision_delay_ms          integer CHECK (decision_delay_ms >= 0),
    decision_jitter_ms         integer CHECK (decision_jitter_ms >= 0),
    group_window_ms            integer CHECK (group_window_ms > 0),
    no_open_before_close_s     integer CHECK (no_open_before_close_s >= 0),
    max_total_exposure_bps     integer CHECK (max_total_exposure_bps BETWEEN 0 AND 10000),
    max_market_exposure_bps    integer CHECK (max_market_exposure_bps BETWEEN 0 AND 10000),
    max_user_exposure_bps      integer CHECK (max_user_exposure_bps BETWEEN 0 AND 10000),
    daily_loss_limit_bps       integer CHECK (daily_loss_limit_bps BETWEEN 0 AND 10000),
    weekly_loss_limit_bps      integer CHECK (weekly_loss_limit_bps BETWEEN 0 AND 10000),
    max_drawdown_bps           integer CHECK (max_drawdown_bps BETWEEN 0 AND 10000),
    created_at                 timestamptz NOT NULL DEFAULT now(),
    created_by                 text        NOT NULL DEFAULT 'system',
    CONSTRAINT guardrail_config_scope_user CHECK ((scope = 'GLOBAL') = (followed_user_id IS NULL)),
    CONSTRAINT guardrail_config_global_complete CHECK (scope = 'USER' OR (
        max_worse_than_theirs_micros IS NOT NULL AND max_chase_vs_mid_micros IS NOT NULL
        AND max_spread_micros IS NOT NULL AND min_depth_ratio_bps IS NOT NULL
        AND allow_partial_fills IS NOT NULL AND decision_delay_ms IS NOT NULL
        AND decision_jitter_ms IS NOT NULL AND group_window_ms IS NOT NULL
        AND no_open_before_close_s IS NOT NULL AND max_total_exposure_bps IS NOT NULL
        AND max_market_exposure_bps IS NOT NULL AND max_user_exposure_bps IS NOT NULL
        AND daily_loss_limit_bps IS NOT NULL AND weekly_loss_limit_bps IS NOT NULL
        AND max_drawdown_bps IS NOT NULL)),
    CONSTRAINT guardrail_config_version_key UNIQUE NULLS NOT DISTINCT (scope, followed_user_id, version)
);

-- Sizing, versioned the same way. Percentages are basis points (100 bps = 1 %).
CREATE TABLE copy_sizing_config (
    id                        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope                     text    NOT NULL CHECK (scope IN ('GLOBAL', 'USER')),
    followed_user_id          bigint  REFERENCES followed_user (id),
    version                   integer NOT NULL CHECK (version >= 1),
    copy_pct_bps              integer CHECK (copy_pct_bps BETWEEN 0 AND 100000),
    min_trade_notional_micros bigint  CHECK (min_trade_notional_micros >= 0),
    max_trade_notional_micros bigint  CHECK (max_trade_notional_micros >= 0),
    max_trade_equity_bps      integer CHECK (max_trade_equity_bps BETWEEN 0 AND 10000),
    starting_cash_micros      bigint  CHECK (starting_cash_micros >= 0),
    created_at                timestamptz NOT NULL DEFAULT now(),
    created_by                text        NOT NULL DEFAULT 'system',
    CONSTRAINT copy_sizing_config_scope_user CHECK ((scope = 'GLOBAL') = (followed_user_id IS NULL)),
    CONSTRAINT copy_sizing_config_global_complete CHECK (scope = 'USER' OR (
        copy_pct_bps IS NOT NULL AND min_trade_notional_micros IS NOT NULL
        AND max_trade_notional_micros IS NOT NULL AND max_trade_equity_bps IS NOT NULL
        AND starting_cash_micros IS NOT NULL)),
    CONSTRAINT copy_sizing_config_version_key UNIQUE NULLS NOT DISTINCT (scope, followed_user_id, version)
);

-- The spec's defaults, as version 1.
INSERT INTO guardrail_config (scope, version, max_worse_than_theirs_micros, max_chase_vs_mid_micros,
    max_spread_micros, min_depth_ratio_bps, allow_partial_fills, decision_delay_ms,
    decision_jitter_ms, group_window_ms, no_open_before_close_s, max_total_exposure_bps,
    max_market_exposure_bps, max_user_exposure_bps, daily_loss_limit_bps, weekly_loss_limit_bps,
    max_drawdown_bps)
VALUES ('GLOBAL', 1, 10000, 15000, 20000, 12500, true, 750, 250, 2000, 1800, 7000, 500, 2000,
    300, 800, 1200);
INSERT INTO copy_sizing_config (scope, version, copy_pct_bps, min_trade_notional_micros,
    max_trade_notional_micros, max_trade_equity_bps, starting_cash_micros)
VALUES ('GLOBAL', 1, 100, 5000000, 250000000, 75, 10000000000);

-- Global switches the write API flips: exactly one row.
CREATE TABLE system_control (
    id         smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    paused     boolean     NOT NULL DEFAULT false,
    reason     text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text        NOT NULL DEFAULT 'system'
);
INSERT INTO system_control (id) VALUES (1);

CREATE TABLE market (
    condition_id           text PRIMARY KEY CHECK (condition_id ~ '^0x[0-9a-f]{64}$'),
    gamma_id               text UNIQUE,
    question               text,
    slug                   text,
    event_slug             text,
    end_time               timestamptz,
    active                 boolean,
    closed                 boolean NOT NULL DEFAULT false,
    accepting_orders       boolean,
    neg_risk               boolean NOT NULL DEFAULT false,
    tick_size_micros       bigint CHECK (tick_size_micros > 0),
    min_order_size_micros  bigint CHECK (min_order_size_micros >= 0),
    fees_enabled           boolean NOT NULL DEFAULT false,
    fee_rate_micros        bigint NOT NULL DEFAULT 0 CHECK (fee_rate_micros BETWEEN 0 AND 1000000),
    fee_exponent           integer NOT NULL DEFAULT 1,
    fee_taker_only         boolean NOT NULL DEFAULT true,
    resolved_at            timestamptz,
    blacklisted            boolean NOT NULL DEFAULT false,
    first_seen_at          timestamptz NOT NULL DEFAULT now(),
    metadata_fetched_at    timestamptz
);

CREATE TABLE outcome_asset (
    asset_id       text PRIMARY KEY CHECK (asset_id ~ '^[0-9]{1,78}$'),
    condition_id   text NOT NULL REFERENCES market (condition_id),
    outcome        text,
    outcome_index  smallint CHECK (outcome_index >= 0),
    payout_micros  bigint CHECK (payout_micros BETWEEN 0 AND 1000000), -- set at resolution
    CONSTRAINT outcome_asset_market_index_key UNIQUE (condition_id, outcome_index)
);

-- One row per normalized fill of a followed wallet. A fill seen on chain first carries its
-- chain identity; the Data API row that confirms it later fills api_source_id, so both
-- sources make one event.
CREATE TABLE trade_event (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source               text   NOT NULL CHECK (source IN ('DATA_API', 'CHAIN')),
    source_id            text   NOT NULL,
    followed_user_id     bigint NOT NULL REFERENCES followed_user (id),
    wallet               text   NOT NULL CHECK (wallet ~ '^0x[0-9a-f]{40}$'),
    condition_id         text,
    asset_id             text   NOT NULL CHECK (asset_id ~ '^[0-9]{1,78}$'),
    side                 text   NOT NULL CHECK (side IN ('BUY', 'SELL')),
    role                 text   CHECK (role IN ('MAKER', 'TAKER')),
    price_micros         bigint NOT NULL CHECK (price_micros BETWEEN 0 AND 1000000),
    share_micros         bigint NOT NULL CHECK (share_micros > 0),
    usdc_notional_micros bigint NOT NULL CHECK (usdc_notional_micros >= 0),
    fee_micros           bigint NOT NULL DEFAULT 0 CHECK (fee_micros >= 0),
    tx_hash              text   CHECK (tx_hash ~ '^0x[0-9a-f]{64}$'),
    log_index            integer,
    block_number         bigint,
    api_source_id        text   UNIQUE,     -- the Data API identity, once seen
    event_time           timestamptz NOT NULL,
    detect_time          timestamptz NOT NULL,
    confirmed_at         timestamptz,       -- when the second source agreed
    reorg_state          text CHECK (reorg_state IN ('REMOVED', 'FLAGGED')),
    payload              jsonb,
    CONSTRAINT trade_event_source_key UNIQUE (source, source_id),
    CONSTRAINT trade_event_chain_key UNIQUE (tx_hash, log_index)
);
CREATE INDEX trade_event_user_time_idx ON trade_event (followed_user_id, event_time);
CREATE INDEX trade_event_detect_idx ON trade_event (detect_time);
CREATE INDEX trade_event_tx_idx ON trade_event (tx_hash);

CREATE TABLE activity_event (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source           text   NOT NULL CHECK (source IN ('DATA_API', 'CHAIN')),
    source_id        text   NOT NULL,
    followed_user_id bigint NOT NULL REFERENCES followed_user (id),
    wallet           text   NOT NULL CHECK (wallet ~ '^0x[0-9a-f]{40}$'),
    activity_type    text   NOT NULL CHECK (activity_type IN ('SPLIT', 'MERGE', 'REDEEM', 'CONVERSION')),
    condition_id     text   NOT NULL,
    asset_id         text,
    share_micros     bigint NOT NULL CHECK (share_micros >= 0),
    usdc_micros      bigint NOT NULL CHECK (usdc_micros >= 0),
    price_micros     bigint CHECK (price_micros BETWEEN 0 AND 1000000),
    tx_hash          text   CHECK (tx_hash ~ '^0x[0-9a-f]{64}$'),
    event_time       timestamptz NOT NULL,
    detect_time      timestamptz NOT NULL,
    payload          jsonb,
    CONSTRAINT activity_event_source_key UNIQUE (source, source_id)
);
CREATE INDEX activity_event_user_time_idx ON activity_event (followed_user_id, event_time);

-- L2 books as fetched for a decision; levels sorted best first, as parallel arrays.
CREATE TABLE order_book_snapshot (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    asset_id               text        NOT NULL,
    condition_id           text,
    book_hash              text        NOT NULL DEFAULT '',
    book_time              timestamptz NOT NULL,     -- the exchange's timestamp
    fetched_at             timestamptz NOT NULL,     -- our clock
    bid_prices_micros      bigint[]    NOT NULL,
    bid_sizes_micros       bigint[]    NOT NULL,
    ask_prices_micros      bigint[]    NOT NULL,
    ask_sizes_micros       bigint[]    NOT NULL,
    tick_size_micros       bigint,
    min_order_size_micros  bigint,
    neg_risk               boolean,
    last_trade_price_micros bigint,
    CONSTRAINT order_book_snapshot_levels CHECK (
        cardinality(bid_prices_micros) = cardinality(bid_sizes_micros)
        AND cardinality(ask_prices_micros) = cardinality(ask_sizes_micros)),
    CONSTRAINT order_book_snapshot_key UNIQUE (asset_id, book_time, book_hash)
);
CREATE INDEX order_book_snapshot_fetched_idx ON order_book_snapshot (fetched_at);

CREATE TABLE copy_attempt (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    portfolio_scope         text   NOT NULL CHECK (portfolio_scope IN ('EXEC_USER', 'EXEC_GLOBAL')),
    followed_user_id        bigint NOT NULL REFERENCES followed_user (id),
    group_key               text   NOT NULL,
    action                  text   NOT NULL CHECK (action IN ('BUY', 'SELL', 'MERGE', 'SPLIT')),
    condition_id            text,
    asset_id                text,
    guardrail_config_id     bigint REFERENCES guardrail_config (id),
    copy_sizing_config_id   bigint REFERENCES copy_sizing_config (id),
    their_notional_micros   bigint NOT NULL CHECK (their_notional_micros >= 0),
    their_price_micros      bigint CHECK (their_price_micros BETWEEN 0 AND 1000000),
    target_notional_micros  bigint NOT NULL CHECK (target_notional_micros >= 0),
    target_share_micros     bigint NOT NULL CHECK (target_share_micros >= 0),
    decision                text   NOT NULL CHECK (decision IN ('EXECUTE', 'SKIP')),
    reason_codes            text[] NOT NULL DEFAULT '{}',
    best_bid_micros         bigint,
    best_ask_micros         bigint,
    mid_micros              bigint,
    vwap_micros             bigint,
    filled_share_micros     bigint NOT NULL DEFAULT 0 CHECK (filled_share_micros >= 0),
    filled_notional_micros  bigint NOT NULL DEFAULT 0 CHECK (filled_notional_micros >= 0),
    filled_ratio_micros     bigint NOT NULL DEFAULT 0 CHECK (filled_ratio_micros BETWEEN 0 AND 1000000),
    fee_micros              bigint NOT NULL DEFAULT 0 CHECK (fee_micros >= 0),
    group_close_time        timestamptz NOT NULL,
    decision_time           timestamptz NOT NULL,
    order_book_snapshot_id  bigint REFERENCES order_book_snapshot (id),
    created_at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT copy_attempt_skip_has_reason CHECK (decision = 'EXECUTE' OR cardinality(reason_codes) > 0),
    CONSTRAINT copy_attempt_key UNIQUE (portfolio_scope, followed_user_id, group_key)
);
CREATE INDEX copy_attempt_decision_time_idx ON copy_attempt (decision_time);

-- One row per book level an executed copy consumed.
CREATE TABLE executable_fill (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    copy_attempt_id  bigint NOT NULL REFERENCES copy_attempt (id),
    level_index      integer NOT NULL CHECK (level_index >= 0),
    price_micros     bigint NOT NULL CHECK (price_micros BETWEEN 0 AND 1000000),
    share_micros     bigint NOT NULL CHECK (share_micros > 0),
    notional_micros  bigint NOT NULL CHECK (notional_micros >= 0),
    fee_micros       bigint NOT NULL DEFAULT 0 CHECK (fee_micros >= 0),
    CONSTRAINT executable_fill_key UNIQUE (copy_attempt_id, level_index)
);

-- Append-only books of every portfolio. ref_id names the input the entry derives from
-- (e.g. 'trade:17', 'attempt:42:level:0'), so a replay collides on the key.
CREATE TABLE ledger_entry (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    portfolio_scope    text   NOT NULL CHECK (portfolio_scope IN ('SHADOW_USER', 'EXEC_USER', 'EXEC_GLOBAL')),
    followed_user_id   bigint REFERENCES followed_user (id),
    condition_id       text,
    asset_id           text,
    entry_type         text   NOT NULL CHECK (entry_type IN ('DEPOSIT', 'SEED', 'TRADE_FILL', 'MERGE',
                           'SPLIT', 'REDEEM', 'CONVERSION', 'FEE', 'MARK', 'SETTLEMENT')),
    share_delta_micros bigint NOT NULL DEFAULT 0,
    cash_delta_micros  bigint NOT NULL DEFAULT 0,
    price_micros       bigint CHECK (price_micros BETWEEN 0 AND 1000000),
    ref_id             text   NOT NULL,
    effective_time     timestamptz NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_entry_scope_user CHECK ((portfolio_scope = 'EXEC_GLOBAL') = (followed_user_id IS NULL)),
    CONSTRAINT ledger_entry_key UNIQUE (portfolio_scope, ref_id, entry_type)
);
CREATE INDEX ledger_entry_portfolio_idx ON ledger_entry (portfolio_scope, followed_user_id, id);
CREATE INDEX ledger_entry_asset_idx ON ledger_entry (asset_id) WHERE asset_id IS NOT NULL;

CREATE TABLE portfolio_snapshot (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    portfolio_scope        text   NOT NULL CHECK (portfolio_scope IN ('SHADOW_USER', 'EXEC_USER', 'EXEC_GLOBAL')),
    followed_user_id       bigint REFERENCES followed_user (id),
    bucket                 timestamptz NOT NULL CHECK (date_trunc('minute', bucket) = bucket),
    equity_micros          bigint NOT NULL,
    cash_micros            bigint NOT NULL,
    exposure_micros        bigint NOT NULL,
    unrealized_pnl_micros  bigint NOT NULL,
    realized_pnl_micros    bigint NOT NULL,
    fees_micros            bigint NOT NULL DEFAULT 0,
    open_positions         integer NOT NULL DEFAULT 0,
    last_ledger_entry_id   bigint,
    CONSTRAINT portfolio_snapshot_scope_user CHECK ((portfolio_scope = 'EXEC_GLOBAL') = (followed_user_id IS NULL)),
    CONSTRAINT portfolio_snapshot_key UNIQUE NULLS NOT DISTINCT (portfolio_scope, followed_user_id, bucket)
);

CREATE TABLE market_price_snapshot (
    asset_id     text        NOT NULL,
    bucket       timestamptz NOT NULL,   -- 30 s buckets
    mid_micros   bigint      NOT NULL CHECK (mid_micros BETWEEN 0 AND 1000000),
    price_source text        NOT NULL CHECK (price_source IN ('MIDPOINT', 'LAST_TRADE', 'RESOLUTION')),
    observed_at  timestamptz NOT NULL,
    PRIMARY KEY (asset_id, bucket)
);

-- Cursors: last block seen, last API time per user and feed.
CREATE TABLE system_checkpoint (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text   NOT NULL,
    followed_user_id bigint REFERENCES followed_user (id),
    cursor_int       bigint,
    cursor_time      timestamptz,
    cursor_text      text,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT system_checkpoint_key UNIQUE NULLS NOT DISTINCT (name, followed_user_id)
);

CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL,
    action      text        NOT NULL,
    target_type text        NOT NULL,
    target_id   text,
    before      jsonb,
    after       jsonb,
    request_id  text
);
CREATE INDEX audit_log_at_idx ON audit_log (at);

CREATE TABLE job_run (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job         text        NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    status      text        NOT NULL CHECK (status IN ('RUNNING', 'OK', 'FAILED', 'TIMEOUT')),
    items       integer     NOT NULL DEFAULT 0,
    counts      jsonb       NOT NULL DEFAULT '{}',
    error       text,
    pid         integer,
    host        text
);
CREATE INDEX job_run_job_started_idx ON job_run (job, started_at DESC);

-- Heartbeats of the long-running processes (listener, scheduler, site builder).
CREATE TABLE process_heartbeat (
    process    text PRIMARY KEY,
    pid        integer,
    host       text,
    started_at timestamptz NOT NULL,
    beat_at    timestamptz NOT NULL,
    info       jsonb NOT NULL DEFAULT '{}'
);

-- Every payload that did not parse or validate, kept with its reason. The same payload
-- seen again bumps seen_count instead of piling up.
CREATE TABLE quarantine (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source         text        NOT NULL,
    reason         text        NOT NULL,
    payload        text        NOT NULL,
    payload_sha256 text        NOT NULL,
    context        jsonb       NOT NULL DEFAULT '{}',
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    seen_count     integer     NOT NULL DEFAULT 1,
    resolved_at    timestamptz,
    CONSTRAINT quarantine_key UNIQUE (source, payload_sha256)
);

-- Work items that failed after retries, with payload and error, for the status page and
-- for rerunning.
CREATE TABLE failed_item (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stage           text        NOT NULL,
    item_key        text        NOT NULL,
    payload         jsonb,
    error           text        NOT NULL,
    attempts        integer     NOT NULL DEFAULT 1,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    CONSTRAINT failed_item_key UNIQUE (stage, item_key)
);
