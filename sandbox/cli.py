"""`python -m sandbox generate|serve|truth`: write, serve or explain a scenario."""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from sandbox import faults, scenario, truth
from sandbox.clock import Clock

RTDS_KNOBS = (
    "rtds_drop_rate",
    "rtds_duplicate_rate",
    "rtds_phantom_rate",
    "rtds_malformed_rate",
    "rtds_silent",
    "rtds_delay_ms",
)


def _scenario_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=7, help="scenario seed (default 7)")
    parser.add_argument("--scenario", help="serve/replay this scenario file instead")
    parser.add_argument("--leaders", type=int, help="followed leaders (default 3)")
    parser.add_argument("--markets", type=int, help="markets (default 8)")
    parser.add_argument("--duration", type=scenario.parse_duration, help="after t=0 (6h)")
    parser.add_argument("--history", type=scenario.parse_duration, help="before t=0 (30m)")
    parser.add_argument("--reorg-rate", type=float, help="share of marked fills (default 0)")
    parser.add_argument(
        "--copiers", type=int, help="copy wallets of the first leader, trading after it (0)"
    )


def _load(args: argparse.Namespace) -> dict[str, Any]:
    if args.scenario:
        return scenario.load(args.scenario)
    return scenario.generate(
        args.seed,
        leaders=args.leaders,
        markets=args.markets,
        duration_ms=args.duration,
        history_ms=args.history,
        reorg_rate=args.reorg_rate,
        copiers=args.copiers or None,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write a scenario file")
    _scenario_options(gen)
    gen.add_argument("--out", required=True, help="output path ('-' for stdout)")
    srv = sub.add_parser("serve", help="serve a scenario on 127.0.0.1")
    _scenario_options(srv)
    srv.add_argument("--port", type=int, default=8090, help="0 picks a free port (8090)")
    srv.add_argument("--speed", type=float, default=1.0, help="clock speed in real mode")
    srv.add_argument("--clock", choices=("real", "manual"), default="real")
    srv.add_argument("--anchor-ms", type=int, help="absolute ms of t=0 (default: now)")
    knobs = faults.Knobs()
    srv.add_argument("--api-lag", type=float, default=knobs.api_lag_s, help="Data API lag (s)")
    srv.add_argument("--chain-delay", type=float, default=knobs.chain_delay_s, help="log delay (s)")
    for name in (
        "rate_429",
        "rate_5xx",
        "slow_rate",
        "slow_ms",
        "ws_drop_every_s",
        "malformed_rate",
        "market_ws_drop_after",
        "market_ws_corrupt_rate",
        "market_ws_delay_ms",
        *RTDS_KNOBS,
    ):
        default = getattr(knobs, name)
        flag = "--" + name.replace("_", "-")
        srv.add_argument(flag, type=type(default), default=default, help=f"fault knob ({default})")
    tru = sub.add_parser("truth", help="print the ground truth as JSON")
    _scenario_options(tru)
    tru.add_argument("--anchor-ms", type=int, default=0, help="absolute ms of t=0 (default 0)")
    tru.add_argument("--until-ms", type=int, help="absolute ms; default: everything")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    data = _load(args)
    if args.command == "generate":
        text = scenario.dumps(data)
        if args.out == "-":
            sys.stdout.write(text)
        else:
            Path(args.out).write_text(text)
        return 0
    if args.command == "truth":
        from sandbox import records

        recs = records.build(data)
        wallets = sorted(leader["wallet"] for leader in data["leaders"])
        json.dump(truth.build(recs, wallets, args.anchor_ms, args.until_ms), sys.stdout)
        sys.stdout.write("\n")
        return 0
    return _serve(args, data)


def _serve(args: argparse.Namespace, data: dict[str, Any]) -> int:
    from sandbox import server
    from sandbox.world import World

    anchor = args.anchor_ms if args.anchor_ms is not None else int(time.time()) * 1000
    knobs = faults.Knobs()
    changes = {
        "api_lag_s": args.api_lag,
        "chain_delay_s": args.chain_delay,
        **{n: getattr(args, n) for n in ("rate_429", "rate_5xx", "slow_rate", "slow_ms")},
        **{n: getattr(args, n) for n in ("ws_drop_every_s", "malformed_rate")},
        **{n: getattr(args, n) for n in ("market_ws_drop_after", "market_ws_corrupt_rate")},
        "market_ws_delay_ms": args.market_ws_delay_ms,
        **{n: getattr(args, n) for n in RTDS_KNOBS},
    }
    try:
        knobs.update(changes)
        clock = Clock(anchor, args.clock, args.speed)
    except ValueError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2
    sandbox = server.Sandbox(World(data, anchor), clock, knobs)
    return server.serve(sandbox, args.port)
