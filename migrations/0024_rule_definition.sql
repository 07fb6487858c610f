-- SPEC §11 / issue 19: each rule's definition as the rules job last evaluated it
-- (common.domain.rules.Rule.definition), so the Alerts page shows the rules without
-- reading rules.yaml itself.
ALTER TABLE alert_rule_eval ADD COLUMN definition jsonb;
