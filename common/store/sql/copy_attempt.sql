-- insert --
-- One decision of one group in one executable portfolio; RETURNING nothing when it
-- exists already (the caller's portfolios are then stale).
INSERT INTO copy_attempt (portfolio_scope, followed_user_id, group_key, copy_group_id, action,
    condition_id, asset_id, guardrail_config_id, copy_sizing_config_id, guardrail_override_id,
    sizing_override_id, their_notional_micros, their_price_micros, target_notional_micros,
    target_share_micros, decision, reason_codes, best_bid_micros, best_ask_micros, mid_micros,
    vwap_micros, filled_share_micros, filled_notional_micros, filled_ratio_micros, fee_micros,
    group_close_time, decision_time, order_book_snapshot_id, equity_micros, cash_micros,
    depth_in_band_micros, their_position_micros, ideal_share_micros)
VALUES (%(scope)s, %(u)s, %(key)s, %(gid)s, %(action)s, %(cond)s, %(asset)s, %(gc)s, %(sc)s,
    %(go)s, %(so)s, %(their_n)s, %(their_p)s, %(target_n)s, %(target_s)s, %(decision)s,
    %(reasons)s, %(bid)s, %(ask)s, %(mid)s, %(vwap)s, %(filled_s)s, %(filled_n)s, %(ratio)s,
    %(fee)s, %(close)s, %(at)s, %(book)s, %(equity)s, %(cash)s, %(depth)s, %(their_pos)s,
    %(ideal_s)s)
ON CONFLICT (portfolio_scope, followed_user_id, group_key) DO NOTHING
RETURNING id;

-- of_groups_between --
-- The attempts of the groups decided in [start, end) (records.CopyAttempt).
SELECT a.id, a.portfolio_scope, a.followed_user_id, a.group_key, a.copy_group_id, a.action,
       a.decision, a.reason_codes, a.target_notional_micros, a.target_share_micros,
       a.filled_share_micros, a.filled_notional_micros, a.fee_micros, a.decision_time,
       a.condition_id, a.asset_id, a.vwap_micros, a.mid_micros
FROM copy_attempt a JOIN copy_group g ON g.id = a.copy_group_id
WHERE g.decide_at >= %(start)s AND g.decide_at < %(end)s
ORDER BY a.id;

-- copy_fills --
COPY executable_fill (copy_attempt_id, level_index, price_micros, share_micros,
    notional_micros, fee_micros) FROM STDIN;
