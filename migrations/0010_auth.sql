-- Login hardening (issue 13): sessions ended before their expiry.
--
-- A session cookie carries its session id and expiry, signed (api/auth.py); logout
-- writes the id here and the API refuses listed ids from then on (api/sessions.py keeps
-- them in memory and rereads this table at most once a second). A row is only needed
-- until its cookie would have expired anyway: each logout deletes those past it.
CREATE TABLE session_revoked (
    session_id text        PRIMARY KEY CHECK (length(session_id) BETWEEN 1 AND 64),
    revoked_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    request_id text
);
CREATE INDEX session_revoked_expires_idx ON session_revoked (expires_at);
