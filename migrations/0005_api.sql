-- The write API (issue 6): "Test config" requests, and reverts that name what they undo.

-- One row per "Test config" request; `functions/config_test.py` claims PENDING rows
-- (FOR UPDATE SKIP LOCKED), runs the what-if and keeps its report. A run left RUNNING
-- by a crash is queued again; `attempts` stops a request that kills its runner every
-- time from being retried forever.
CREATE TABLE config_test (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    requested_at timestamptz NOT NULL DEFAULT now(),
    requested_by text        NOT NULL,
    request_id   text,
    -- {"global": {field: value}, "users": {"<id>": {field: value or null = inherit}}}
    proposal     jsonb       NOT NULL,
    hours        integer     NOT NULL DEFAULT 24 CHECK (hours BETWEEN 1 AND 168),  -- whole hours: no float columns
    state        text        NOT NULL DEFAULT 'PENDING'
                 CHECK (state IN ('PENDING', 'RUNNING', 'DONE', 'FAILED')),
    attempts     integer     NOT NULL DEFAULT 0,
    started_at   timestamptz,
    finished_at  timestamptz,
    report       jsonb,
    error        text
);
CREATE INDEX config_test_state_idx ON config_test (state, id);

-- A revert is itself audited and points at the audit row it undid.
ALTER TABLE audit_log ADD COLUMN reverts_audit_id bigint REFERENCES audit_log (id);
