-- SPEC §11 / issue 19: the metric catalogue (common/store/metrics.py), written each
-- minute by functions.metrics. One row per metric, label set and minute; the value in
-- millionths of its unit, as every amount here (no float columns).
CREATE TABLE metric_point (
    name   text             NOT NULL,
    labels jsonb            NOT NULL DEFAULT '{}'::jsonb,
    at     timestamptz      NOT NULL,
    value_micros bigint     NOT NULL,
    PRIMARY KEY (name, labels, at)
);
CREATE INDEX metric_point_at_idx ON metric_point (at);
