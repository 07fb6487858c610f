-- outcome_assets --
-- The outcome assets of the given markets, in outcome order, with their payouts once
-- resolved (records.OutcomeAsset).
SELECT condition_id, asset_id, payout_micros FROM outcome_asset
WHERE condition_id = ANY(%(c)s) ORDER BY condition_id, outcome_index;

-- by_condition --
-- One market with its outcome assets in order (records.Market).
SELECT condition_id, end_time, closed, blacklisted, fees_enabled, fee_rate_micros,
       fee_exponent,
       array(SELECT asset_id FROM outcome_asset o WHERE o.condition_id = market.condition_id
             ORDER BY outcome_index) AS assets
FROM market WHERE condition_id = %(c)s;
