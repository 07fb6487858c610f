"""OrderFilled decoding in both exchange layouts, the subscription request, and the
JSON-RPC message parser's handling of bad frames."""

from __future__ import annotations

import json
from typing import Any

import pytest

from common.runtime import settings
from common.upstream import chain, wire

S = settings.Settings()
LEADER = "0x" + "5a" * 20
OTHER = "0x" + "0b" * 20
TOKEN = 71321045679252212594626385532706912750332728571942532289631379312455583992563


def log(
    *, version: int, words: list[int], maker: str = LEADER, taker: str = OTHER, **extra: Any
) -> dict[str, Any]:
    address = S.exchange_addresses_v2[0] if version == 2 else S.exchange_addresses_v1[0]
    topic = S.order_filled_topic_v2 if version == 2 else S.order_filled_topic_v1
    return {
        "address": address,
        "topics": [topic, "0x" + "ee" * 32, chain.pad_address(maker), chain.pad_address(taker)],
        "data": "0x" + "".join(f"{w:064x}" for w in words),
        "blockNumber": "0x4c4b40",
        "blockHash": "0x" + "bb" * 32,
        "blockTimestamp": "0x6920a000",
        "transactionHash": "0x" + "ab" * 32,
        "logIndex": "0x1f",
        "removed": False,
        **extra,
    }


def decode(payload: dict[str, Any]) -> chain.ChainFill:
    return chain.decode_order_filled(chain.ChainLog.model_validate(payload), S)


def test_v2_buy_real_vector() -> None:
    fill = decode(log(version=2, words=[0, TOKEN, 5_000_000, 7_575_758, 85_000, 0, 0]))
    assert (fill.version, fill.side, fill.asset_id) == (2, "BUY", str(TOKEN))
    assert (fill.collateral_micros, fill.share_micros, fill.fee_micros) == (
        5_000_000,
        7_575_758,
        85_000,
    )
    assert fill.price_micros == 660_000
    assert (fill.owner, fill.counterparty) == (LEADER, OTHER)
    assert (fill.log_index, fill.block_number) == (31, 5_000_000)
    assert fill.block_time is not None and fill.block_time.year == 2025
    assert not fill.is_taker_order


def test_v2_sell_is_shares_for_collateral() -> None:
    fill = decode(log(version=2, words=[1, TOKEN, 7_570_000, 4_920_500, 86_100, 0, 0]))
    assert (fill.side, fill.share_micros, fill.collateral_micros, fill.price_micros) == (
        "SELL",
        7_570_000,
        4_920_500,
        650_000,
    )


def test_taker_order_event_has_the_exchange_as_taker() -> None:
    fill = decode(log(version=2, words=[0, TOKEN, 1, 2, 0, 0, 0], taker=S.exchange_addresses_v2[0]))
    assert fill.is_taker_order


@pytest.mark.parametrize(
    ("words", "side", "shares", "collateral"),
    [
        ([0, TOKEN, 4_700_000, 10_000_000, 0], "BUY", 10_000_000, 4_700_000),
        ([TOKEN, 0, 10_000_000, 5_300_000, 1_000], "SELL", 10_000_000, 5_300_000),
    ],
)
def test_v1_layout(words: list[int], side: str, shares: int, collateral: int) -> None:
    fill = decode(log(version=1, words=words))
    assert (fill.version, fill.side, fill.asset_id) == (1, side, str(TOKEN))
    assert (fill.share_micros, fill.collateral_micros) == (shares, collateral)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (log(version=2, words=[0, TOKEN, 1, 2, 0]), "7 data words"),
        (log(version=2, words=[2, TOKEN, 1, 2, 0, 0, 0]), "side must be 0 or 1"),
        (log(version=2, words=[0, TOKEN, 5, 0, 0, 0, 0]), "without shares"),
        (log(version=2, words=[0, TOKEN, 9, 5, 0, 0, 0]), "impossible price"),
        (log(version=2, words=[0, TOKEN, 0, 5, 0, 0, 0]), "impossible price"),
        (log(version=2, words=[0, TOKEN, 2**255, 2**256 - 1, 0, 0, 0]), "ceiling"),
        (log(version=2, words=[0, TOKEN, 10**16 + 1, 10**16 + 1, 0, 0, 0]), "ceiling"),
        (log(version=2, words=[0, TOKEN, 1, 2, 2**200, 0, 0]), "ceiling"),
        (log(version=1, words=[TOKEN, TOKEN, 1, 1, 0]), "collateral"),
        ({**log(version=2, words=[0] * 7), "address": "0x" + "99" * 20}, "configured exchange"),
        ({**log(version=2, words=[0] * 7), "data": "0x1234"}, "32-byte words"),
        ({**log(version=2, words=[0, TOKEN, 1, 2, 0, 0, 0]), "logIndex": "31"}, "hex quantity"),
        ({**log(version=1, words=[0] * 5), "topics": [S.order_filled_topic_v1]}, "4 topics"),
    ],
)
def test_bad_logs_are_refused_with_a_reason(payload: dict[str, Any], reason: str) -> None:
    with pytest.raises(chain.DecodeError, match=reason):
        decode(payload)


def test_v2_topic_on_a_v1_exchange_is_refused() -> None:
    payload = log(version=1, words=[0, TOKEN, 1, 2, 0])
    payload["topics"][0] = S.order_filled_topic_v2
    with pytest.raises(chain.DecodeError, match="configured exchange"):
        decode(payload)


def test_subscribe_request_filters_on_owner_topic() -> None:
    request = json.loads(chain.subscribe_request(7, [LEADER.upper().replace("0X", "0x")], S))
    assert request["method"] == "eth_subscribe" and request["id"] == 7
    kind, params = request["params"]
    assert kind == "logs"
    assert set(params["address"]) == {*S.exchange_addresses_v1, *S.exchange_addresses_v2}
    topic0, any_hash, owners = params["topics"]
    assert set(topic0) == {S.order_filled_topic_v1, S.order_filled_topic_v2}
    assert any_hash is None
    assert owners == ["0x" + "0" * 24 + LEADER[2:]]


def test_messages() -> None:
    reply = chain.parse_message('{"jsonrpc":"2.0","id":1,"result":"0xabc"}')
    assert isinstance(reply, chain.RpcReply) and reply.result == "0xabc"
    note = chain.parse_message(
        json.dumps(
            {
                "jsonrpc": "2.0",
                "method": "eth_subscription",
                "params": {"subscription": "0xabc", "result": log(version=2, words=[0] * 7)},
            }
        )
    )
    assert isinstance(note, chain.LogNotification) and note.subscription == "0xabc"
    for bad in [
        '{"jsonrpc":"2.0","method":"eth_subscription","para',
        "[1]",
        '{"x": 1}',
        b"\xff\xfe",
        '{"method":"eth_subscription","params":{"result":{"address":1}}}',
    ]:
        rejected = chain.parse_message(bad)
        assert isinstance(rejected, wire.Reject), bad
        assert rejected.source == "chain/ws" and rejected.reason
