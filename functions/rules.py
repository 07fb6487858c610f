"""Rules (every minute): evaluates rules.yaml (OCULUS_RULES_PATH, SPEC §11) — threshold
rules on the newest metrics, SQL rules whose schedule came due — moves each alert
through PENDING → FIRING → RESOLVED, runs automations, and queues notifications in the
outbox for functions.notify (woken at once).

The file is read again on every run (hot reload). A bad rule or channel is reported
with its line (the run's log, the Alerts page) and left out while the others run; a
file that cannot be read at all keeps the last good rule set of this process running.

Run by hand: python -m functions.rules --once
Check a file: python -m functions.rules --check [path]   (exit 1 when it has errors)"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from common.domain import rules
from common.runtime import jobs, messages, settings
from common.store import alerts, db, metrics

log = logging.getLogger(__name__)
MAX_BYTES = 1_000_000  # a rules.yaml larger than this is refused


@dataclass(frozen=True)
class Loaded:
    ruleset: rules.RuleSet
    errors: tuple[str, ...]  # every problem, with its line (the rules still run)


_last_good: dict[Path, rules.RuleSet] = {}
_lock = threading.Lock()


def check(path: Path) -> Loaded:
    """Reads and checks rules.yaml: its rules and channels, and every message template."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise OSError(f"larger than {MAX_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        err = rules.RuleError(0, f"cannot read {path}: {exc}")
        return Loaded(rules.RuleSet(rules.EMPTY.channels, (), (err,), True), (str(err),))
    ruleset = rules.parse(text, metrics.BY_NAME)
    errors = [str(e) for e in ruleset.errors]
    for r in ruleset.rules:
        problem = messages.check(r.message)
        if problem:
            errors.append(f"line {r.line}: rule {r.name!r}: {problem} (sent with raw values)")
    return Loaded(ruleset, tuple(errors))


def load(path: Path) -> Loaded:
    """`check`, but a file that cannot be used at all falls back on the last good set."""
    loaded = check(path)
    with _lock:
        if not loaded.ruleset.broken:
            _last_good[path] = loaded.ruleset
            return loaded
        kept = _last_good.get(path)
    if kept is None:
        return loaded
    note = f"running the last good rule set ({len(kept.rules)} rules) until it is fixed"
    errors = (*loaded.errors, note)
    return Loaded(rules.RuleSet(kept.channels, kept.rules, loaded.ruleset.errors, True), errors)


def run_once(conn: db.Conn, ctx: jobs.Context) -> int:
    now = ctx.clock()
    loaded = load(ctx.settings.rules_path)
    for e in loaded.errors:
        log.error("%s: %s", ctx.settings.rules_path, e)
    evaluator = alerts.Evaluator(conn, loaded.ruleset, now)
    out = evaluator.run(alerts.series(conn, now))
    for e in out.errors:
        log.warning("%s", e)
    if out.queued:
        jobs.wake(conn, "notify")
    ctx.count("rules", len(loaded.ruleset.rules))
    ctx.count("file_errors", len(loaded.errors))
    ctx.count("rule_errors", len(out.errors))
    ctx.count("transitions", out.transitions)
    ctx.count("queued", out.queued)
    return out.transitions


def main(argv: list[str] | None = None) -> int:
    p = jobs.parser("rules", __doc__ or "")
    p.add_argument(
        "--check",
        nargs="?",
        const="",
        metavar="PATH",
        help="check the rules file (default: OCULUS_RULES_PATH) and exit: 0 if it is "
        "sound, 1 with each error and its line",
    )
    args = p.parse_args(argv)
    if args.check is not None:
        path = Path(args.check) if args.check else settings.get().rules_path
        loaded = check(path)
        for e in loaded.errors:
            print(f"{path}: {e}", file=sys.stderr)
        rs = loaded.ruleset
        from common.upstream import channels  # the senders' own checks (env vars set?)

        for ch in rs.channels.values():
            if ch.problem is None:
                for problem in channels.problems(ch):
                    print(f"{path}: line {ch.line}: warning: {problem} (in this "
                          f"environment)", file=sys.stderr)  # fmt: skip
        print(f"{path}: {len(rs.rules)} rules, {len(rs.channels)} channels, "
              f"{len(loaded.errors)} errors")  # fmt: skip
        return 1 if loaded.errors else 0
    return jobs.main("rules", args, run_once)


if __name__ == "__main__":
    sys.exit(main())
