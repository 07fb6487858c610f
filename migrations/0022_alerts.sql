-- SPEC §11 / issue 19: probes, rules, alerts, silences and the notification outbox.

-- One row per probe of an upstream (functions.metrics, every 30 s): one cheap request
-- each to the Data API, the CLOB and Gamma; the chain's eth_blockNumber and its head
-- block's timestamp. Kept as the metrics are (functions.prune).
CREATE TABLE upstream_probe (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    upstream       text        NOT NULL CHECK (upstream IN ('data_api', 'clob', 'gamma', 'chain')),
    at             timestamptz NOT NULL,
    ok             boolean     NOT NULL,
    latency_micros bigint      NOT NULL CHECK (latency_micros >= 0),  -- request time, µs
    status         integer,                                           -- HTTP status, if any
    error          text,                                              -- why it failed, bounded
    head_block     bigint,                                            -- chain: eth_blockNumber
    head_at        timestamptz                                        -- chain: that block's time
);
CREATE INDEX upstream_probe_at_idx ON upstream_probe (upstream, at);

-- Each rule's last evaluation (functions.rules), for the Alerts page.
CREATE TABLE alert_rule_eval (
    rule         text PRIMARY KEY,
    kind         text        NOT NULL CHECK (kind IN ('threshold', 'sql', 'file')),  -- file: rules.yaml's own error
    evaluated_at timestamptz NOT NULL,
    ok           boolean     NOT NULL,
    error        text,                  -- why the rule could not be evaluated
    series       integer     NOT NULL DEFAULT 0,   -- series (rows) it looked at
    holding      integer     NOT NULL DEFAULT 0,   -- of which its condition holds
    cpu_micros   bigint      NOT NULL DEFAULT 0
);

-- One alert instance per (rule, labels) episode: PENDING → FIRING → RESOLVED (or
-- PENDING → RESOLVED when the condition clears before `for`). At most one open
-- (PENDING or FIRING) instance per (rule, labels).
CREATE TABLE alert (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule          text        NOT NULL,
    labels        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    severity      text        NOT NULL CHECK (severity IN ('info', 'warn', 'error', 'critical')),
    state         text        NOT NULL CHECK (state IN ('PENDING', 'FIRING', 'RESOLVED')),
    since         timestamptz NOT NULL,          -- the condition first held
    fired_at      timestamptz,
    resolved_at   timestamptz,
    value_micros  bigint,                        -- the newest value seen, µ of its unit
    message       text,                          -- the newest rendered message
    notified      boolean     NOT NULL DEFAULT false,  -- its FIRING was sent (not silenced or cooling down)
    action_audit_id bigint REFERENCES audit_log (id),  -- the automation's write, if any
    updated_at    timestamptz NOT NULL
);
CREATE UNIQUE INDEX alert_open_key ON alert (rule, labels) WHERE state <> 'RESOLVED';
CREATE INDEX alert_recent_idx ON alert (updated_at);

-- Every transition of every alert, and what the automation did on it.
CREATE TABLE alert_transition (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id     bigint      NOT NULL REFERENCES alert (id) ON DELETE CASCADE,
    at           timestamptz NOT NULL,
    from_state   text        CHECK (from_state IN ('PENDING', 'FIRING', 'RESOLVED')),
    to_state     text        NOT NULL CHECK (to_state IN ('PENDING', 'FIRING', 'RESOLVED')),
    value_micros bigint,
    note         text          -- 'silenced until …', 'cooldown', 'dry run: would set …'
);
CREATE INDEX alert_transition_alert_idx ON alert_transition (alert_id, at);

-- Silences per (rule, labels): no notification while `until` is ahead. Written through
-- the audited write path, so a silence is reverted like any other write.
CREATE TABLE alert_silence (
    rule       text        NOT NULL,
    labels     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    until      timestamptz NOT NULL,
    reason     text,
    created_by text        NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (rule, labels)
);

-- The outbox: one row per (message, channel). `message_id` is stable per transition
-- and channel, so a receiver recognises the one duplicate a crash between sending and
-- recording may cause. functions.notify delivers; every attempt is recorded.
CREATE TABLE notification (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id  text        NOT NULL UNIQUE,
    channel     text        NOT NULL,           -- its name in rules.yaml
    alert_id    bigint      REFERENCES alert (id) ON DELETE SET NULL,
    payload     jsonb       NOT NULL,           -- {id, rule, severity, state, labels, value, message, at}
    created_at  timestamptz NOT NULL,
    next_at     timestamptz NOT NULL,           -- not before (backoff, Retry-After, rate limit)
    attempts    integer     NOT NULL DEFAULT 0,
    status      text        NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'SENT', 'DEAD')),
    sent_at     timestamptz,
    last_error  text
);
CREATE INDEX notification_due_idx ON notification (next_at) WHERE status = 'PENDING';
CREATE INDEX notification_recent_idx ON notification (created_at);

CREATE TABLE notification_attempt (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id bigint      NOT NULL REFERENCES notification (id) ON DELETE CASCADE,
    channel         text        NOT NULL,
    at              timestamptz NOT NULL,
    ok              boolean     NOT NULL,
    status          integer,                 -- HTTP or SMTP status, if any
    error           text,
    retry_after_s   integer,                 -- what the receiver asked for (429)
    duration_micros bigint      NOT NULL DEFAULT 0
);
CREATE INDEX notification_attempt_idx ON notification_attempt (notification_id, at);
CREATE INDEX notification_attempt_channel_idx ON notification_attempt (channel, at);

-- SQL rules run as this role: SELECT only (and in a read-only transaction with a 5 s
-- statement timeout, common/store/rules.py). Roles are the cluster's, so it may exist.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'oculus_rules_reader') THEN
        CREATE ROLE oculus_rules_reader NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
    END IF;
    EXECUTE format('GRANT oculus_rules_reader TO %I', current_user);
END
$$;
GRANT USAGE ON SCHEMA public TO oculus_rules_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO oculus_rules_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO oculus_rules_reader;
