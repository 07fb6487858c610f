-- The copy engine (issue 4): groups of a leader's fills, the decision bookkeeping, and
-- one more guardrail.

-- One group per (user, asset, side) — or (user, market, MERGE/SPLIT) — and window of the
-- leader's event time, anchored at its first event; the key comes from that event, so a
-- rerun forms the same groups. OPEN → CLOSED (aggregates fixed, decide_at set) → DONE
-- (both attempts written) or VOID (every member reorged out before it closed).
CREATE TABLE copy_group (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_key              text   NOT NULL UNIQUE,
    followed_user_id       bigint NOT NULL REFERENCES followed_user (id),
    action                 text   NOT NULL CHECK (action IN ('BUY', 'SELL', 'MERGE', 'SPLIT')),
    condition_id           text,
    asset_id               text,
    window_start           timestamptz NOT NULL,   -- the first event's time (leader clock)
    window_end             timestamptz NOT NULL,
    first_detect_time      timestamptz NOT NULL,   -- when we first saw it (our clock)
    close_time             timestamptz NOT NULL,   -- when its window has passed on our clock
    decide_at              timestamptz,            -- close + delay + jitter(key), set at close
    state                  text   NOT NULL DEFAULT 'OPEN'
                           CHECK (state IN ('OPEN', 'CLOSED', 'DONE', 'VOID')),
    event_count            integer NOT NULL DEFAULT 0,
    their_share_micros     bigint NOT NULL DEFAULT 0 CHECK (their_share_micros >= 0),
    their_notional_micros  bigint NOT NULL DEFAULT 0 CHECK (their_notional_micros >= 0),
    their_price_micros     bigint CHECK (their_price_micros BETWEEN 0 AND 1000000),
    order_book_snapshot_id bigint REFERENCES order_book_snapshot (id),
    closed_at              timestamptz,
    done_at                timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX copy_group_open_idx ON copy_group (followed_user_id, action, asset_id, condition_id)
    WHERE state = 'OPEN';
CREATE INDEX copy_group_fifo_idx ON copy_group (first_detect_time, window_start, group_key)
    WHERE state IN ('OPEN', 'CLOSED');
CREATE INDEX copy_group_detect_idx ON copy_group (first_detect_time);

-- Which group an event went to, or why none: HISTORY (before the user was seeded, or in
-- the seed), NOT_COPIED (REDEEM / CONVERSION: settlement is not a copy), REMOVED (reorged
-- out before grouping). NULL = not grouped yet.
ALTER TABLE trade_event ADD COLUMN copy_group_id bigint REFERENCES copy_group (id);
ALTER TABLE trade_event ADD COLUMN group_state text
    CHECK (group_state IN ('GROUPED', 'HISTORY', 'NOT_COPIED', 'REMOVED'));
ALTER TABLE activity_event ADD COLUMN copy_group_id bigint REFERENCES copy_group (id);
ALTER TABLE activity_event ADD COLUMN group_state text
    CHECK (group_state IN ('GROUPED', 'HISTORY', 'NOT_COPIED', 'REMOVED'));
CREATE INDEX trade_event_ungrouped_idx ON trade_event (detect_time) WHERE group_state IS NULL;
CREATE INDEX activity_event_ungrouped_idx ON activity_event (detect_time) WHERE group_state IS NULL;
CREATE INDEX trade_event_group_idx ON trade_event (copy_group_id);
CREATE INDEX activity_event_group_idx ON activity_event (copy_group_id);

-- Attempts name their group and the overrides in force; equity and cash at decision.
ALTER TABLE copy_attempt ADD COLUMN copy_group_id bigint REFERENCES copy_group (id);
ALTER TABLE copy_attempt ADD COLUMN guardrail_override_id bigint REFERENCES guardrail_config (id);
ALTER TABLE copy_attempt ADD COLUMN sizing_override_id bigint REFERENCES copy_sizing_config (id);
ALTER TABLE copy_attempt ADD COLUMN equity_micros bigint;
ALTER TABLE copy_attempt ADD COLUMN cash_micros bigint;
CREATE INDEX copy_attempt_group_idx ON copy_attempt (copy_group_id);
CREATE INDEX copy_attempt_user_idx ON copy_attempt (followed_user_id, decision_time);

-- A signal seen this long after the leader's fill opens nothing (reductions still go):
-- after downtime, a backfilled hour-old buy is not a trade a careful copier makes.
ALTER TABLE guardrail_config ADD COLUMN max_signal_age_s integer CHECK (max_signal_age_s >= 0);
UPDATE guardrail_config SET max_signal_age_s = 300 WHERE scope = 'GLOBAL';
ALTER TABLE guardrail_config ADD CONSTRAINT guardrail_config_global_signal_age
    CHECK (scope = 'USER' OR max_signal_age_s IS NOT NULL);

CREATE INDEX order_book_snapshot_asset_idx ON order_book_snapshot (asset_id, fetched_at);
CREATE INDEX ledger_entry_scope_asset_idx ON ledger_entry (portfolio_scope, followed_user_id, asset_id);

-- Exec ledger entries name the attempt they come from (the global portfolio's entries
-- carry no user; the attempt does, which is how exposure per user is attributed).
ALTER TABLE ledger_entry ADD COLUMN copy_attempt_id bigint REFERENCES copy_attempt (id);
CREATE INDEX ledger_entry_attempt_idx ON ledger_entry (copy_attempt_id)
    WHERE copy_attempt_id IS NOT NULL;
-- The simulator keeps its portfolios in memory between runs and reloads them when the
-- newest exec ledger entry is not its own (e.g. a settlement written by another job).
CREATE INDEX ledger_entry_exec_id_idx ON ledger_entry (id) WHERE portfolio_scope <> 'SHADOW_USER';
