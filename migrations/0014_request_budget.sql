-- One request budget per upstream (and per rate-limited path) shared by every process
-- and host on this database (common/store/budget.py): a token bucket whose tokens and
-- current rate live here, refilled by the database's clock. UNLOGGED: it is rebuilt
-- full on its first use after a crash, and writes cost no WAL.
CREATE UNLOGGED TABLE request_budget (
    name text PRIMARY KEY,          -- 'data_api', 'data_api/trades', 'clob', ...
    tokens double precision NOT NULL,  -- below 0: requests already promised a slot
    rate double precision NOT NULL,    -- requests/s now (a 429 halves it)
    nominal_rate double precision NOT NULL,
    burst integer NOT NULL,
    stamp timestamptz NOT NULL,        -- when tokens were last counted
    slowed_at timestamptz,             -- the last 429 anyone saw
    requests bigint NOT NULL DEFAULT 0
);
