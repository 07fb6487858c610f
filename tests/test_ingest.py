"""The pure cores of ingestion and the shadow ledger, and the database paths that
join the two sources of one fill."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from common.domain import ledger, records
from common.runtime import settings
from common.store import db, ingest, shadow, users
from common.upstream import chain

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
WALLET = "0x" + "5a" * 20
TX = "0x" + "12" * 32
S = settings.Settings()


def api_fill(shares: int = 10_000_000, price: int = 470_000, user: int = 1) -> ingest.ApiFill:
    return ingest.ApiFill(
        user, WALLET, TX, "123", "0x" + "c" * 64, "BUY", price, shares, NOW - timedelta(seconds=30)
    )


def chain_fill(
    log_index: int, shares: int = 10_000_000, *, removed: bool = False, fee: int = 12_590
) -> chain.ChainFill:
    return chain.ChainFill(
        version=2,
        exchange=S.exchange_addresses_v2[0],
        order_hash="0x" + "ee" * 32,
        owner=WALLET,
        counterparty=S.exchange_addresses_v2[0],
        side="BUY",
        asset_id="123",
        share_micros=shares,
        collateral_micros=4_699_999,
        fee_micros=fee,
        price_micros=470_000,
        tx_hash=TX,
        log_index=log_index,
        block_number=7,
        block_hash=None,
        block_time=NOW - timedelta(seconds=30),
        removed=removed,
    )


def existing(
    i: int, source: str, log_index: int | None, api: str | None, **kw: object
) -> ingest.Existing:
    base = ingest.Existing(
        i, source, WALLET, TX, "123", "BUY", 10_000_000, log_index, api, None, False
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_identical_fills_of_one_transaction_stay_two() -> None:
    fills = ingest.with_ordinals([api_fill(), api_fill(), api_fill(shares=5_000_000)])
    assert [f.ordinal for f in fills] == [0, 1, 0]
    assert len({f.source_id for f in fills}) == 3
    # A re-poll of the same rows gives the same ids.
    assert [f.source_id for f in ingest.with_ordinals([api_fill(), api_fill()])] == [
        f.source_id for f in fills[:2]
    ]


def test_identical_fills_of_two_wallets_are_two_events() -> None:
    other = replace(api_fill(), wallet="0x" + "6b" * 20, followed_user_id=2)
    assert api_fill().source_id != other.source_id
    assert [f.ordinal for f in ingest.with_ordinals([api_fill(), other])] == [0, 0]


def test_api_rows_confirm_chain_events_in_log_order_within_tolerance() -> None:
    rows = ingest.with_ordinals([api_fill(shares=10_000_003), api_fill(), api_fill()])
    stored = [existing(1, "CHAIN", 9, None), existing(2, "CHAIN", 4, None)]
    matches, inserts = ingest.plan_api_fills(rows, stored)
    assert [event_id for event_id, _ in matches] == [2, 1]  # lowest log index first
    assert inserts == [rows[2]]
    # Seen before: nothing to do.
    known = [
        existing(1, "CHAIN", 9, rows[0].source_id),
        existing(2, "CHAIN", 4, rows[1].source_id),
        existing(3, "DATA_API", None, rows[2].source_id),
    ]
    assert ingest.plan_api_fills(rows, known) == ([], [])


def test_chain_log_decisions() -> None:
    api_only = existing(5, "DATA_API", None, "x")
    assert ingest.plan_chain_fill(chain_fill(3), [api_only]) == ("confirm", api_only)
    assert ingest.plan_chain_fill(chain_fill(3), []) == ("insert", None)
    mine = existing(6, "CHAIN", 3, None)
    assert ingest.plan_chain_fill(chain_fill(3), [mine])[0] == "duplicate"
    assert ingest.plan_chain_fill(chain_fill(3, removed=True), [mine])[0] == "remove"
    used = replace(mine, shadow_applied=True)
    assert ingest.plan_chain_fill(chain_fill(3, removed=True), [used])[0] == "flag"
    gone = replace(mine, reorg_state="REMOVED")
    assert ingest.plan_chain_fill(chain_fill(3), [gone])[0] == "restore"
    assert ingest.plan_chain_fill(chain_fill(3, removed=True), [gone])[0] == "ignore"
    far = existing(7, "DATA_API", None, "y", share_micros=9_000_000)
    assert ingest.plan_chain_fill(chain_fill(3), [far]) == ("insert", None)


def test_fill_entries_never_confuse_side_with_outcome() -> None:
    event = {
        "id": 4,
        "followed_user_id": 1,
        "side": "SELL",
        "asset_id": "999",
        "condition_id": "0xc",
        "price_micros": 300_000,
        "share_micros": 2_000_000,
        "usdc_notional_micros": 600_000,
        "fee_micros": 5,
        "event_time": NOW,
        "detect_time": NOW,
    }
    trade, fee = ledger.fill_entries(records.TradeEvent.from_row(event))
    assert (trade.asset_id, trade.share_delta_micros, trade.cash_delta_micros) == (
        "999",
        -2_000_000,
        600_000,
    )
    assert (fee.entry_type, fee.cash_delta_micros, fee.ref_id) == ("FEE", -5, "trade:4")


def test_split_merge_redeem_entries() -> None:
    act = {
        "id": 3,
        "followed_user_id": 1,
        "condition_id": "0xc",
        "event_time": NOW,
        "share_micros": 5_000_000,
        "usdc_micros": 5_000_000,
    }
    split = ledger.activity_entries(
        records.ActivityEvent.from_row({**act, "activity_type": "SPLIT"}), ["1", "2"], {}, {}
    )
    assert [(e.asset_id, e.share_delta_micros, e.cash_delta_micros) for e in split] == [
        ("1", 5_000_000, 0),
        ("2", 5_000_000, 0),
        (None, 0, -5_000_000),
    ]
    redeem = ledger.activity_entries(
        records.ActivityEvent.from_row(
            {**act, "activity_type": "REDEEM", "usdc_micros": 7_000_000}
        ),
        ["1", "2"],
        {"1": 7_000_000, "2": 3_000_000},
        {"1": 1_000_000, "2": 0},
    )
    assert [
        (e.asset_id, e.share_delta_micros, e.cash_delta_micros, e.price_micros) for e in redeem
    ] == [("1", -7_000_000, 0, 1_000_000), ("2", -3_000_000, 0, 0), (None, 0, 7_000_000, None)]


def _ledger(conn: db.Conn) -> tuple[int, int]:
    row = conn.execute(
        "SELECT sum(share_delta_micros)::bigint AS s, sum(cash_delta_micros)::bigint AS c"
        " FROM ledger_entry WHERE portfolio_scope = 'SHADOW_USER'"
    ).fetchone()
    assert row is not None
    return int(row["s"] or 0), int(row["c"] or 0)


def test_a_late_chain_log_corrects_an_applied_api_fill_to_exact_amounts(conn: db.Conn) -> None:
    user = users.add(conn, WALLET, "lead", [], NOW - timedelta(hours=1))
    conn.execute("UPDATE followed_user SET seeded_at = %(t)s", {"t": NOW - timedelta(hours=1)})
    ingest.store_api_fills(conn, [api_fill(user=user)], NOW - timedelta(seconds=25))
    shadow.apply_pending(conn, NOW, timedelta(seconds=10), timedelta(minutes=15))
    assert _ledger(conn) == (10_000_000, -4_700_000)  # the API's price × size, no fee
    assert ingest.store_chain_fill(conn, chain_fill(3), user, NOW) == "confirm"
    assert _ledger(conn) == (10_000_000, -4_699_999 - 12_590)  # exact collateral and fee
    event = conn.execute(
        "SELECT usdc_notional_micros, fee_micros, role FROM trade_event"
    ).fetchone()
    assert event == {"usdc_notional_micros": 4_699_999, "fee_micros": 12_590, "role": "TAKER"}
    # Again: nothing moves.
    assert ingest.store_chain_fill(conn, chain_fill(3), user, NOW) == "duplicate"
    shadow.apply_pending(conn, NOW, timedelta(seconds=10), timedelta(minutes=15))
    assert _ledger(conn) == (10_000_000, -4_699_999 - 12_590)
