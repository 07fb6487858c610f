-- Work shared across hosts on one database (common/store/leases.py): each host's poll
-- loop holds a lease on the followed users it polls, claimed with FOR UPDATE SKIP
-- LOCKED (one row per user, made on first claim), renewed while it runs and taken over by another host once expired.
CREATE TABLE poll_lease (
    followed_user_id bigint PRIMARY KEY REFERENCES followed_user (id) ON DELETE CASCADE,
    holder text,                   -- the host id (OCULUS_HOST_ID); NULL: free
    acquired_at timestamptz,       -- since when this holder has held it
    expires_at timestamptz          -- NULL: free
);
CREATE INDEX poll_lease_holder_idx ON poll_lease (holder, expires_at);
