-- Elected roles across hosts (common/store/leases.py Role): the scheduler, the listener
-- and one copy of each job hold a row here, renewed while they run, with an expiry kept
-- by the database's clock. Unlike a session advisory lock it survives a transaction-mode
-- connection pooler, and a host that dies loses its roles when they expire.
CREATE TABLE role_lease (
    role text PRIMARY KEY,         -- 'scheduler', 'listen', a job's name, 'poll@<host id>'
    holder text NOT NULL,          -- <host id>/<pid>/<token>
    acquired_at timestamptz NOT NULL,
    renewed_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
