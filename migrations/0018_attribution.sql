-- Intelligence (SPEC §10): T0 on every attempt, the attribution of each BUY/SELL attempt
-- at the asset's current mark, and the execution score of each EXECUTE (functions/score.py).

-- T0: the target shares before clamps, caps and cash (copy % × their notional / their
-- price; exits: the fraction of our shares). Set by the copy engine on every new attempt;
-- older attempts get it from their stored fields (the score job's `fill_ideal`).
ALTER TABLE copy_attempt ADD COLUMN ideal_share_micros bigint CHECK (ideal_share_micros >= 0);

-- One row per BUY/SELL attempt: ideal − exec = sizing + skip + unfilled + latency +
-- slippage + fee, each to the micro, at the mark X (the asset's latest mark, or its
-- payout once resolved: the row is then final and never recomputed).
CREATE TABLE copy_attribution (
    copy_attempt_id   bigint PRIMARY KEY REFERENCES copy_attempt (id) ON DELETE CASCADE,
    mark_micros       bigint NOT NULL CHECK (mark_micros BETWEEN 0 AND 1000000),
    ideal_micros      bigint NOT NULL,
    exec_micros       bigint NOT NULL,
    sizing_micros     bigint NOT NULL,
    skip_micros       bigint NOT NULL,
    skip_reason       text,            -- a SKIP's first reason code (its skip is counted there)
    unfilled_micros   bigint NOT NULL,
    latency_micros    bigint,          -- NULL: unknown (no mid at decision)
    slippage_micros   bigint,
    fee_micros        bigint NOT NULL,
    marked_at         timestamptz NOT NULL,  -- the mark's time
    final             boolean NOT NULL DEFAULT false,  -- marked at the payout
    updated_at        timestamptz NOT NULL
);
-- Rewritten in place as marks move: room on each page for the new versions, and no index
-- on the columns that change, so the updates stay on their page (HOT).
ALTER TABLE copy_attribution SET (fillfactor = 80);

-- The execution score of each EXECUTE BUY/SELL attempt, per version of the formula
-- (a new version adds rows; old ones stay). Points in hundredths (integers: the schema
-- has no float or numeric columns): 4000 is the timing part's full 40.00.
CREATE TABLE execution_score (
    copy_attempt_id   bigint  NOT NULL REFERENCES copy_attempt (id) ON DELETE CASCADE,
    version           text    NOT NULL,
    timing_cpts       integer NOT NULL CHECK (timing_cpts BETWEEN 0 AND 4000),
    financial_cpts    integer NOT NULL CHECK (financial_cpts BETWEEN 0 AND 3500),
    cost_cpts         integer NOT NULL CHECK (cost_cpts BETWEEN 0 AND 1500),
    congestion_cpts   integer NOT NULL CHECK (congestion_cpts BETWEEN 0 AND 1000),
    total_cpts        integer NOT NULL CHECK (total_cpts BETWEEN 0 AND 10000),
    scored_at         timestamptz NOT NULL,
    PRIMARY KEY (copy_attempt_id, version)
);

-- The ideal copy over time (SPEC §10, the pages' "ideal copy" curve): per portfolio and
-- hour, Σ ideal and Σ exec over its attributed BUY/SELL attempts decided by then, at the
-- marks of that hour's first score run. One row per portfolio per hour, kept.
CREATE TABLE ideal_hourly (
    portfolio_scope   text   NOT NULL CHECK (portfolio_scope IN ('EXEC_USER', 'EXEC_GLOBAL')),
    followed_user_id  bigint REFERENCES followed_user (id),
    bucket            timestamptz NOT NULL CHECK (date_trunc('hour', bucket) = bucket),
    ideal_micros      bigint NOT NULL,
    exec_micros       bigint NOT NULL,
    attempts          integer NOT NULL,
    CONSTRAINT ideal_hourly_scope_user CHECK ((portfolio_scope = 'EXEC_GLOBAL') = (followed_user_id IS NULL)),
    CONSTRAINT ideal_hourly_key UNIQUE NULLS NOT DISTINCT (portfolio_scope, followed_user_id, bucket)
);

-- The BUY/SELL attempts by asset (the score job re-marks an asset's attempts when its mark
-- moves; it reads them from this index alone).
CREATE INDEX copy_attempt_asset_idx ON copy_attempt (asset_id, id)
    WHERE action IN ('BUY', 'SELL') AND asset_id IS NOT NULL;

-- Attempts without T0 yet (decided before it was recorded): few, and found at once.
CREATE INDEX copy_attempt_no_ideal_idx ON copy_attempt (id) WHERE ideal_share_micros IS NULL;
