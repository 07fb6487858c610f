"""Seeded, deterministic scenario: markets, leaders and every transaction, with block
placement. Same seed and options give a byte-identical file."""

import json
import re
from pathlib import Path
from typing import Any

from sandbox import leaders, markets, rand

FORMAT = "oculus-sandbox-scenario/1"
BLOCK_MS = 2_000
DEFAULTS = {
    "leaders": 3,
    "markets": 8,
    "duration_ms": 6 * 3_600_000,
    "history_ms": 30 * 60_000,
    "reorg_rate": 0.0,
}


def parse_duration(text: str) -> int:
    """Returns milliseconds for "6h", "30m", "45s", "1500ms" or a bare number of seconds."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", text)
    if not found:
        raise ValueError(f"bad duration: {text!r}")
    scale = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    return round(float(found.group(1)) * scale[found.group(2) or "s"])


def _log_count(tx: dict[str, Any]) -> int:
    return len(tx["makers"]) + 2 if tx["kind"] == "match" else 1


def _place_blocks(seed: int, txs: list[dict[str, Any]], base_block: int) -> None:
    """Gives each inclusion a block, a transaction index and its first log index."""
    inclusions: list[tuple[int, int, dict[str, Any]]] = []
    for seq, tx in enumerate(txs):
        inclusions.append((tx["t_ms"], seq, tx))
        reorg = tx["reorg"]
        if reorg and reorg["reinclude"]:
            r = rand.rng(seed, "reinclude", tx["hash"])
            again = {"t_ms": reorg["removed_ms"] + r.randint(1000, 4000)}
            reorg["reinclude"] = again
            inclusions.append((again["t_ms"], seq, again))
    inclusions.sort(key=lambda item: (item[0], item[1]))
    block, tx_index, log_index = None, 0, 0
    for t_ms, seq, slot in inclusions:
        number = base_block + t_ms // BLOCK_MS
        if number != block:
            r = rand.rng(seed, "block", number)
            block, tx_index, log_index = number, r.randint(0, 40), r.randint(0, 150)
        slot.update(block=number, tx_index=tx_index, log_index=log_index)
        r = rand.rng(seed, "gap", number, tx_index)
        tx_index += r.randint(1, 6)
        log_index += _log_count(txs[seq]) + r.randint(0, 12)


def generate(seed: int, **options: Any) -> dict[str, Any]:
    """Returns the scenario for a seed; options override DEFAULTS."""
    params = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    catalogue = markets.generate(seed, params["markets"], params["duration_ms"])
    people = leaders.make_leaders(seed, params["leaders"])
    pool_rng = rand.rng(seed, "pool")
    pool = [rand.address(pool_rng) for _ in range(300)]
    txs: list[dict[str, Any]] = []
    for leader in people:
        txs.extend(leaders.simulate(seed, leader, catalogue, pool, params))
    if params.get("copiers"):  # only when asked: a scenario without is byte-identical
        copiers = leaders.make_copiers(seed, params["copiers"], people)
        first = [tx for tx in txs if tx.get("wallet") == people[0]["wallet"]]
        for copier in copiers:
            txs.extend(leaders.copy_trades(seed, copier, first, catalogue, pool, params))
        people = people + copiers
    txs.sort(key=lambda tx: (tx["t_ms"], tx["hash"]))
    base_block = 76_000_000 + rand.derive(seed, "base") % 1_000_000
    _place_blocks(seed, txs, base_block)
    return {
        "format": FORMAT,
        "seed": seed,
        "params": params,
        "base_block": base_block,
        "markets": catalogue,
        "leaders": people,
        "txs": txs,
    }


def dumps(scenario: dict[str, Any]) -> str:
    """Returns the canonical text of a scenario (sorted keys, one line per transaction)."""
    head = {k: v for k, v in scenario.items() if k != "txs"}
    body = ",\n".join(
        json.dumps(tx, sort_keys=True, separators=(",", ":")) for tx in scenario["txs"]
    )
    text = json.dumps(head, sort_keys=True, indent=1)
    return text[:-2] + ',\n "txs": [\n' + body + "\n ]\n}\n"


def load(path: str | Path) -> dict[str, Any]:
    """Returns a scenario read from a file written by `dumps`."""
    scenario = json.loads(Path(path).read_text())
    if scenario.get("format") != FORMAT:
        raise ValueError(f"{path}: not a sandbox scenario ({FORMAT})")
    return scenario
