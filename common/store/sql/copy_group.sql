-- closed --
-- The groups waiting for a decision, FIFO (records.CopyGroup).
SELECT id, group_key, followed_user_id, action, condition_id, asset_id, window_start,
       first_detect_time, close_time, decide_at, their_share_micros, their_notional_micros,
       their_price_micros, order_book_snapshot_id
FROM copy_group WHERE state = 'CLOSED'
ORDER BY first_detect_time, window_start, group_key
LIMIT %(n)s;

-- decided_between --
-- The groups decided (or due) in [start, end), FIFO: the what-if's input.
SELECT id, group_key, followed_user_id, action, condition_id, asset_id, window_start,
       first_detect_time, close_time, decide_at, their_share_micros, their_notional_micros,
       their_price_micros, order_book_snapshot_id
FROM copy_group
WHERE state IN ('CLOSED', 'DONE') AND decide_at >= %(start)s AND decide_at < %(end)s
ORDER BY first_detect_time, window_start, group_key;

-- set_book --
-- The book a group is decided on, stored before the decision (a rerun uses it again).
UPDATE copy_group SET order_book_snapshot_id = %(b)s WHERE id = %(g)s;

-- mark_done --
UPDATE copy_group g SET state = 'DONE', done_at = v.at
FROM unnest(%(id)s::bigint[], %(at)s::timestamptz[]) AS v(id, at)
WHERE g.id = v.id AND g.state = 'CLOSED';
