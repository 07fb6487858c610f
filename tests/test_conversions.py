"""Neg-risk conversions (SPEC §6): the adapter's ids, PositionsConverted decoding, the
legs an index set names, the entries and how the fold carries cost through them, the
plan's rules at their boundaries, and storage with reorgs, against a real Postgres."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from common.domain import ledger, negrisk, portfolio, shadow_plan
from common.domain.records import ActivityEvent
from common.runtime import settings as settings_mod
from common.store import db, ingest, markets, shadow, users
from common.upstream import chain, gamma, wire
from sandbox import markets as sandbox_markets

S = settings_mod.Settings()
ADAPTER = settings_mod.NEG_RISK_ADAPTERS[0]
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "polymarket"
WALLET = "0x" + "4a" * 20
MARKET = "0x" + "2c" * 31 + "00"
T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
GRACE = timedelta(seconds=60)
M = 1_000_000


def question(i: int) -> negrisk.Question:
    return negrisk.Question(i, f"0xc{i}", f"yes{i}", f"no{i}")


def market(count: int | None = 3, fee: int | None = 0, skip: int | None = None) -> negrisk.Market:
    qs = {i: question(i) for i in range(count or 0) if i != skip}
    return negrisk.Market(MARKET, count, fee, qs)


# --- the adapter's ids ---------------------------------------------------------------------


def test_condition_of_a_real_gamma_neg_risk_market_is_derived_from_its_question() -> None:
    """Gamma's own neg-risk market: conditionId = keccak256(adapter, questionID, 2)."""
    live = json.loads((FIXTURES / "nautilus_gamma_market_live.json").read_text())
    m = gamma.GammaMarket.model_validate(live)
    assert m.neg_risk and m.question_id and m.neg_risk_market_id
    assert m.question_index == 0
    assert negrisk.question_id(m.neg_risk_market_id, 0) == m.question_id
    assert negrisk.condition_id(ADAPTER, m.question_id) == m.condition_id


def test_oculus_and_the_sandbox_derive_the_same_conditions() -> None:
    for i in (0, 1, 7, 255):
        q = negrisk.question_id(MARKET, i)
        assert q[-2:] == f"{i:02x}" and q[:-2] == MARKET[:-2]
        assert negrisk.condition_id(ADAPTER, q) == sandbox_markets.neg_risk_condition(q)
    with pytest.raises(ValueError):
        negrisk.question_id(MARKET, 256)


def test_topic0_is_the_keccak_of_the_event_signature() -> None:
    from Crypto.Hash import keccak

    h = keccak.new(digest_bits=256, data=b"PositionsConverted(address,bytes32,uint256,uint256)")
    assert S.positions_converted_topic == "0x" + h.hexdigest()


@pytest.mark.parametrize(
    ("found", "count"), [(set(), 0), ({0}, 1), ({0, 1, 2}, 3), ({0, 2}, None), ({1}, None)]
)
def test_question_count_needs_no_gap(found: set[int], count: int | None) -> None:
    assert negrisk.question_count(found) == count


# --- decoding ------------------------------------------------------------------------------


def conversion_log(**extra: Any) -> dict[str, Any]:
    return {
        "address": ADAPTER,
        "topics": [
            S.positions_converted_topic,
            chain.pad_address(WALLET),
            MARKET,
            "0x" + f"{0b101:064x}",
        ],
        "data": "0x" + f"{25 * M:064x}",
        "blockNumber": "0x4c4b40",
        "blockTimestamp": hex(int(T0.timestamp()) - 2),
        "transactionHash": "0x" + "ab" * 32,
        "logIndex": "0x3",
        "removed": False,
        **extra,
    }


def decode(payload: dict[str, Any]) -> chain.ChainConversion:
    return chain.decode_positions_converted(chain.ChainLog.model_validate(payload), S)


def test_positions_converted_decodes_owner_market_index_set_and_amount() -> None:
    c = decode(conversion_log())
    assert (c.owner, c.market_id, c.index_set, c.amount_micros) == (WALLET, MARKET, 5, 25 * M)
    assert (c.log_index, c.block_number, c.removed) == (3, 5_000_000, False)
    assert c.block_time == T0 - timedelta(seconds=2)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"address": "0x" + "11" * 20}, "configured adapter"),
        ({"topics": [S.positions_converted_topic, chain.pad_address(WALLET), MARKET]}, "4 topics"),
        ({"data": "0x"}, "1 data word"),
        ({"data": "0x" + "0" * 64}, "zero"),
        ({"data": "0x" + "f" * 64}, "past"),
        (
            {"topics": [S.positions_converted_topic, chain.pad_address(WALLET), MARKET, "0x0"]},
            "empty",
        ),
    ],
)
def test_bad_conversion_logs_are_refused_with_a_reason(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(chain.DecodeError, match=reason):
        decode(conversion_log(**change))


def test_the_listener_subscribes_to_conversions_by_stakeholder() -> None:
    filters = chain.log_filters([WALLET], S)
    assert list(filters) == ["fills", "conversions"]
    spec = filters["conversions"]
    assert spec["address"] == [ADAPTER]
    assert spec["topics"] == [[S.positions_converted_topic], [chain.pad_address(WALLET)]]
    none = settings_mod.Settings(neg_risk_adapters="")
    assert list(chain.log_filters([WALLET], none)) == ["fills"]


# --- legs, entries and the fold --------------------------------------------------------------


def test_an_index_set_names_no_legs_given_and_yes_legs_received() -> None:
    legs = negrisk.conversion_legs(market(4), 0b0101)
    assert legs == ([("0xc0", "no0"), ("0xc2", "no2")], [("0xc1", "yes1"), ("0xc3", "yes3")])
    every = negrisk.conversion_legs(market(2), 0b11)
    assert every == ([("0xc0", "no0"), ("0xc1", "no1")], [])


@pytest.mark.parametrize(
    ("m", "index_set", "why"),
    [
        (market(None), 1, "not all known"),
        (market(3), 0, "not within"),
        (market(3), 0b1000, "not within"),
        (market(3, skip=1), 1, "unknown"),
    ],
)
def test_legs_that_cannot_be_told_say_why(m: negrisk.Market, index_set: int, why: str) -> None:
    got = negrisk.conversion_legs(m, index_set)
    assert isinstance(got, str) and why in got


def test_entries_take_the_fee_from_yes_legs_and_collateral_as_the_adapter_does() -> None:
    no = [("0xc0", "no0"), ("0xc2", "no2")]
    yes = [("0xc1", "yes1")]
    got = ledger.conversion_entries("activity:9", T0, no, yes, 10 * M, fee_bips=100)
    moves = [(e.asset_id, e.share_delta_micros, e.cash_delta_micros) for e in got]
    # fee = 10 × 1 % = 0.1; YES gets 9.9; collateral (2 − 1) × 9.9
    assert moves == [
        ("no0", -10 * M, 0),
        ("no2", -10 * M, 0),
        ("yes1", 9_900_000, 0),
        (None, 0, 9_900_000),
    ]
    assert len({e.ref_id for e in got}) == len(got)  # reapplying collides, never doubles


def test_the_fold_moves_no_cost_to_the_yes_legs_less_the_collateral() -> None:
    """Two NO (cost 6 and 7 for 10 shares each) → 10 YES of the third question and $10:
    NO legs leave at their cost, the YES leg opens at 13 − 10 = 3, nothing realized,
    and equity at cost is unchanged."""
    p = portfolio.Portfolio("SHADOW_USER", 1)
    buys = [("no0", 6 * M), ("no2", 7 * M)]
    for i, (asset, cost) in enumerate(buys):
        p.apply(ledger.Entry(asset, "c", "TRADE_FILL", 10 * M, -cost, cost // 10, f"t{i}", T0))
    before = (p.cash, p.realized)
    for e in ledger.conversion_entries(
        "a:1", T0, [("c", "no0"), ("c", "no2")], [("c", "yes1")], 10 * M
    ):
        p.apply(e)
    assert p.realized == before[1] and p.cash == before[0] + 10 * M
    assert set(p.positions) == {"yes1"}
    assert (p.positions["yes1"].shares, p.positions["yes1"].cost) == (10 * M, 3 * M)
    assert p.value({}).equity == -13 * M + 10 * M + 3 * M  # cash + YES at cost


# --- the plan's rules --------------------------------------------------------------------------


def conv(source: str = "CHAIN", detected: datetime = T0, **row: Any) -> ActivityEvent:
    base = {
        "id": 5,
        "followed_user_id": 1,
        "activity_type": "CONVERSION",
        "condition_id": MARKET,
        "share_micros": 4 * M,
        "usdc_micros": 0,
        "event_time": detected - timedelta(seconds=2),
        "detect_time": detected,
        "tx_hash": "0x" + "ab" * 32,
        "source": source,
    }
    if source == "CHAIN":
        base |= {"neg_risk_market_id": MARKET, "index_set": "0x1"}
    return ActivityEvent.from_row(base | row)


@pytest.mark.parametrize(
    ("row", "known", "after", "expect"),
    [
        # a Data API row waits for its chain log for the grace, then is refused
        (conv("DATA_API"), None, GRACE - timedelta(seconds=1), "wait"),
        (conv("DATA_API"), None, GRACE, shadow_plan.CONVERSION_REASON),
        # a chain log waits out the reorg window unless the Data API reports it too
        (conv(), market(), GRACE - timedelta(seconds=1), "wait"),
        (conv(confirmed=True), market(), timedelta(0), "applied"),
        (conv(), market(), GRACE, "applied"),
        # its market's questions not known: waits, then refused with why
        (conv(), None, shadow_plan.CONVERSION_WAIT - timedelta(seconds=1), "wait"),
        (conv(), None, shadow_plan.CONVERSION_WAIT, "not yet looked up"),
        (conv(), market(None), shadow_plan.CONVERSION_WAIT, "not all known"),
        (conv(index_set="0x10"), market(), shadow_plan.CONVERSION_WAIT, "not within"),
    ],
)
def test_conversion_rules_at_their_boundaries(
    row: ActivityEvent, known: negrisk.Market | None, after: timedelta, expect: str
) -> None:
    neg_risk = {MARKET: known} if known else {}
    p = shadow_plan.plan([row], {}, {}, {}, T0 + after, GRACE, None, neg_risk)
    if expect == "wait":
        assert (p.entries, p.applied_acts, p.counts["conversion_waiting"]) == ([], [], 1)
    elif expect == "applied":
        assert p.applied_acts == [(5, "APPLIED")] and not p.refusals
        shares = {e.asset_id: e.share_delta_micros for e in p.entries}
        assert shares == {"no0": -4 * M, "yes1": 4 * M, "yes2": 4 * M, None: 0}
    else:
        assert p.applied_acts == [(5, "NOT_APPLIED")] and not p.entries
        assert expect in p.refusals[0].reason


def test_a_waiting_conversion_holds_back_the_users_later_events() -> None:
    later = conv(id=6, event_time=T0 + timedelta(seconds=1), index_set="0x2")
    p = shadow_plan.plan([conv(), later], {}, {}, {}, T0, GRACE, None, {MARKET: market()})
    assert not p.applied_acts and p.counts["conversion_waiting"] == 1


# --- storage, reorgs, the probe and the shadow book (a real Postgres) ---------------------------


def follow(conn: db.Conn) -> int:
    user = users.add(conn, WALLET, "conv", [], T0 - timedelta(days=1))
    conn.execute("UPDATE followed_user SET seeded_at = %(t)s", {"t": T0 - timedelta(days=1)})
    return user


def store(conn: db.Conn, user: int, **extra: Any) -> str:
    c = decode(conversion_log(**extra))
    return ingest.store_chain_conversion(conn, c, user, T0, json.dumps(conversion_log()))


def states(conn: db.Conn) -> list[tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT source, shadow_state, reorg_state FROM activity_event ORDER BY id"
    ).fetchall()
    return [tuple(r.values()) for r in rows]


def test_a_conversion_is_stored_once_removed_by_a_reorg_and_restored(conn: db.Conn) -> None:
    user = follow(conn)
    assert store(conn, user) == "insert"
    assert store(conn, user) == "duplicate"
    assert store(conn, user, logIndex="0x9", blockNumber="0x4c4b41") == "duplicate"
    row = conn.execute("SELECT * FROM activity_event").fetchone()
    assert row is not None
    assert (row["index_set"], row["neg_risk_market_id"], row["share_micros"]) == (
        "0x5",
        MARKET,
        25 * M,
    )
    assert row["payload"]["adapter"] == ADAPTER
    assert store(conn, user, removed=True) == "remove"
    assert states(conn) == [("CHAIN", "REMOVED", "REMOVED")]
    assert store(conn, user, removed=True) == "duplicate"
    assert store(conn, user) == "restore"
    assert states(conn) == [("CHAIN", None, None)]
    assert conn.execute("SELECT count(*) AS n FROM uncertain_conversion").fetchone() == {"n": 0}


def gamma_market(i: int, bips: int | None = 0) -> gamma.GammaMarket:
    q = negrisk.question_id(MARKET, i)
    return gamma.GammaMarket.model_validate(
        {
            "id": str(100 + i),
            "conditionId": negrisk.condition_id(ADAPTER, q),
            "negRisk": True,
            "outcomes": '["Yes", "No"]',
            "clobTokenIds": json.dumps([f"{i + 1}1", f"{i + 1}2"]),  # YES, NO
            "events": [{"id": "1", "negRiskFeeBips": bips}],
        }
    )


def test_probe_finds_every_question_by_its_derived_condition_then_the_book_applies(
    conn: db.Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = follow(conn)
    store(conn, user)  # index set 0b101 of a market with 12 questions
    listed = [gamma_market(i, bips=100) for i in range(12)]
    calls: list[int] = []

    def fetch(upstream: Any, *, condition_ids: list[str] | None = None, **_: Any) -> Any:
        calls.append(len(condition_ids or []))
        got = [m for m in listed if m.condition_id in set(condition_ids or [])]
        return wire.Batch(items=got)

    monkeypatch.setattr(gamma, "fetch_markets", fetch)
    assert markets.probe_neg_risk(conn, None, T0) == 1  # type: ignore[arg-type]
    known = markets.neg_risk_markets(conn, [MARKET])[MARKET]
    assert (known.question_count, known.fee_bips, len(known.questions)) == (12, 100, 12)
    assert known.questions[2] == negrisk.Question(2, listed[2].condition_id, "31", "32")
    assert calls == [11, 32]  # 0…10 (index set's top 2, + 8), then 11…42 (11 listed)
    assert markets.probe_neg_risk(conn, None, T0) == 0  # asked since the conversion
    # The user held the NO shares; past the grace the conversion applies.
    conn.execute(
        """INSERT INTO ledger_entry (portfolio_scope, followed_user_id, asset_id, entry_type,
               share_delta_micros, ref_id, effective_time)
           VALUES ('SHADOW_USER', %(u)s, '12', 'SEED', %(n)s, 's0', %(t)s),
                  ('SHADOW_USER', %(u)s, '32', 'SEED', %(n)s, 's2', %(t)s)""",
        {"u": user, "n": 25 * M, "t": T0 - timedelta(hours=1)},
    )
    counts = shadow.apply_user(conn, user, T0 - timedelta(days=2), T0 + GRACE, GRACE)
    assert counts["activities_applied"] == 1
    held = shadow.holdings(conn, user, [f"{i + 1}{k}" for i in range(12) for k in (1, 2)])
    out = 25 * M - 25 * M // 100
    assert held == {"12": 0, "32": 0} | {f"{i + 1}1": out for i in range(12) if i not in (0, 2)}
    cash = conn.execute(
        "SELECT sum(cash_delta_micros) AS c FROM ledger_entry WHERE asset_id IS NULL"
    ).fetchone()
    assert cash == {"c": out}  # (2 − 1) × (amount − fee)
    assert states(conn) == [("CHAIN", "APPLIED", None)]
    # A Data API row of the same transaction is superseded, never applied on top.
    conn.execute(
        """INSERT INTO activity_event (source, source_id, followed_user_id, wallet,
               activity_type, condition_id, share_micros, usdc_micros, tx_hash, event_time,
               detect_time)
           VALUES ('DATA_API', 'd1', %(u)s, %(w)s, 'CONVERSION', %(c)s, %(n)s, 0, %(tx)s,
               %(t)s, %(t)s)""",
        {"u": user, "w": WALLET, "c": MARKET, "n": 25 * M, "tx": "0x" + "ab" * 32, "t": T0},
    )
    shadow.apply_user(conn, user, T0 - timedelta(days=2), T0 + 2 * GRACE, GRACE)
    assert states(conn) == [("CHAIN", "APPLIED", None), ("DATA_API", "SUPERSEDED", None)]
    # Reorged out after it was applied: the book keeps it and says it is uncertain.
    store(conn, user, removed=True)
    uncertain = conn.execute("SELECT followed_user_id, why FROM uncertain_conversion").fetchall()
    assert uncertain == [{"followed_user_id": user, "why": "reorged out"}]


# --- review fixes: the seed, reorgs after a supersede, partial answers, hostile input ------


def test_a_conversion_before_the_seed_waits_for_its_data_api_row_then_is_refused() -> None:
    row = conv(before_seed=True)
    wait = shadow_plan.CONVERSION_WAIT
    early = shadow_plan.plan([row], {}, {}, {}, T0 + 2 * GRACE, GRACE, None, {MARKET: market()})
    assert early.counts["conversion_waiting"] == 1 and not early.entries
    late = shadow_plan.plan([row], {}, {}, {}, T0 + wait, GRACE, None, {MARKET: market()})
    assert (
        late.applied_acts == [(5, "NOT_APPLIED")] and "before the seed" in late.refusals[0].reason
    )
    told = conv(before_seed=True, confirmed=True)  # its Data API row is not in the seed
    got = shadow_plan.plan([told], {}, {}, {}, T0, GRACE, None, {MARKET: market()})
    assert got.applied_acts == [(5, "APPLIED")]


def test_without_an_adapter_a_data_api_conversion_is_refused_at_once() -> None:
    p = shadow_plan.plan([conv("DATA_API")], {}, {}, {}, T0, GRACE, None, {}, from_chain=False)
    assert p.applied_acts == [(5, "NOT_APPLIED")]
    assert "OCULUS_NEG_RISK_ADAPTERS" in p.refusals[0].reason


def api_conversion(conn: db.Conn, user: int, state: str | None = None) -> None:
    conn.execute(
        """INSERT INTO activity_event (source, source_id, followed_user_id, wallet,
               activity_type, condition_id, share_micros, usdc_micros, tx_hash, event_time,
               detect_time, shadow_state, shadow_applied_at)
           VALUES ('DATA_API', 'd1', %(u)s, %(w)s, 'CONVERSION', %(c)s, %(n)s, 0, %(tx)s,
               %(t)s, %(t)s, %(s)s, CASE WHEN %(s)s::text IS NULL THEN NULL ELSE %(t)s END)""",
        {"u": user, "w": WALLET, "c": MARKET, "n": 25 * M, "tx": "0x" + "ab" * 32, "t": T0,
         "s": state},
    )  # fmt: skip


def test_a_conversion_the_seed_holds_is_covered_not_applied_again(conn: db.Conn) -> None:
    user = follow(conn)
    store(conn, user)
    api_conversion(conn, user, "COVERED_BY_SEED")  # the seed's /positions hold it
    counts = shadow.apply_user(conn, user, T0 - timedelta(days=2), T0 + GRACE, GRACE)
    assert counts["covered_by_seed"] == 1 and not counts.get("entries")
    assert states(conn) == [
        ("CHAIN", "COVERED_BY_SEED", None),
        ("DATA_API", "COVERED_BY_SEED", None),
    ]


def test_a_log_reorged_out_before_it_applied_hands_back_the_data_api_row(conn: db.Conn) -> None:
    user = follow(conn)
    store(conn, user)
    api_conversion(conn, user)
    shadow.apply_user(conn, user, T0 - timedelta(days=2), T0, GRACE)  # within the grace
    assert states(conn) == [("CHAIN", None, None), ("DATA_API", "SUPERSEDED", None)]
    store(conn, user, removed=True)
    assert states(conn) == [("CHAIN", "REMOVED", "REMOVED"), ("DATA_API", None, None)]
    shadow.apply_user(conn, user, T0 - timedelta(days=2), T0 + GRACE, GRACE)
    assert states(conn)[1] == ("DATA_API", "NOT_APPLIED", None)
    uncertain = conn.execute("SELECT source, why FROM uncertain_conversion").fetchall()
    assert uncertain == [{"source": "DATA_API", "why": "not applied"}]


def test_a_refused_gamma_page_leaves_the_market_to_ask_again(
    conn: db.Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = follow(conn)
    store(conn, user)
    other = "0x" + "3d" * 32
    store(conn, user, topics=[S.positions_converted_topic, chain.pad_address(WALLET), other, "0x1"])
    listed = [gamma_market(i) for i in range(3)]

    theirs = {negrisk.condition_id(ADAPTER, negrisk.question_id(other, i)) for i in range(9)}

    def fetch(upstream: Any, *, condition_ids: list[str] | None = None, **_: Any) -> Any:
        wanted = set(condition_ids or [])
        got = [m for m in listed if m.condition_id in wanted]
        return wire.Batch(items=got, refused=1 if wanted & theirs else 0)  # other's refused

    monkeypatch.setattr(gamma, "fetch_markets", fetch)
    assert markets.probe_neg_risk(conn, None, T0) == 1  # type: ignore[arg-type]
    known = markets.neg_risk_markets(conn, [MARKET, other])
    assert set(known) == {MARKET} and known[MARKET].question_count == 3
    later = T0 + timedelta(minutes=2)  # asked again while its conversion waits
    assert markets.probe_neg_risk(conn, None, later) == 1  # type: ignore[arg-type]


def test_hostile_numbers_are_refused_or_read_as_none() -> None:
    with pytest.raises(chain.DecodeError, match="not a time"):
        decode(conversion_log(blockTimestamp=hex(2**64)))
    live = json.loads((FIXTURES / "nautilus_gamma_market_live.json").read_text())
    m = gamma.GammaMarket.model_validate({**live, "negRiskFeeBips": 1e400})
    assert m.neg_risk_fee_bips is None and m.condition_id
    for bad in (-1, 10_001, 2.5, "x", True):
        assert (
            gamma.GammaMarket.model_validate({**live, "negRiskFeeBips": bad}).neg_risk_fee_bips
            is None
        )
    assert (
        gamma.GammaMarket.model_validate({**live, "negRiskFeeBips": 250}).neg_risk_fee_bips == 250
    )


@pytest.mark.parametrize(
    ("first", "gap_kept"), [({"result": []}, False), ({"error": "boom"}, True)]
)
def test_the_catch_up_closes_the_gap_only_when_every_filter_replayed(
    first: dict[str, Any], gap_kept: bool
) -> None:
    from common.runtime import jobs
    from functions import listen

    ls = listen.Listener(None, S, stop=jobs.StopFlag())
    ls._unreplayed, ls._replays, ls._pending = 100, 2, {1: "getLogs", 2: "getLogs"}
    ls._reply(chain.RpcReply(1, first.get("result"), first.get("error")), T0, None)
    assert ls._unreplayed == 100  # the other filter's replay is not in yet
    ls._reply(chain.RpcReply(2, [], None), T0, None)
    assert ls._unreplayed == (100 if gap_kept else None)
