-- SPEC §12 / issue 20: the latency sweep, stored for the pages. functions.sweep
-- re-decides the last OCULUS_SWEEP_HOURS of groups at each ladder delay under the
-- config in force (common/store/sweep.py) and keeps the report: per leader and for the
-- global portfolio, PnL, retention, fill rate and median slippage per delay, and the
-- half-life. The Leaders page and each leader's page read the newest row; the job keeps
-- the newest SWEEPS_KEPT rows.
CREATE TABLE latency_sweep (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    taken_at    timestamptz NOT NULL,
    range_start timestamptz NOT NULL,
    range_end   timestamptz NOT NULL,
    groups      integer     NOT NULL CHECK (groups >= 0),
    report      jsonb       NOT NULL,
    cpu_ms      integer     NOT NULL CHECK (cpu_ms >= 0)
);
CREATE INDEX latency_sweep_taken_idx ON latency_sweep (taken_at);
