"""A hostile or broken Data API (issue 13, items 2–4 and the detect time): repeated rows
never become fills the chain does not back, an out-of-range number is quarantined per
row, a listing that ignores `limit` is refused, a listing that never ends stops at the
run's caps, and a fill's detect time is when its page arrived."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from common.domain import money
from common.runtime import settings
from common.store import db, ingest, polling, shadow, users
from common.upstream import chain, data_api, http, wire
from functions import reconcile

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
WALLET = "0x" + "5a" * 20
OTHER = "0x" + "6b" * 20
COND = "0x" + "c1" * 32
TX = "0x" + "12" * 32
S = settings.Settings(
    data_api_url="http://data.test",
    gamma_url="http://gamma.test",
    clob_url="http://clob.test",
    http_max_retries=0,
)
GRACE = timedelta(seconds=60)
SEED_WINDOW = timedelta(minutes=15)


def trade_row(wallet: str = WALLET, *, size: Any = 10, price: Any = 0.47, tx: str = TX) -> str:
    """One /trades row as JSON text (numbers written as given, e.g. 1e300)."""
    return (
        f'{{"proxyWallet": "{wallet}", "side": "BUY", "asset": "123", "conditionId": "{COND}",'
        f' "size": {size}, "price": {price}, "timestamp": {int(NOW.timestamp()) - 30},'
        f' "transactionHash": "{tx}"}}'
    )


class FakeDataApi:
    """/trades and /activity answered from per-wallet row texts; counts requests."""

    def __init__(self) -> None:
        self.trades: dict[str, list[str]] = {}
        self.activity: Callable[[httpx.Request], str] = lambda _r: "[]"
        self.requests = 0
        self.on_trades: Callable[[], None] = lambda: None
        self.positions = "[]"

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.requests > 2_000:
            raise AssertionError("the poller kept asking: more than 2,000 requests")
        user = request.url.params.get("user", "")
        if request.url.path == "/trades":
            self.on_trades()
            offset = int(request.url.params.get("offset", "0"))
            rows = self.trades.get(user, []) if offset == 0 else []
            return httpx.Response(200, text="[" + ",".join(rows) + "]")
        if request.url.path == "/activity":
            return httpx.Response(200, text=self.activity(request))
        if request.url.path == "/positions":
            return httpx.Response(200, text=self.positions)
        return httpx.Response(404, text="{}")

    def upstreams(self) -> http.Upstreams:
        return http.make_upstreams(S, transport=httpx.MockTransport(self.handler))


def setup_users(conn: db.Conn, *wallets: str) -> list[int]:
    conn.execute("INSERT INTO market (condition_id, question) VALUES (%(c)s, 'q')", {"c": COND})
    conn.execute(
        "INSERT INTO outcome_asset (asset_id, condition_id, outcome, outcome_index)"
        " VALUES ('123', %(c)s, 'Yes', 0), ('456', %(c)s, 'No', 1)",
        {"c": COND},
    )
    ids = [
        users.add(conn, w, f"lead{i}", [], NOW - timedelta(hours=1)) for i, w in enumerate(wallets)
    ]
    conn.execute("UPDATE followed_user SET seeded_at = %(t)s", {"t": NOW - timedelta(hours=1)})
    return ids


def poll_once(conn: db.Conn, api: FakeDataApi, now: datetime = NOW) -> dict[str, int]:
    counts: dict[str, int] = {}
    with api.upstreams() as ups:
        polling.poll_all(
            conn, ups, now, overlap=timedelta(minutes=2), reach_back_to=None, counts=counts
        )
    return counts


def chain_fill(log_index: int, shares: int = 10_000_000) -> chain.ChainFill:
    return chain.ChainFill(
        version=2,
        exchange=S.exchange_addresses_v2[0],
        order_hash="0x" + "ee" * 32,
        owner=WALLET,
        counterparty=S.exchange_addresses_v2[0],
        side="BUY",
        asset_id="123",
        share_micros=shares,
        collateral_micros=4_700_000,
        fee_micros=0,
        price_micros=470_000,
        tx_hash=TX,
        log_index=log_index,
        block_number=7,
        block_hash=None,
        block_time=NOW - timedelta(seconds=30),
        removed=False,
    )


def shadow_shares(conn: db.Conn) -> int:
    row = conn.execute(
        "SELECT coalesce(sum(share_delta_micros), 0)::bigint AS s FROM ledger_entry"
        " WHERE portfolio_scope = 'SHADOW_USER' AND asset_id = '123'"
    ).fetchone()
    assert row is not None
    return int(row["s"])


def live_fills(conn: db.Conn) -> int:
    row = conn.execute(
        "SELECT count(*) AS n FROM trade_event WHERE tx_hash = %(tx)s AND reorg_state IS NULL",
        {"tx": TX},
    ).fetchone()
    assert row is not None
    return int(row["n"])


def quarantined(conn: db.Conn) -> list[dict[str, Any]]:
    return conn.execute("SELECT source, reason, seen_count FROM quarantine ORDER BY id").fetchall()


# --- item 3: one out-of-range number ---------------------------------------------------


@pytest.mark.parametrize("value", ["1e300", "1E+400", "-1e300", "9" * 400])
def test_to_micros_raises_the_projects_own_error(value: str) -> None:
    with pytest.raises(money.AmountError):
        money.to_micros(value)
    with pytest.raises(money.AmountError):
        money.to_micros(http.parse_json(value))


@pytest.mark.parametrize("size", ["1e300", "1e16", "1e11", "10000000000.5"])
def test_an_amount_past_the_fields_ceiling_is_a_reject_not_a_crash(size: str) -> None:
    payload = http.parse_json("[" + trade_row(size=size) + "," + trade_row() + "]")
    batch = wire.parse_rows(data_api.TradeRow, payload, "data_api/trades")
    assert len(batch.items) == 1
    assert len(batch.rejects) == 1
    assert "size" in batch.rejects[0].reason


@pytest.mark.parametrize("price", ["0", "0.0", "0.0000004"])
def test_a_fill_at_price_zero_is_refused(price: str) -> None:
    trade = http.parse_json("[" + trade_row(price=price) + "]")
    batch = wire.parse_rows(data_api.TradeRow, trade, "data_api/trades")
    assert not batch.items and "price" in batch.rejects[0].reason
    activity = {**trade[0], "type": "TRADE", "usdcSize": 0}
    assert isinstance(
        wire.parse_one(data_api.ActivityRow, activity, "data_api/activity"), wire.Reject
    )


def test_every_amount_that_parses_fits_a_bigint() -> None:
    biggest = data_api.TradeRow.model_validate(
        http.parse_json(trade_row(size=wire.MAX_AMOUNT_UNITS, price=1))
    )
    assert biggest.size <= 2**63 - 1
    assert biggest.notional_micros <= 2**63 - 1


def test_one_bad_number_is_quarantined_per_row_and_every_user_is_still_polled(
    conn: db.Conn,
) -> None:
    first, second = setup_users(conn, WALLET, OTHER)
    api = FakeDataApi()
    api.trades[WALLET] = [
        trade_row(size="1e300"),
        trade_row(size="1e16"),
        trade_row(size=10, tx="0x" + "34" * 32),
    ]
    api.trades[OTHER] = [trade_row(OTHER, size=5)]
    counts = poll_once(conn, api)
    assert counts.get("users_failed", 0) == 0
    stored = conn.execute(
        "SELECT followed_user_id, share_micros FROM trade_event ORDER BY followed_user_id"
    ).fetchall()
    assert stored == [
        {"followed_user_id": first, "share_micros": 10_000_000},
        {"followed_user_id": second, "share_micros": 5_000_000},
    ]
    reasons = [q["reason"] for q in quarantined(conn)]
    assert len(reasons) == 2 and all("size" in r for r in reasons)


# --- item 2: repeated rows --------------------------------------------------------------


def test_rows_beyond_the_chains_logs_are_quarantined_as_duplicates(conn: db.Conn) -> None:
    """The chain saw one fill in this tx; a Data API answer repeating it 30 times adds none."""
    (user,) = setup_users(conn, WALLET)
    assert ingest.store_chain_fill(conn, chain_fill(3), user, NOW - timedelta(seconds=29)) == (
        "insert"
    )
    api = FakeDataApi()
    api.trades[WALLET] = [trade_row()] * 30
    poll_once(conn, api)
    poll_once(conn, api)  # the overlap reads them again: still nothing new
    assert live_fills(conn) == 1
    event = conn.execute("SELECT api_source_id, log_index FROM trade_event").fetchone()
    assert event is not None and event["api_source_id"] and event["log_index"] == 3
    dupes = [q for q in quarantined(conn) if q["reason"].startswith("DUPLICATE_ROW")]
    assert len(dupes) == 1 and "29" in dupes[0]["reason"]
    shadow.apply_pending(conn, NOW + GRACE * 2, GRACE, SEED_WINDOW)
    assert shadow_shares(conn) == 10_000_000


def test_two_real_identical_fills_stay_two_when_the_chain_has_two_logs(conn: db.Conn) -> None:
    (user,) = setup_users(conn, WALLET)
    for log_index in (3, 4):
        ingest.store_chain_fill(conn, chain_fill(log_index), user, NOW - timedelta(seconds=29))
    api = FakeDataApi()
    api.trades[WALLET] = [trade_row()] * 5
    poll_once(conn, api)
    assert live_fills(conn) == 2
    shadow.apply_pending(conn, NOW + GRACE * 2, GRACE, SEED_WINDOW)
    assert shadow_shares(conn) == 20_000_000


def test_without_the_chain_identical_rows_apply_after_the_grace_as_today(conn: db.Conn) -> None:
    setup_users(conn, WALLET)
    api = FakeDataApi()
    api.trades[WALLET] = [trade_row()] * 2
    poll_once(conn, api)
    assert live_fills(conn) == 2
    shadow.apply_pending(conn, NOW + timedelta(seconds=10), GRACE, SEED_WINDOW)
    assert shadow_shares(conn) == 0  # still waiting for the chain
    shadow.apply_pending(conn, NOW + GRACE * 2, GRACE, SEED_WINDOW)
    assert shadow_shares(conn) == 20_000_000


def test_api_rows_first_then_one_chain_log_the_extras_never_reach_the_ledger(
    conn: db.Conn,
) -> None:
    (user,) = setup_users(conn, WALLET)
    api = FakeDataApi()
    api.trades[WALLET] = [trade_row()] * 30
    poll_once(conn, api)
    assert ingest.store_chain_fill(conn, chain_fill(3), user, NOW + timedelta(seconds=5)) == (
        "confirm"
    )
    shadow.apply_pending(conn, NOW + GRACE * 2, GRACE, SEED_WINDOW)
    assert shadow_shares(conn) == 10_000_000
    assert live_fills(conn) == 1
    states = conn.execute(
        "SELECT reorg_state, count(*) AS n FROM trade_event GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert states == [{"reorg_state": "CONTRADICTED", "n": 29}, {"reorg_state": None, "n": 1}]
    assert any(q["reason"].startswith("DUPLICATE_ROW") for q in quarantined(conn))


def test_reconcile_reverses_applied_fills_the_chain_contradicts(conn: db.Conn) -> None:
    (user,) = setup_users(conn, WALLET)
    api = FakeDataApi()
    api.trades[WALLET] = [trade_row()] * 3
    poll_once(conn, api)
    shadow.apply_pending(conn, NOW + GRACE * 2, GRACE, SEED_WINDOW)  # no chain: applied
    assert shadow_shares(conn) == 30_000_000
    later = NOW + GRACE * 3
    assert ingest.store_chain_fill(conn, chain_fill(3), user, later) == "confirm"
    voided = reconcile.void_contradicted(conn, later + timedelta(seconds=30))
    assert voided == 2
    assert shadow_shares(conn) == 10_000_000
    assert live_fills(conn) == 1
    items = conn.execute("SELECT stage, item_key, error FROM failed_item").fetchall()
    assert len(items) == 2 and all("chain" in i["error"] for i in items)
    # Again: nothing more moves.
    assert reconcile.void_contradicted(conn, later + timedelta(seconds=60)) == 0
    assert shadow_shares(conn) == 10_000_000


def test_a_listing_with_more_rows_than_its_limit_is_refused(conn: db.Conn) -> None:
    (user,) = setup_users(conn, WALLET)
    api = FakeDataApi()
    api.trades[WALLET] = [trade_row(tx=f"0x{i:064x}") for i in range(data_api.MAX_LIMIT + 1)]
    counts = poll_once(conn, api)
    assert live_fills(conn) == 0
    assert conn.execute("SELECT count(*) AS n FROM trade_event").fetchone() == {"n": 0}
    assert counts.get("users_failed") == 1
    assert any("limit" in q["reason"] for q in quarantined(conn))
    checkpoint = conn.execute(
        "SELECT cursor_time FROM system_checkpoint WHERE name = %(n)s AND followed_user_id = %(u)s",
        {"n": polling.CHECKPOINT, "u": user},
    ).fetchone()
    assert checkpoint is None  # not moved past rows it could not read


# --- item 4: a listing that never ends ---------------------------------------------------


def test_an_endless_listing_stops_at_the_runs_caps(conn: db.Conn) -> None:
    """Every /activity page is full, whatever the window or offset: the poller used to
    halve the window without end (GBs of memory); now it stops and says so."""
    setup_users(conn, WALLET)
    api = FakeDataApi()
    serial = iter(range(10**9))

    def full_page(request: httpx.Request) -> str:
        rows = []
        start = int(request.url.params.get("start", "0"))
        for _ in range(data_api.MAX_LIMIT):
            rows.append(
                {
                    "proxyWallet": WALLET,
                    "timestamp": max(start, int(NOW.timestamp()) - 600),
                    "type": "TRADE",
                    "conditionId": COND,
                    "size": 1,
                    "usdcSize": 0.5,
                    "price": 0.5,
                    "asset": "123",
                    "side": "BUY",
                    "transactionHash": f"0x{next(serial):064x}",
                }
            )
        return json.dumps(rows)

    api.activity = full_page
    counts = poll_once(conn, api)
    assert api.requests < 200
    assert counts.get("users_failed") == 1
    (item,) = conn.execute("SELECT error FROM failed_item WHERE stage = 'poll'").fetchall()
    assert "rows" in item["error"]


# --- the detect time ----------------------------------------------------------------------


def test_detect_time_is_when_the_page_arrived_not_when_the_batch_began(conn: db.Conn) -> None:
    setup_users(conn, WALLET)
    api = FakeDataApi()
    api.trades[WALLET] = [trade_row()]
    clock = {"now": NOW}

    def slow_answer() -> None:
        clock["now"] = NOW + timedelta(seconds=3)

    api.on_trades = slow_answer
    counts: dict[str, int] = {}
    with api.upstreams() as ups:
        polling.poll_all(
            conn,
            ups,
            NOW,
            overlap=timedelta(minutes=2),
            reach_back_to=None,
            counts=counts,
            clock=lambda: clock["now"],
        )
    row = conn.execute("SELECT detect_time FROM trade_event").fetchone()
    assert row == {"detect_time": NOW + timedelta(seconds=3)}


# --- per row, never per run ---------------------------------------------------------------


def test_a_row_the_database_refuses_is_quarantined_and_the_rest_stored(conn: db.Conn) -> None:
    (user,) = setup_users(conn, WALLET)
    good = ingest.ApiFill(user, WALLET, TX, "123", COND, "BUY", 470_000, 10_000_000, NOW)
    bad = ingest.ApiFill(
        user, WALLET, "0x" + "34" * 32, "123", COND, "BUY", 470_000, 2**63, NOW
    )  # past a bigint: only a bug upstream of this could build it
    counts = ingest.store_api_fills(conn, [bad, good], NOW)
    assert counts["api_inserted"] == 1 and counts["api_refused_rows"] == 1
    assert live_fills(conn) == 1
    (q,) = quarantined(conn)
    assert q["reason"].startswith("refused by the database")


def test_a_nul_in_a_title_does_not_keep_a_real_fill_out(conn: db.Conn) -> None:
    setup_users(conn, WALLET)
    api = FakeDataApi()
    api.trades[WALLET] = [trade_row()[:-1] + ', "title": "Will\\u0000it?"}']
    counts = poll_once(conn, api)
    assert counts.get("users_failed", 0) == 0
    assert live_fills(conn) == 1


def test_a_body_that_is_not_json_is_kept_as_a_prefix_with_the_size_of_the_whole(
    conn: db.Conn,
) -> None:
    import hashlib

    setup_users(conn, WALLET)
    api = FakeDataApi()
    body = "<html>" + "x" * 200_000
    api.activity = lambda _r: body
    counts = poll_once(conn, api)
    assert counts.get("users_failed") == 1  # the listing is not whole: checkpoint stays
    (row,) = conn.execute(
        "SELECT length(payload) AS kept, payload_bytes, payload_sha256 FROM quarantine"
    ).fetchall()
    assert row["kept"] == wire.MAX_PAYLOAD_CHARS
    assert row["payload_bytes"] == len(body)
    assert row["payload_sha256"] == hashlib.sha256(body.encode()).hexdigest()


def test_a_seed_from_a_refused_positions_page_is_not_made(conn: db.Conn) -> None:
    (user,) = setup_users(conn, WALLET)
    conn.execute("UPDATE followed_user SET seeded_at = NULL")
    row = {"proxyWallet": WALLET, "asset": "123", "conditionId": COND, "size": 5}
    api = FakeDataApi()
    api.positions = json.dumps([row] * (data_api.MAX_LIMIT + 1))
    counts = poll_once(conn, api)
    assert counts.get("users_failed") == 1
    seeded = conn.execute("SELECT seeded_at FROM followed_user WHERE id = %(u)s", {"u": user})
    assert seeded.fetchone() == {"seeded_at": None}
    assert shadow_shares(conn) == 0
    api.positions = json.dumps([row])
    poll_once(conn, api)
    assert shadow_shares(conn) == 5_000_000


def test_the_payload_is_the_row_as_received(conn: db.Conn) -> None:
    """Names as the API spells them and numbers digit for digit, not a re-dump in micros."""
    setup_users(conn, WALLET)
    api = FakeDataApi()
    api.trades[WALLET] = [trade_row(size="12.3456789", price="0.709999959")]
    poll_once(conn, api)
    row = conn.execute(
        "SELECT payload->>'price' AS price, payload->>'size' AS size,"
        " payload ? 'proxyWallet' AS camel FROM trade_event"
    ).fetchone()
    assert row == {"price": "0.709999959", "size": "12.3456789", "camel": True}
