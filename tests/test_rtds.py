"""RTDS activity/trades as the third source (SPEC §12): the frame parser on real-format
and hostile frames, the filter to followed wallets, and one event whatever the order in
which RTDS, the chain and the Data API report a fill; never-settled fills flagged."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from common.runtime import settings
from common.store import db, ingest, shadow, users
from common.store import rtds as rtds_store
from common.upstream import chain, rtds
from functions import reconcile

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
WALLET = "0x" + "5a" * 20
OTHER = "0x" + "6b" * 20
COND = "0x" + "c" * 64
S = settings.Settings()

# The frame a third party captured live (docs/research/market_channel_and_rtds.md §1.3),
# with the elided hex filled in: ms envelope, whole-second payload time, float price and
# size, a checksummed wallet, an optional fee.
REAL = {
    "connection_id": "gXseIO-NQWeIKEhJwA==",
    "topic": "activity",
    "type": "trades",
    "timestamp": 1787102287053,
    "payload": {
        "proxyWallet": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "side": "BUY",
        "asset": "72553861090118305582735226364830924367428429963158468834939585785405406357590",
        "conditionId": "0x1d87" + "ab" * 30,
        "outcome": "No",
        "outcomeIndex": 1,
        "price": 0.26,
        "size": 2.7027,
        "timestamp": 1787102287,
        "transactionHash": "0xb6acf685" + "00" * 28,
        "title": "Will it rain?",
        "slug": "rain",
        "eventSlug": "rain",
        "icon": "",
        "name": "PPMT",
        "pseudonym": "Rowdy-Tenement",
        "bio": "",
        "profileImage": "",
        "fee": 0.0,
    },
}


def frame(**payload: Any) -> str:
    return json.dumps({**REAL, "payload": {**REAL["payload"], **payload}})


# --- the parser -------------------------------------------------------------------------


def test_a_real_format_frame_parses_exactly() -> None:
    got = rtds.parse_frame(json.dumps(REAL))
    assert not got.rejects and len(got.trades) == 1
    trade, payload = got.trades[0]
    assert trade.proxy_wallet == "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"  # lower-cased
    assert (trade.side, trade.price, trade.size) == ("BUY", 260_000, 2_702_700)
    assert trade.timestamp == datetime(2026, 8, 19, 1, 18, 7, tzinfo=UTC)
    assert trade.transaction_hash == REAL["payload"]["transactionHash"]
    assert payload["price"] == Decimal("0.26")  # kept exactly as received
    assert got.sent_at == [datetime(2026, 8, 19, 1, 18, 7, 53000, tzinfo=UTC)]


def test_arrays_keepalives_pongs_and_other_topics() -> None:
    both = rtds.parse_frame(json.dumps([REAL, {**REAL, "payload": {**REAL["payload"]}}]))
    assert len(both.trades) == 2 and not both.rejects
    assert rtds.parse_frame("").other == 1  # the empty first frame after subscribing
    assert rtds.parse_frame("   ").other == 1
    assert rtds.parse_frame("PONG").pong and rtds.parse_frame(b"pong").pong
    crypto = {**REAL, "topic": "crypto_prices", "type": "update", "payload": {"value": 1}}
    got = rtds.parse_frame(json.dumps(crypto))
    assert (got.other, got.trades, got.rejects) == (1, [], [])


def test_numbers_as_strings_are_taken_exactly() -> None:
    got = rtds.parse_frame(frame(price="0.705", size="12.5", timestamp="1787102287"))
    assert not got.rejects
    assert (got.trades[0][0].price, got.trades[0][0].size) == (705_000, 12_500_000)


HOSTILE = [
    (frame(price="abc"), "price"),
    (frame(price=1.5), "outside [0, 1]"),
    (frame(price=0), "above 0"),
    (frame(size=-3), "positive"),
    (frame(size=[1]), "size"),
    (frame(size=True), "size"),
    (frame(side="HOLD"), "side"),
    (frame(side=None), "side"),
    (frame(proxyWallet="0x123"), "wallet"),
    (frame(proxyWallet=None), "proxyWallet"),
    (frame(transactionHash=""), "hash"),
    (frame(asset="-5"), "asset"),
    (frame(timestamp=1787102287053), "not Unix seconds"),  # ms where seconds belong
    (frame(size="1e400"), "size"),
    (frame(size="9" * 5000), "size"),
    (json.dumps({**REAL, "payload": "a string"}), "payload"),
    (json.dumps({**REAL, "topic": 5}), "topic"),
    (json.dumps({"message": "Internal server error", "statusCode": 500}), "not a data"),
    ('{"topic":"activity","type":"trades","payload":{"price":NaN}}', "NaN"),
    (json.dumps(REAL)[:100], "not JSON"),
    ("[" * 100_000, "not JSON"),
    (json.dumps([REAL] * (rtds.MAX_MESSAGES + 1)), "at most"),
    (" " + "x" * (rtds.MAX_FRAME_BYTES + 1), "characters refused"),
    (json.dumps([1, "two", None]), "not a JSON object"),
    ("\x00\xff garbage", "not JSON"),
]
# nested just shallow enough for json.loads, too deep to re-encode or validate: each depth
HOSTILE += [("[" * n + "]" * n, "not JSON|too deeply") for n in range(960, 1000, 13)]
HOSTILE += [('{"a":' * n + "1" + "}" * n, "not JSON|too deeply") for n in range(960, 1000, 13)]


@pytest.mark.parametrize(("text", "why"), HOSTILE)
def test_hostile_frames_are_refused_with_their_reason(text: str, why: str) -> None:
    got = rtds.parse_frame(text)
    assert not got.trades
    assert got.rejects, text[:80]
    assert all(r.source == rtds.SOURCE for r in got.rejects)
    assert any(any(w.lower() in r.reason.lower() for w in why.split("|")) for r in got.rejects), (
        got.rejects[0].reason
    )
    assert all(len(r.payload) <= 16 * 1024 for r in got.rejects)  # bounded


def test_one_bad_message_does_not_spoil_the_rest_of_its_frame() -> None:
    bad = {**REAL, "payload": {**REAL["payload"], "side": 1}}
    got = rtds.parse_frame(json.dumps([REAL, bad, REAL]))
    assert (len(got.trades), len(got.rejects)) == (2, 1)


def test_only_the_followed_wallets_side_of_a_fill_is_theirs() -> None:
    """RTDS sends each fill once per side: the maker's row and the taker's."""
    mine = frame(proxyWallet=WALLET.upper().replace("0X", "0x"), side="BUY")
    theirs = frame(proxyWallet="0x" + "77" * 20, side="SELL")
    got = rtds.parse_frame(f"[{mine},{theirs}]")
    kept = rtds.followed(got, {WALLET: 1})
    assert [(t.proxy_wallet, t.side, user) for t, _, user in kept] == [(WALLET, "BUY", 1)]
    # A trade between two followed wallets is a fill of each.
    other = frame(proxyWallet=OTHER, side="SELL")
    both = rtds.followed(rtds.parse_frame(f"[{mine},{other}]"), {WALLET: 1, OTHER: 2})
    assert [(t.side, user) for t, _, user in both] == [("BUY", 1), ("SELL", 2)]


# --- planning (pure) --------------------------------------------------------------------


def rtds_fill(tx: str, seen: datetime, user: int = 1, shares: int = 10_000_000) -> Any:
    return rtds_store.RtdsFill(
        user, WALLET, tx, "123", COND, "BUY", 470_000, shares, NOW - timedelta(seconds=30), seen
    )


def existing(i: int, log_index: int | None, rtds_id: str | None, **kw: Any) -> ingest.Existing:
    base = ingest.Existing(
        i, "CHAIN", WALLET, "0x" + "12" * 32, "123", "BUY", 10_000_000, log_index, None, None,
        False, rtds_id,
    )  # fmt: skip
    return replace(base, **kw)


def test_rtds_plan() -> None:
    tx = "0x" + "12" * 32
    f = rtds_fill(tx, NOW)
    assert rtds_store.plan_rtds_fill(f, []) == ("insert", None, f.identity + ":0")
    chain_row = existing(1, 4, None)
    assert rtds_store.plan_rtds_fill(f, [chain_row])[:2] == ("confirm", chain_row)
    # Seen once already: a second identical trade is a second fill (ordinal 1) until the
    # chain has spoken; past the chain's logs it is a repeat.
    seen = existing(1, None, f.identity + ":0", source="RTDS")
    assert rtds_store.plan_rtds_fill(f, [seen]) == ("insert", None, f.identity + ":1")
    seen_on_chain = existing(1, 4, f.identity + ":0", source="RTDS")
    assert rtds_store.plan_rtds_fill(f, [seen_on_chain])[0] == "duplicate"
    # Another wallet's, another asset's or far other shares: not this fill.
    for other in (existing(1, 4, None, asset_id="9"), existing(1, 4, None, share_micros=5)):
        assert rtds_store.plan_rtds_fill(f, [other])[0] == "duplicate"  # the chain has room
    assert rtds_store.plan_rtds_fill(f, [existing(1, None, None, wallet=OTHER)])[0] == "insert"


# --- one event whatever the order -------------------------------------------------------


def chain_fill(tx: str, log_index: int = 3) -> chain.ChainFill:
    return chain.ChainFill(
        version=2,
        exchange=S.exchange_addresses_v2[0],
        order_hash="0x" + "ee" * 32,
        owner=WALLET,
        counterparty=S.exchange_addresses_v2[0],
        side="BUY",
        asset_id="123",
        share_micros=10_000_000,
        collateral_micros=4_699_999,
        fee_micros=12_590,
        price_micros=470_000,
        tx_hash=tx,
        log_index=log_index,
        block_number=7,
        block_hash=None,
        block_time=NOW - timedelta(seconds=29),
        removed=False,
    )


def api_fill(tx: str, seen: datetime, user: int, shares: int = 10_000_003) -> ingest.ApiFill:
    return ingest.ApiFill(
        user, WALLET, tx, "123", COND, "BUY", 470_000, shares, NOW - timedelta(seconds=30),
        detect_time=seen,
    )  # fmt: skip


def deliver(conn: db.Conn, source: str, tx: str, at: datetime, user: int, ordinal: int = 0) -> Any:
    if source == "rtds":
        return rtds_store.store_rtds_fill(conn, rtds_fill(tx, at, user))
    if source == "chain":
        return ingest.store_chain_fill(conn, chain_fill(tx, 3 + ordinal), user, at)
    fills = ingest.with_ordinals([api_fill(tx, at, user)] * (ordinal + 1))
    return ingest.store_api_fills(conn, fills, at)


EVENT = """SELECT source, detect_time, confirmed_at, log_index, api_source_id, rtds_source_id,
                  rtds_seen_at, chain_seen_at, api_seen_at, fee_micros, usdc_notional_micros,
                  reorg_state
           FROM trade_event WHERE tx_hash = %(tx)s ORDER BY id"""


@pytest.mark.parametrize("order", list(itertools.permutations(("rtds", "chain", "api"))))
def test_three_sources_make_one_event_in_any_order(conn: db.Conn, order: tuple) -> None:
    user = users.add(conn, WALLET, "lead", [], NOW - timedelta(hours=1))
    tx = "0x" + "%064x" % (hash(order) & (2**200 - 1))
    times = [NOW + timedelta(seconds=i) for i in range(3)]
    for source, at in zip(order, times, strict=True):
        deliver(conn, source, tx, at, user)
    rows = conn.execute(EVENT, {"tx": tx}).fetchall()
    assert len(rows) == 1, rows
    e = rows[0]
    seen = dict(zip(order, times, strict=True))
    assert e["source"] == {"rtds": "RTDS", "chain": "CHAIN", "api": "DATA_API"}[order[0]]
    assert e["detect_time"] == times[0]  # first detected by whichever came first
    assert (e["rtds_seen_at"], e["chain_seen_at"], e["api_seen_at"]) == (
        seen["rtds"],
        seen["chain"],
        seen["api"],
    )
    assert e["log_index"] == 3 and e["api_source_id"] and e["rtds_source_id"]
    assert (e["fee_micros"], e["usdc_notional_micros"]) == (12_590, 4_699_999)  # the chain's
    # confirmed when the first source of truth that did not insert it agreed (never RTDS)
    truth = [t for s, t in zip(order, times, strict=True) if s != "rtds"]
    assert e["confirmed_at"] == (truth[1] if order[0] != "rtds" else truth[0])
    assert e["reorg_state"] is None
    # Each source again: nothing changes.
    for source in ("chain", "api"):
        deliver(conn, source, tx, NOW + timedelta(seconds=9), user)
    assert conn.execute(EVENT, {"tx": tx}).fetchall() == rows


def test_identical_fills_of_one_transaction_stay_two_across_sources(conn: db.Conn) -> None:
    user = users.add(conn, WALLET, "lead", [], NOW - timedelta(hours=1))
    tx = "0x" + "34" * 32
    for i in range(2):
        deliver(conn, "rtds", tx, NOW + timedelta(milliseconds=i), user)
    for i in range(2):
        deliver(conn, "chain", tx, NOW + timedelta(seconds=2), user, ordinal=i)
    deliver(conn, "api", tx, NOW + timedelta(seconds=9), user, ordinal=1)
    rows = conn.execute(EVENT, {"tx": tx}).fetchall()
    assert len(rows) == 2
    assert all(r["source"] == "RTDS" and r["log_index"] is not None for r in rows)
    assert all(r["api_source_id"] and r["reorg_state"] is None for r in rows)


def test_a_repeated_rtds_trade_never_becomes_a_fill(conn: db.Conn) -> None:
    user = users.add(conn, WALLET, "lead", [], NOW - timedelta(hours=1))
    tx = "0x" + "56" * 32
    deliver(conn, "rtds", tx, NOW, user)
    deliver(conn, "rtds", tx, NOW, user)  # sent twice: a second (unconfirmed) event for now
    deliver(conn, "chain", tx, NOW + timedelta(seconds=2), user)
    deliver(conn, "api", tx, NOW + timedelta(seconds=8), user)
    first, second = conn.execute(EVENT, {"tx": tx}).fetchall()
    assert first["log_index"] == 3 and first["api_source_id"]  # the API took the chain's
    assert second["log_index"] is None and second["api_source_id"] is None
    # Sent again after the chain: quarantined, not stored.
    assert deliver(conn, "rtds", tx, NOW + timedelta(seconds=3), user) == "duplicate"
    assert len(conn.execute(EVENT, {"tx": tx}).fetchall()) == 2
    q = conn.execute("SELECT source, reason FROM quarantine").fetchall()
    assert [r["source"] for r in q] == [rtds.SOURCE] and "DUPLICATE_ROW" in q[0]["reason"]
    # Never confirmed: flagged once the grace is over, and out of every sum.
    grace = timedelta(seconds=S.rtds_settle_grace_s)
    assert reconcile.flag_unsettled(conn, NOW + grace - timedelta(seconds=1), grace) == 0
    assert reconcile.flag_unsettled(conn, NOW + grace + timedelta(seconds=1), grace) == 1
    first, second = conn.execute(EVENT, {"tx": tx}).fetchall()
    assert (first["reorg_state"], second["reorg_state"]) == (None, "UNSETTLED")
    assert reconcile.flag_unsettled(conn, NOW + 2 * grace, grace) == 0  # once


def _ledger(conn: db.Conn) -> tuple[int, int]:
    row = conn.execute(
        """SELECT coalesce(sum(share_delta_micros), 0) AS shares,
                  coalesce(sum(cash_delta_micros), 0) AS cash
           FROM ledger_entry WHERE portfolio_scope = 'SHADOW_USER'"""
    ).fetchone()
    assert row is not None
    return int(row["shares"]), int(row["cash"])


def test_a_never_settled_rtds_fill_applied_to_the_shadow_is_reversed(conn: db.Conn) -> None:
    user = users.add(conn, WALLET, "lead", [], NOW - timedelta(hours=1))
    conn.execute("UPDATE followed_user SET seeded_at = %(t)s", {"t": NOW - timedelta(hours=1)})
    tx = "0x" + "78" * 32
    assert deliver(conn, "rtds", tx, NOW, user) == "insert"
    # Past the shadow's wait for a second source, it applies the fill as reported.
    shadow.apply_pending(conn, NOW + timedelta(seconds=61), timedelta(seconds=60), timedelta(1))
    assert _ledger(conn) == (10_000_000, -4_700_000)
    grace = timedelta(seconds=300)
    assert reconcile.flag_unsettled(conn, NOW + timedelta(seconds=301), grace) == 1
    assert _ledger(conn) == (0, 0)
    item = conn.execute("SELECT stage, error FROM failed_item").fetchone()
    assert item is not None and item["stage"] == "reconcile"
    assert "never settled" in item["error"] and "reversed" in item["error"]
    # A chain log arriving after all is a fill of its own (the flagged sighting stays out).
    deliver(conn, "chain", tx, NOW + timedelta(seconds=400), user)
    rows = conn.execute(EVENT, {"tx": tx}).fetchall()
    assert [(r["source"], r["reorg_state"]) for r in rows] == [
        ("RTDS", "UNSETTLED"),
        ("CHAIN", None),
    ]


def _from_deep_stack(frames: int, fn: Any) -> Any:
    """Calls fn with `frames` more frames on the stack (a listener's loop is deeper)."""
    return fn() if frames == 0 else _from_deep_stack(frames - 1, fn)


def test_a_message_nested_too_deep_to_re_encode_is_refused_at_any_stack_depth() -> None:
    for depth in (900, 930, 960):  # with the stack below, some pass json.loads only
        for text in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
            for frames in range(0, 120, 2):
                got = _from_deep_stack(frames, lambda t=text: rtds.parse_frame(t))
                assert not got.trades and got.rejects, (depth, frames)


def test_a_repeated_rtds_message_never_doubles_the_copy_or_the_shadow(conn: db.Conn) -> None:
    """A repeat (ordinal > 0) waits for a confirmation that never comes: the copy group
    and the shadow count the fill once; reconcile then flags the repeat UNSETTLED."""
    from common.store import groups

    user = users.add(conn, WALLET, "lead", [], NOW - timedelta(hours=1))
    conn.execute("UPDATE followed_user SET seeded_at = %(t)s", {"t": NOW - timedelta(hours=1)})
    tx = "0x" + "56" * 32
    deliver(conn, "rtds", tx, NOW, user)
    deliver(conn, "rtds", tx, NOW + timedelta(milliseconds=300), user)  # the same message again
    groups.step(conn, NOW + timedelta(seconds=1))
    groups.step(conn, NOW + timedelta(seconds=5))
    deliver(conn, "chain", tx, NOW + timedelta(seconds=6), user)  # one log: one fill
    g = conn.execute("SELECT their_share_micros FROM copy_group").fetchall()
    assert [r["their_share_micros"] for r in g] == [10_000_000]
    tx2 = "0x" + "57" * 32
    deliver(conn, "rtds", tx2, NOW, user)
    deliver(conn, "api", tx2, NOW + timedelta(seconds=5), user)  # the API confirms the one fill
    deliver(conn, "rtds", tx2, NOW + timedelta(seconds=6), user)  # RTDS repeats it
    shadow.apply_pending(conn, NOW + timedelta(seconds=70), timedelta(seconds=60), timedelta(1))
    rows = conn.execute(
        "SELECT count(*) AS n FROM trade_event WHERE tx_hash = %(t)s AND shadow_applied_at"
        " IS NOT NULL AND shadow_state = 'APPLIED'",
        {"t": tx2},
    ).fetchone()
    assert rows is not None and rows["n"] == 1
    assert reconcile.flag_unsettled(conn, NOW + timedelta(seconds=400), timedelta(seconds=300))
