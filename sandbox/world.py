"""The served world: a scenario pinned to an anchor time, with in-memory indexes."""

import bisect
from collections import defaultdict
from typing import Any

from sandbox import books, chain, money, positions, records, wire


class World:
    """Immutable indexes over one scenario; every query takes `now_ms` (absolute)."""

    def __init__(self, scenario: dict[str, Any], anchor_ms: int):
        self.scenario = scenario
        self.seed = scenario["seed"]
        self.anchor = anchor_ms
        self.base_block = scenario["base_block"]
        self.markets = scenario["markets"]
        self.leaders = {leader["wallet"]: leader for leader in scenario["leaders"]}
        self.by_token = {tok: (m, i) for m in self.markets for i, tok in enumerate(m["tokens"])}
        self.by_condition = {m["condition_id"]: m for m in self.markets}
        self.by_id = {m["id"]: m for m in self.markets}
        self.records = records.build(scenario)
        self._index_wallets()
        self._index_last_trades()
        self._index_logs()

    # -- indexes -------------------------------------------------------------------------
    def _index_wallets(self) -> None:
        self.wallet_records: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.trade_rows: dict[str, list[tuple[int, dict, dict]]] = defaultdict(list)
        self.activity_rows: dict[str, list[tuple[int, dict, dict]]] = defaultdict(list)
        for rec in self.records:
            wallet, market = rec["wallet"], self.markets[rec["market"]]
            leader, t_abs = self.leaders[wallet], self.anchor + rec["t_ms"]
            self.wallet_records[wallet].append(rec)
            if rec["type"] == "TRADE":
                row = wire.trade_row(rec, market, leader, self.anchor)
                self.trade_rows[wallet].append((t_abs, rec, row))
            row = wire.activity_row(rec, market, leader, self.anchor)
            self.activity_rows[wallet].append((t_abs, rec, row))
        self.trade_times = {w: [t for t, _, _ in rows] for w, rows in self.trade_rows.items()}
        self.activity_times = {w: [t for t, _, _ in rows] for w, rows in self.activity_rows.items()}
        self.record_times = {
            w: [self.anchor + r["t_ms"] for r in recs] for w, recs in self.wallet_records.items()
        }
        self._positions_cache: dict[tuple[str, int], dict[str, dict]] = {}

    def _index_last_trades(self) -> None:
        last: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
        prints: dict[str, list[tuple[int, int, dict[str, Any]]]] = defaultdict(list)
        for tx in self.scenario["txs"]:
            slot = records.canonical_slot(tx)
            if tx["kind"] != "match" or slot is None:
                continue
            market = self.markets[tx["market"]]
            asset = market["tokens"][tx["outcome"]]
            price, side = tx["makers"][-1]["price_micros"], tx["taker"]["side"]
            last[asset].append((slot["t_ms"], price, side))
            trade = {
                "price": price,
                "side": side,
                "shares": tx["taker"]["shares"],
                "fee_rate_bps": market["fee_rate_bps"],
                "tx_hash": tx["hash"],
            }
            prints[asset].append((slot["t_ms"], len(prints[asset]), trade))
        self.last_trades = {a: sorted(v) for a, v in last.items()}
        self.last_trade_times = {a: [t for t, _, _ in v] for a, v in self.last_trades.items()}
        self.trade_prints = {a: sorted(v, key=lambda p: p[:2]) for a, v in prints.items()}
        self.trade_print_times = {a: [t for t, _, _ in v] for a, v in self.trade_prints.items()}

    def _index_logs(self) -> None:
        """Deliveries: (offset_ms, seq, log) in order, removals included. Versions: logs of
        each inclusion with the offsets between which they are canonical."""
        self.deliveries: list[tuple[int, int, dict[str, Any]]] = []
        self.versions: dict[int, list[tuple[int, int, dict[str, Any]]]] = defaultdict(list)
        never = 1 << 62
        for tx in self.scenario["txs"]:
            if tx["kind"] == "conversion":
                raws = [chain.conversion_log(tx, self.markets)]
            elif tx["kind"] == "match":
                raws = chain.match_logs(tx, self.markets[tx["market"]])
            else:  # SPLIT / MERGE / REDEEM: the Data API's to tell (CTF logs not served)
                continue
            reorg = tx["reorg"]
            slots = [(tx, reorg["removed_ms"] if reorg else never)]
            if reorg and reorg["reinclude"]:
                slots.append((reorg["reinclude"], never))
            for slot, until in slots:
                for offset, raw in enumerate(raws):
                    log = chain.render(raw, slot, offset, tx["hash"], self.seed, self.anchor)
                    self.deliveries.append((slot["t_ms"], len(self.deliveries), log))
                    self.versions[slot["block"]].append((slot["t_ms"], until, log))
                    if until != never:
                        gone = {**log, "removed": True}
                        self.deliveries.append((until, len(self.deliveries), gone))
        self.deliveries.sort(key=lambda d: (d[0], d[1]))
        self.delivery_times = [d[0] for d in self.deliveries]
        self.blocks = sorted(self.versions)

    # -- market state --------------------------------------------------------------------
    def market_state(self, market: dict[str, Any], now_ms: int) -> str:
        """Returns "open", "closed" (awaiting resolution) or "resolved"."""
        if now_ms >= self.anchor + market["resolve_ms"]:
            return "resolved"
        return "closed" if now_ms >= self.anchor + market["end_ms"] else "open"

    def book(self, token: str, now_ms: int) -> tuple[dict[str, Any], int, Any] | None:
        """Returns (market, outcome, (bids, asks) best first) or None when no book exists."""
        found = self.by_token.get(token)
        if not found or self.market_state(found[0], now_ms) != "open":
            return None
        market, outcome = found
        return market, outcome, books.book(market, outcome, now_ms - self.anchor)

    def last_trade(self, token: str, now_ms: int) -> tuple[int, str] | None:
        times = self.last_trade_times.get(token)
        if not times:
            return None
        i = bisect.bisect_right(times, now_ms - self.anchor)
        return self.last_trades[token][i - 1][1:] if i else None

    def trades_between(self, token: str, after_ms: int, upto_ms: int) -> list[dict[str, Any]]:
        """Returns the asset's matches (canonical ones, as `last_trade` sees them) whose time
        is in (after_ms, upto_ms], oldest first, each with its absolute `t_ms`."""
        times = self.trade_print_times.get(token)
        if not times or upto_ms <= after_ms:
            return []
        lo = bisect.bisect_right(times, after_ms - self.anchor)
        hi = bisect.bisect_right(times, upto_ms - self.anchor)
        return [
            {**trade, "t_ms": self.anchor + t} for t, _, trade in self.trade_prints[token][lo:hi]
        ]

    def mark(self, market: dict[str, Any], outcome: int, now_ms: int) -> int:
        """Returns the current price of an outcome: payout, frozen mid, or live mid."""
        state = self.market_state(market, now_ms)
        if state == "resolved":
            return money.MICRO if market["winner"] == outcome else 0
        at = min(now_ms - self.anchor, market["end_ms"] - 1)
        return books.mid_micros(market, outcome, at)

    def outcome_prices(self, market: dict[str, Any], now_ms: int) -> list[str]:
        yes = self.mark(market, 0, now_ms)
        return [money.text(yes), money.text(money.MICRO - yes)]

    # -- wallets -------------------------------------------------------------------------
    def visible_count(self, times: list[int], now_ms: int, lag_ms: int) -> int:
        return bisect.bisect_right(times, now_ms - lag_ms)

    def positions(self, wallet: str, now_ms: int, lag_ms: int) -> list[dict[str, Any]]:
        """Returns /positions rows (size > 0) from the records visible at now."""
        recs = self.wallet_records.get(wallet, [])
        count = self.visible_count(self.record_times.get(wallet, []), now_ms, lag_ms)
        key = (wallet, count)
        held = self._positions_cache.get(key)
        if held is None:
            held = positions.replay(recs[:count], lambda a: self._payout(a))
            self._positions_cache[key] = held
        rows = []
        for asset, pos in held.items():
            if pos["size"] <= 0:
                continue
            market, outcome = self.by_token[asset]
            info = self._position_info(market, outcome, held, now_ms)
            rows.append(positions.row(wallet, asset, pos, info))
        rows.sort(key=lambda r: (-r["currentValue"], r["asset"]))
        return rows

    def _payout(self, asset: str) -> int:
        market, outcome = self.by_token[asset]
        return money.MICRO if market["winner"] == outcome else 0

    def _position_info(self, market, outcome, held, now_ms) -> dict[str, Any]:
        other = market["tokens"][1 - outcome]
        return {
            "condition_id": market["condition_id"],
            "cur_price": self.mark(market, outcome, now_ms),
            "redeemable": self.market_state(market, now_ms) == "resolved",
            "mergeable": held.get(other, {}).get("size", 0) > 0,
            "title": market["question"],
            "slug": market["slug"],
            "icon": f"https://example.invalid/icons/{market['slug']}.png",
            "event_slug": market["event_slug"],
            "outcome": market["outcomes"][outcome],
            "outcome_index": outcome,
            "opposite_outcome": market["outcomes"][1 - outcome],
            "opposite_asset": other,
            "end_ms": self.anchor + market["end_ms"],
            "neg_risk": market["neg_risk"],
        }

    # -- chain ---------------------------------------------------------------------------
    def block_at(self, offset_ms: int) -> int:
        return self.base_block + offset_ms // 2000

    def block_start_ms(self, number: int) -> int:
        """The absolute time (ms) block `number` starts: its header's timestamp."""
        return self.anchor + (number - self.base_block) * 2000

    def block_tx_hashes(self, number: int, offset_now: int) -> list[str]:
        """The hashes of block `number`'s transactions that are canonical at offset_now
        (those with a log here: the rest of Polygon is not simulated)."""
        out: list[str] = []
        for since, until, log in self.versions.get(number, []):
            if since <= offset_now < until and log["transactionHash"] not in out:
                out.append(log["transactionHash"])
        return out

    def canonical_logs(self, first: int, last: int, offset_now: int, flt) -> list[dict]:
        """Returns logs in blocks [first, last] that are canonical at offset_now."""
        out = []
        lo, hi = bisect.bisect_left(self.blocks, first), bisect.bisect_right(self.blocks, last)
        for number in self.blocks[lo:hi]:
            for since, until, log in self.versions[number]:
                if since <= offset_now < until and chain.matches(log, flt):
                    out.append(log)
        out.sort(key=lambda log: (int(log["blockNumber"], 16), int(log["logIndex"], 16)))
        return out
