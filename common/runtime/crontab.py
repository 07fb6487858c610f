"""The job schedule (`crontab` at the top of the checkout; OCULUS_CRONTAB_PATH).

One job per line: six croniter fields with the SECONDS field last
(`min hour dom mon dow sec`), the run's timeout (`30s`, `10m`, `2h`), then the job's
module and its flags:

    *  *  *  *  *  */5   60s   functions.poll --once

`#` starts a comment. A line that does not parse is reported with its number and left
out; the other lines still run. The job's name is its module's last part (`poll`); a job
appears on one line only (its name is its role). Modules are looked up under the
checkout (functions/ in practice; the tests schedule their own).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from croniter import croniter

from common.runtime import settings

_TIMEOUT = re.compile(r"^(\d+(?:\.\d+)?)([smh])$")
_MODULE = re.compile(r"^[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}


@dataclass(frozen=True)
class Entry:
    job: str  # the job's name: what job_run and the lock use ("poll")
    module: str  # "functions.poll"
    argv: tuple[str, ...]  # the flags after the module
    expr: str  # the six cron fields, seconds last
    timeout_s: float
    line: int

    def next_after(self, t: datetime) -> datetime:
        """The first instant after `t` the schedule fires (same timezone as `t`)."""
        nxt: datetime = croniter(self.expr, t).get_next(datetime)
        return nxt

    @property
    def command(self) -> str:
        return " ".join(["python -m", self.module, *map(shlex.quote, self.argv)])


def parse(text: str, root: Path | None = None) -> tuple[list[Entry], list[str]]:
    """Returns the valid entries and one message per rejected line."""
    entries: list[Entry] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    where = root or settings.ROOT
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            entry = _entry(line, number, where)
        except ValueError as exc:
            errors.append(f"line {number}: {exc}: {raw.strip()}")
            continue
        if entry.job in seen:
            errors.append(
                f"line {number}: {entry.job} is already scheduled on line {seen[entry.job]}"
            )
            continue
        seen[entry.job] = number
        entries.append(entry)
    return entries, errors


def load(path: Path | None = None) -> tuple[list[Entry], list[str]]:
    """Reads and parses the crontab file; a missing file is one error, not a crash."""
    path = path or settings.get().crontab_path
    try:
        text = path.read_text()
    except OSError as exc:
        return [], [f"cannot read {path}: {exc.strerror or exc}"]
    return parse(text)


def _entry(line: str, number: int, root: Path) -> Entry:
    try:
        parts = shlex.split(line)
    except ValueError as exc:
        raise ValueError(f"unbalanced quotes ({exc})") from None
    if len(parts) < 8:
        raise ValueError("expected 6 cron fields, a timeout and a job")
    expr, timeout, module, argv = " ".join(parts[:6]), parts[6], parts[7], parts[8:]
    if not croniter.is_valid(expr):
        raise ValueError(f"not a valid schedule {expr!r}")
    match = _TIMEOUT.match(timeout)
    if match is None:
        raise ValueError(f"not a timeout like 30s, 10m or 2h: {timeout!r}")
    timeout_s = float(match.group(1)) * _UNIT_S[match.group(2)]
    if timeout_s <= 0:
        raise ValueError("the timeout must be positive")
    if _MODULE.match(module) is None:
        raise ValueError(f"not a job module like functions.poll: {module!r}")
    if not (root / (module.replace(".", "/") + ".py")).is_file():
        raise ValueError(f"no such job: {module}")
    job = module.rsplit(".", 1)[-1]
    return Entry(job, module, tuple(argv), expr, timeout_s, number)
