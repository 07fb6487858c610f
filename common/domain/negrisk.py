"""Neg-risk markets and their conversions (pure), as Polymarket's NegRiskAdapter
(github.com/Polymarket/neg-risk-ctf-adapter, src/NegRiskAdapter.sol) defines them.

- A neg-risk market (`marketId`, bytes32) holds questions 0 … questionCount−1. Question
  i's id is the market id with its last byte set to i (NegRiskIdLib.getQuestionId); its
  condition is the CTF's keccak256(adapter ‖ questionId ‖ uint256(2)), the adapter
  being the oracle (CTHelpers.getConditionId). Each question is a Yes/No market.
- `convertPositions(marketId, indexSet, amount)`, logged as PositionsConverted
  (stakeholder, marketId, indexSet, amount): the stakeholder gives `amount` NO shares of
  every question in the index set (bit i = question i, the lsb the first) and gets
  `amount − fee` YES shares of every other question, plus (noCount − 1) × (amount − fee)
  of collateral; fee = amount × feeBips / 10,000, the market's fee in the adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from Crypto.Hash import keccak

MAX_QUESTIONS = 256  # a question index is one byte


def _hash32(value: str, what: str) -> bytes:
    text = value.lower().removeprefix("0x")
    if len(text) != 64:
        raise ValueError(f"{what} is not 32 bytes: {value!r}")
    return bytes.fromhex(text)


def question_id(market_id: str, index: int) -> str:
    """Question `index` of a neg-risk market: the market id, last byte = index."""
    if not 0 <= index < MAX_QUESTIONS:
        raise ValueError(f"question index {index} is not one byte")
    return "0x" + (_hash32(market_id, "market id")[:31] + bytes([index])).hex()


def condition_id(adapter: str, question: str) -> str:
    """The CTF condition of a neg-risk question: keccak256(adapter ‖ question ‖ 2)."""
    oracle = bytes.fromhex(adapter.lower().removeprefix("0x"))
    if len(oracle) != 20:
        raise ValueError(f"adapter is not an address: {adapter!r}")
    h = keccak.new(digest_bits=256)
    h.update(oracle + _hash32(question, "question id") + (2).to_bytes(32, "big"))
    return "0x" + h.hexdigest()


def indices(index_set: int) -> list[int]:
    """The question indices an index set names (bit i = question i)."""
    return [i for i in range(index_set.bit_length()) if index_set >> i & 1]


@dataclass(frozen=True, slots=True)
class Question:
    """One question of a neg-risk market: its condition and its YES / NO assets."""

    index: int
    condition_id: str
    yes_asset: str
    no_asset: str


@dataclass(frozen=True, slots=True)
class Market:
    """A neg-risk market as far as Gamma lists it: `question_count` is the number of
    questions 0 … n−1 found without a gap (None when a gap leaves it unknown)."""

    market_id: str
    question_count: int | None
    fee_bips: int | None
    questions: Mapping[int, Question]


Leg = tuple[str, str]  # (condition, asset)


def conversion_legs(market: Market, index_set: int) -> tuple[list[Leg], list[Leg]] | str:
    """Returns (NO legs given, YES legs received) of a conversion of `index_set` in
    `market`, or why they cannot be told (the market not fully known, or an index set
    the adapter would have refused)."""
    count = market.question_count
    if count is None:
        return f"the questions of neg-risk market {market.market_id} are not all known"
    if index_set <= 0 or index_set >> count:
        return f"index set {index_set:#x} is not within the market's {count} questions"
    missing = [i for i in range(count) if i not in market.questions]
    if missing:
        return f"questions {missing[:10]} of neg-risk market {market.market_id} are unknown"
    given = set(indices(index_set))
    qs = [market.questions[i] for i in range(count)]
    no_legs = [(q.condition_id, q.no_asset) for q in qs if q.index in given]
    yes_legs = [(q.condition_id, q.yes_asset) for q in qs if q.index not in given]
    return no_legs, yes_legs


def question_count(found: set[int]) -> int | None:
    """The number of questions given the indices found: 0 … n−1 with no gap, or None
    when one is missing below the highest found."""
    n = max(found) + 1 if found else 0
    return n if len(found) == n else None
