"""Simulates each followed leader's actions: fills, bursts, splits, merges, conversions
and redemptions, never selling or merging more than the leader holds."""

import math
from collections import defaultdict
from typing import Any

from sandbox import books, fills, rand

MICRO = 1_000_000
STYLES = {
    # mean gap between actions (s), P(taker), P(burst), P(split), P(merge)
    "taker": (70, 0.85, 0.35, 0.03, 0.03),
    "maker": (110, 0.15, 0.2, 0.03, 0.03),
    "mixed": (90, 0.5, 0.25, 0.06, 0.06),
}
_NAMES = ["Quiet-Heron", "Amber-Falcon", "Sly-Otter", "Brisk-Lynx", "Pale-Marten", "Red-Kite"]


def make_leaders(seed: int, count: int) -> list[dict[str, Any]]:
    r = rand.rng(seed, "leaders")
    styles = list(STYLES)
    out = []
    for i in range(count):
        pseudonym = _NAMES[i % len(_NAMES)] + ("" if i < len(_NAMES) else f"-{i}")
        out.append(
            {
                "wallet": rand.address(r),
                "name": f"leader{i + 1}",
                "pseudonym": pseudonym,
                "bio": f"sandbox leader, {styles[i % 3]} style",
                "profile_image": f"https://example.invalid/avatars/{pseudonym.lower()}.png",
                "style": styles[i % 3],
            }
        )
    return out


class _Leader:
    def __init__(self, seed: int, leader: dict[str, Any], markets: list, pool: list[str]):
        self.r = rand.rng(seed, "leader", leader["wallet"])
        self.wallet = leader["wallet"]
        self.style = STYLES[leader["style"]]
        self.markets = markets
        self.pool = pool
        self.hold: dict[tuple[int, int], int] = defaultdict(int)
        self.favourites = self.r.sample(range(len(markets)), k=min(4, len(markets)))
        self.txs: list[dict[str, Any]] = []

    def open_markets(self, t_ms: int) -> list[dict[str, Any]]:
        return [m for m in self.markets if t_ms < m["end_ms"] - 120_000]

    def emit(self, tx: dict[str, Any], t_ms: int) -> None:
        tx.update(t_ms=t_ms, hash=rand.hex_bytes(self.r, 32), wallet=self.wallet, reorg=None)
        self.txs.append(tx)

    def apply_match(self, tx: dict[str, Any]) -> None:
        key = (tx["market"], tx["outcome"])
        for order in [tx["taker"], *tx["makers"]]:
            if order["wallet"] == self.wallet:
                sign = 1 if order["side"] == "BUY" else -1
                self.hold[key] += sign * order["shares"]

    def trade(self, t_ms: int, reorg_rate: float) -> int:
        r = self.r
        mean_gap, p_taker, p_burst, _, _ = self.style
        held = [k for k, v in self.hold.items() if v >= MICRO and self.is_open(k[0], t_ms)]
        if held and r.random() < 0.45:
            key = r.choice(held)
            side, total = "SELL", max(MICRO, int(self.hold[key] * r.uniform(0.3, 1.0)))
        else:
            choices = [m for m in self.open_markets(t_ms) if m["index"] in self.favourites]
            market = r.choice(choices or self.open_markets(t_ms))
            key = (market["index"], r.randint(0, 1))
            side, total = "BUY", int(math.exp(r.uniform(math.log(5), math.log(5000))) * MICRO)
        market = self.markets[key[0]]
        count = r.randint(2, 5) if r.random() < p_burst else 1
        taker = r.random() < p_taker
        for i in range(count):
            at = t_ms + i * r.randint(150, 450)
            part = total // count if i < count - 1 else total - total // count * (count - 1)
            if side == "SELL":
                part = min(part, self.hold[key])
            if part < fills.CENT_SHARE:
                break
            if taker:
                tx = fills.taker_match(r, market, key[1], side, at, self.wallet, part, self.pool)
            else:
                shares = part if side == "SELL" else part * MICRO // _touch(market, key[1], at)
                shares = max(fills.CENT_SHARE, shares // fills.CENT_SHARE * fills.CENT_SHARE)
                twin = side == "BUY" and r.random() < 0.05
                tx = fills.maker_match(
                    r, market, key[1], side, at, self.wallet, shares, self.pool, twin
                )
            if tx is None:
                continue
            self.emit(tx, at)
            if count == 1 and side == "BUY" and r.random() < reorg_rate:
                tx["reorg"] = {
                    "removed_ms": at + r.randint(1000, 3000),
                    "reinclude": r.random() < 0.5,
                }
                if not tx["reorg"]["reinclude"]:
                    continue
            self.apply_match(tx)
        return t_ms + count * 450 + int(r.expovariate(1 / mean_gap) * 1000) + 3000

    def is_open(self, index: int, t_ms: int) -> bool:
        return t_ms < self.markets[index]["end_ms"] - 120_000

    def split(self, t_ms: int) -> None:
        market = self.r.choice(self.open_markets(t_ms))
        amount = self.r.randint(10, 2000) * MICRO
        self.hold[(market["index"], 0)] += amount
        self.hold[(market["index"], 1)] += amount
        self.emit({"kind": "split", "market": market["index"], "amount": amount}, t_ms)

    def merge(self, t_ms: int) -> None:
        both = [
            m["index"]
            for m in self.open_markets(t_ms)
            if min(self.hold[(m["index"], 0)], self.hold[(m["index"], 1)]) >= MICRO
        ]
        if not both:
            return
        index = self.r.choice(both)
        most = min(self.hold[(index, 0)], self.hold[(index, 1)])
        amount = max(MICRO, int(most * self.r.uniform(0.2, 1.0)) // MICRO * MICRO)
        self.hold[(index, 0)] -= amount
        self.hold[(index, 1)] -= amount
        self.emit({"kind": "merge", "market": index, "amount": amount}, t_ms)

    def convert(self, t_ms: int) -> None:
        open_now = {m["index"] for m in self.open_markets(t_ms)}
        for m in self.markets:
            group = [g["index"] for g in self.markets if g["neg_risk"] and g["index"] != m["index"]]
            if (
                not m["neg_risk"]
                or self.hold[(m["index"], 1)] < MICRO
                or m["index"] not in open_now
            ):
                continue
            if not group or not set(group) <= open_now:
                continue
            amount = self.hold[(m["index"], 1)] // 2 // MICRO * MICRO or MICRO
            self.hold[(m["index"], 1)] -= amount
            for other in group:
                self.hold[(other, 0)] += amount
            tx = {"kind": "conversion", "market": m["index"], "amount": amount, "targets": group}
            self.emit(tx, t_ms)
            return

    def redeem(self, index: int, t_ms: int) -> None:
        shares = [self.hold[(index, 0)], self.hold[(index, 1)]]
        if not any(shares):
            return
        payout = shares[self.markets[index]["winner"]]
        self.hold[(index, 0)] = self.hold[(index, 1)] = 0
        tx = {"kind": "redeem", "market": index, "shares": shares, "payout": payout}
        self.emit(tx, t_ms)


def _touch(market: dict[str, Any], outcome: int, t_ms: int) -> int:
    bids, _ = books.book(market, outcome, t_ms)
    return bids[0][0]


def simulate(seed: int, leader: dict, markets: list, pool: list[str], params: dict) -> list:
    """Returns the leader's transactions (without block placement), in time order."""
    sim = _Leader(seed, leader, markets, pool)
    r = sim.r
    _, _, _, p_split, p_merge = sim.style
    redeems = sorted((m["resolve_ms"] + r.randint(60, 1200) * 1000, m["index"]) for m in markets)
    t = -params["history_ms"] + r.randint(1000, 20_000)
    while t < params["duration_ms"]:
        while redeems and redeems[0][0] <= t:
            at, index = redeems.pop(0)
            sim.redeem(index, at)
        if not sim.open_markets(t):
            t += 60_000
            continue
        roll = r.random()
        if roll < p_split:
            sim.split(t)
        elif roll < p_split + p_merge:
            sim.merge(t)
        elif roll < p_split + p_merge + 0.02:
            sim.convert(t)
        else:
            t = sim.trade(t, params["reorg_rate"])
            continue
        t += int(r.expovariate(1 / sim.style[0]) * 1000) + 3000
    for at, index in redeems:
        if at < params["duration_ms"]:
            sim.redeem(index, at)
    return sim.txs


# -- copiers: the admin's own copy wallet of a leader (SPEC §10's real copies) -----------


def make_copiers(seed: int, count: int, leaders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copy wallets of the first leader, each with its own delay and size (a stream of
    their own: the leaders' wallets and trades are the same with or without copiers)."""
    r = rand.rng(seed, "copiers")
    out = []
    for i in range(count):
        out.append(
            {
                "wallet": rand.address(r),
                "name": f"copier{i + 1}",
                "pseudonym": f"Copy-Cat-{i + 1}",
                "bio": f"sandbox copier of {leaders[0]['name']}",
                "profile_image": "https://example.invalid/avatars/copy-cat.png",
                "style": "taker",
                "copier_of": leaders[0]["wallet"],
                "delay_ms": (3_000 + 2_000 * i, 9_000 + 3_000 * i),  # after the leader's fill
                "scale_pct": 10,  # of the leader's collateral (BUY) or own shares (SELL)
            }
        )
    return out


def _side_of(tx: dict[str, Any], wallet: str) -> str | None:
    for order in [tx["taker"], *tx["makers"]]:
        if order["wallet"] == wallet:
            return str(order["side"])
    return None


def copy_trades(
    seed: int, copier: dict, leader_txs: list, markets: list, pool: list[str], params: dict
) -> list:
    """The copier's transactions: a taker order after most of its leader's fills (its
    own delay, walking the book then: its own slippage), a few trades of its own (which
    pair with nothing), and its redemptions."""
    sim = _Leader(seed, copier, markets, pool)
    r = sim.r
    lo, hi = copier["delay_ms"]
    leader = copier["copier_of"]
    for tx in leader_txs:
        side = _side_of(tx, leader) if tx["kind"] == "match" else None
        if side is None or (tx["reorg"] and not tx["reorg"]["reinclude"]) or r.random() < 0.15:
            continue
        at = tx["t_ms"] + r.randint(lo, hi)
        key = (tx["market"], tx["outcome"])
        market = markets[key[0]]
        if not sim.is_open(key[0], at):
            continue
        if side == "BUY":
            theirs = sum(
                o["collateral"] for o in [tx["taker"], *tx["makers"]] if o["wallet"] == leader
            )
            want = max(MICRO, theirs * copier["scale_pct"] // 100)
        else:
            want = min(sim.hold[key], max(fills.CENT_SHARE, sim.hold[key] // 2))
            want = want // fills.CENT_SHARE * fills.CENT_SHARE
            if want < fills.CENT_SHARE:
                continue
        copy = fills.taker_match(r, market, key[1], side, at, sim.wallet, want, pool)
        if copy is None:
            continue
        sim.emit(copy, at)
        sim.apply_match(copy)
        if r.random() < 0.05:  # now and then a trade of its own, after no one
            own_at = at + r.randint(60_000, 120_000)
            others = [m for m in sim.open_markets(own_at) if m["index"] != key[0]]
            if others:
                m = r.choice(others)
                own = fills.taker_match(r, m, 0, "BUY", own_at, sim.wallet, 5 * MICRO, pool)
                if own is not None:
                    sim.emit(own, own_at)
                    sim.apply_match(own)
    for m in markets:
        at = m["resolve_ms"] + r.randint(60, 1200) * 1000
        if at < params["duration_ms"]:
            sim.redeem(m["index"], at)
    sim.txs.sort(key=lambda tx: tx["t_ms"])
    return sim.txs
