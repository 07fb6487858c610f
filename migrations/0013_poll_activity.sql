-- Poll cost follows activity (common/store/polling.py `Due`): the users with an
-- activity row detected lately are found by its detect time (every poll and reconcile
-- run asks), not by a scan of the table.
CREATE INDEX activity_event_detect_idx ON activity_event (detect_time);
