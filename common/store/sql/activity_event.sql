-- pending_for_user --
-- A user's SPLIT / MERGE / REDEEM / CONVERSION rows not yet applied to the shadow
-- ledger, from `since`, oldest first (records.ActivityEvent).
SELECT id, followed_user_id, activity_type, condition_id, share_micros, usdc_micros,
       event_time, tx_hash
FROM activity_event
WHERE shadow_applied_at IS NULL AND followed_user_id = %(u)s AND event_time >= %(since)s
ORDER BY event_time, id
LIMIT %(limit)s;

-- cover_by_seed --
-- A user's unapplied activity older than the seed window: the seed's positions hold it.
UPDATE activity_event SET shadow_applied_at = %(now)s, shadow_state = 'COVERED_BY_SEED'
WHERE followed_user_id = %(u)s AND shadow_applied_at IS NULL AND event_time < %(since)s;

-- mark_state --
-- APPLIED, or NOT_APPLIED (a CONVERSION).
UPDATE activity_event SET shadow_applied_at = %(now)s, shadow_state = %(s)s
WHERE id = ANY(%(ids)s);
