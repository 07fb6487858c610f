"""Market catalogue generation: binary and neg-risk markets with realistic ids."""

import random
from typing import Any

from sandbox import keccak, rand

NEG_RISK_ADAPTER = "0xd91e80cf2e7be2e162c6513ced06f1dd0da35296"

MIN = 60_000
HOUR = 3_600_000
DAY = 24 * HOUR
_SUBJECTS = [
    ("Will BTC close above ${n}k on Friday?", "btc-above-{n}k-friday", "bitcoin-weekly"),
    ("Will ETH trade above ${n}00 by the end of the week?", "eth-above-{n}00", "eth-weekly"),
    ("Will the Fed cut rates by {n} bps in the next meeting?", "fed-cut-{n}-bps", "fed-decision"),
    ("Will it rain more than {n} mm in London today?", "london-rain-{n}mm", "london-weather"),
    ("Lakers vs. Celtics: Lakers by more than {n}.5?", "lakers-celtics-spread-{n}", "nba-lal-bos"),
    ("Will SpaceX launch {n} rockets this week?", "spacex-{n}-launches", "spacex-launches"),
    ("Will the S&P 500 be up more than 0.{n}% today?", "spx-up-0-{n}pct", "spx-daily"),
    ("Will Arsenal score {n}+ goals on Saturday?", "arsenal-{n}-goals", "epl-arsenal"),
    ("Will gold close above ${n}00 this month?", "gold-above-{n}00", "gold-monthly"),
    ("Will Solana flip BNB market cap by day {n}?", "sol-flip-bnb-day-{n}", "sol-bnb"),
]
_CANDIDATES = ["Ada Moreno", "Bram Okafor", "Chen Lindqvist", "Dara Novak", "Eli Brandt"]
_FEE_RATES_BPS = [200, 300, 400, 500, 700]


def neg_risk_condition(question_id: str) -> str:
    """The CTF condition id of a neg-risk question (CTHelpers.getConditionId)."""
    data = bytes.fromhex(NEG_RISK_ADAPTER[2:]) + bytes.fromhex(question_id[2:])
    return "0x" + keccak.keccak256(data + (2).to_bytes(32, "big")).hex()


def _book_params(r: random.Random) -> dict[str, Any]:
    return {
        "seed": r.getrandbits(48),
        "x0_milli": r.randint(-1800, 1800),
        "waves": [
            [r.randint(50, 400), r.randint(600, 7_200), r.randint(0, 6283)],
            [r.randint(20, 150), r.randint(60, 600), r.randint(0, 6283)],
            [r.randint(5, 40), r.randint(7, 50), r.randint(0, 6283)],
        ],
    }


def _market(r: random.Random, index: int, end_ms: int) -> dict[str, Any]:
    fee_bps = r.choice(_FEE_RATES_BPS) if r.random() < 0.4 else 0
    tick = 1_000 if r.random() < 0.25 else 10_000
    return {
        "id": str(r.randint(500_000, 1_600_000)),
        "condition_id": rand.hex_bytes(r, 32),
        "question_id": rand.hex_bytes(r, 32),
        "tokens": [rand.token_id(r), rand.token_id(r)],
        "outcomes": ["Yes", "No"],
        "neg_risk": False,
        "neg_risk_market_id": "",
        "tick_micros": tick,
        "min_size": 5,
        "fee_rate_bps": fee_bps,
        "end_ms": end_ms,
        "resolve_ms": end_ms + r.randint(5, 15) * MIN,
        "winner": r.randint(0, 1),
        "book": _book_params(r),
        "index": index,
    }


def _label(market: dict[str, Any], r: random.Random, index: int) -> None:
    question, slug, event = _SUBJECTS[index % len(_SUBJECTS)]
    n = r.randint(2, 9)
    market["question"] = question.format(n=n)
    market["slug"] = f"{slug.format(n=n)}-{r.randint(100, 999)}"
    market["event_slug"] = event
    market["event_title"] = event.replace("-", " ").title()


def generate(seed: int, count: int, duration_ms: int) -> list[dict[str, Any]]:
    """Returns `count` markets; end dates spread out, one closing in the first hour."""
    r = rand.rng(seed, "markets")
    count = max(2, count)
    ends = [r.randint(20, 50) * MIN]
    ends.append(max(ends[0] + HOUR, duration_ms // 2))
    for i in range(2, count):
        if i % 3 == 2:
            ends.append(
                r.randint(duration_ms * 3 // 4, duration_ms - MIN)
                if duration_ms > HOUR * 2
                else duration_ms + r.randint(1, 30) * DAY
            )
        else:
            ends.append(duration_ms + r.randint(1, 60) * DAY + r.randint(0, 23) * HOUR)
    markets = [_market(r, i, end) for i, end in enumerate(ends)]
    seen: set[str] = set()
    for market in markets:
        while market["id"] in seen:
            market["id"] = str(int(market["id"]) + 1)
        seen.add(market["id"])
    group = [m for m in markets[3:] if m["end_ms"] > duration_ms][:3] if count >= 6 else []
    if len(group) >= 2:
        neg_id = rand.hex_bytes(r, 32)
        group_end = max(m["end_ms"] for m in group)
        winner = r.randrange(len(group))
        for pos, market in enumerate(group):
            market.update(neg_risk=True, neg_risk_market_id=neg_id, end_ms=group_end)
            # The adapter's ids: question = market id with its last byte = the index;
            # condition = keccak256(adapter, question, 2) (the adapter is the oracle).
            market["question_index"] = pos
            market["question_id"] = neg_id[:-2] + f"{pos:02x}"
            market["condition_id"] = neg_risk_condition(market["question_id"])
            market["resolve_ms"] = group_end + 10 * MIN
            market["winner"] = 0 if pos == winner else 1
    for i, market in enumerate(markets):
        if market["neg_risk"]:
            name = _CANDIDATES[group.index(market) % len(_CANDIDATES)]
            market["question"] = f"Will {name} win the 2028 Mayoral race?"
            market["slug"] = f"will-{name.lower().replace(' ', '-')}-win-the-2028-mayoral-race"
            market["event_slug"] = "mayoral-race-2028"
            market["event_title"] = "Mayoral Race 2028"
        else:
            _label(market, r, i)
    return markets
