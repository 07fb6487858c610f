-- One request budget per upstream (and per rate-limited path) shared by every process
-- and host on this database (common/store/budget.py): a token bucket whose tokens and
-- current rate live here, refilled by the database's clock. UNLOGGED: it is rebuilt
-- full on its first use after a crash, and writes cost no WAL.
CREATE UNLOGGED TABLE request_budget (
    name text PRIMARY KEY,          -- 'data_api', 'data_api/trades', 'clob', ...
    tokens_micros bigint NOT NULL,  -- tokens × 10^6; below 0: requests promised a slot
    rate_micros bigint NOT NULL,    -- requests/s × 10^6 now (a 429 halves it)
    nominal_rate_micros bigint NOT NULL,
    burst integer NOT NULL,
    stamp timestamptz NOT NULL,        -- when tokens were last counted
    slowed_at timestamptz,             -- the last 429 anyone saw
    requests bigint NOT NULL DEFAULT 0
);
