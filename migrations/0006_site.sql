-- The dashboard (issue 6): a market's page lists its newest attempts.
CREATE INDEX copy_attempt_condition_idx ON copy_attempt (condition_id, id);
