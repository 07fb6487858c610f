-- Operations (issue 7): the scheduler says why and when each run was due, and the
-- status command and the prune job find running and old runs without scanning.
ALTER TABLE job_run ADD COLUMN trigger text
    CHECK (trigger IN ('cron', 'wake', 'manual', 'loop'));
ALTER TABLE job_run ADD COLUMN scheduled_at timestamptz;
CREATE INDEX job_run_running_idx ON job_run (job) WHERE status = 'RUNNING';
CREATE INDEX job_run_started_idx ON job_run (started_at);
-- The periodic jobs used to run as loops that beat; the scheduler runs them now, and
-- their last beats would read as stale processes forever.
DELETE FROM process_heartbeat
    WHERE process IN ('poll', 'price', 'snapshot', 'rollup', 'reconcile', 'config_test');
-- Prune deletes unused order books; deleting one checks both foreign keys to it.
CREATE INDEX copy_attempt_book_idx ON copy_attempt (order_book_snapshot_id)
    WHERE order_book_snapshot_id IS NOT NULL;
CREATE INDEX copy_group_book_idx ON copy_group (order_book_snapshot_id)
    WHERE order_book_snapshot_id IS NOT NULL;
