"""rules.yaml (SPEC §11): channels, threshold rules and SQL rules, parsed and checked
with each error's line, and the alert lifecycle's pure step. Pure: the rules job
(functions/rules.py) reads the file, the metrics and the open alerts; this decides.

A bad rule (or channel) is reported with its line and left out; the others stand. A
file that is not YAML at all, or whose top level is not `channels:` / `rules:`, yields
one error and no rules (the job then keeps the last good set)."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import yaml
from croniter import croniter

CHANNEL_TYPES = ("log", "email", "telegram", "discord", "slack", "webhook")
SEVERITIES = ("info", "warn", "error", "critical")
MODES = ("ACTIVE", "BUY_ONLY", "SELL_ONLY", "PAUSED", "REMOVED")  # = users.MODES
NAME = re.compile(r"^[a-z0-9_]{1,64}$")
DURATION = re.compile(r"^(\d{1,7})\s*([smh]?)$")
OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
# A channel type's options (besides `type` and `rate_per_min`) and its default rate.
CHANNEL_OPTIONS: dict[str, tuple[frozenset[str], frozenset[str], int]] = {
    # type: (required, optional, default deliveries a minute)
    "log": (frozenset(), frozenset(), 0),
    "email": (
        frozenset({"to", "from", "host"}),
        frozenset({"port", "security", "username_env", "password_env", "ca_file"}),
        10,
    ),
    "telegram": (frozenset({"bot_token_env", "chat_id"}), frozenset(), 20),
    "discord": (frozenset({"webhook_url_env"}), frozenset(), 30),
    "slack": (frozenset({"webhook_url_env"}), frozenset(), 60),
    "webhook": (frozenset(), frozenset({"url", "webhook_url_env", "secret_env"}), 60),
}
THRESHOLD_KEYS = frozenset(
    {
        "name",
        "metric",
        "labels",
        "op",
        "value",
        "for",
        "cooldown",
        "severity",
        "message",
        "channels",
        "action",
        "dry_run",
        "revert_when_ok",
    }
)
SQL_KEYS = frozenset({"name", "sql", "schedule", "severity", "message", "channels", "cooldown"})
ACTION_KEYS = frozenset({"set_mode", "dry_run", "revert_when_ok"})
MAX_MESSAGE = 2_000  # a message template's characters
MAX_DURATION_S = 30 * 86400  # a `for` or `cooldown`
MAX_VALUE = 1e15  # a threshold
MAX_SQL = 10_000


class RuleError(ValueError):
    """One problem in rules.yaml, with its line (1-based; 0: the file as a whole)."""

    def __init__(self, line: int, what: str) -> None:
        super().__init__(f"line {line}: {what}" if line else what)
        self.line = line


@dataclass(frozen=True)
class Channel:
    """A delivery channel: its name in rules.yaml, its type, and its options as written
    (secrets are never here: only the names of the environment variables that hold
    them, `*_env`). `rate_per_min` caps its deliveries a minute (0: no cap)."""

    name: str
    type: str
    options: dict[str, Any] = field(default_factory=dict)
    rate_per_min: int = 60
    line: int = 0
    problem: str | None = None  # what is wrong with it as written (its deliveries fail so)


LOG = Channel("log", "log", {}, rate_per_min=0)  # always there


@dataclass(frozen=True)
class Action:
    """`set_mode` on the leader named by the metric's `user` label."""

    set_mode: str
    dry_run: bool = False
    revert_when_ok: bool = False


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str  # "threshold" | "sql"
    severity: str
    message: str
    channels: tuple[str, ...]
    cooldown_s: int
    line: int
    # threshold rules
    metric: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    op: str = ""
    value: float = 0.0
    for_s: int = 0
    for_text: str = "0s"
    action: Action | None = None
    # SQL rules
    sql: str = ""
    schedule: str = ""

    @property
    def condition(self) -> str:
        """The rule in a line: "listener.connected < 1 for 2m" / "SQL, schedule …"."""
        if self.kind == "sql":
            return f"SQL, schedule {self.schedule}"
        match = ", ".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        text = f"{self.metric}{{{match}}}" if match else self.metric
        return f"{text} {self.op} {self.value:g}" + (f" for {self.for_text}" if self.for_s else "")

    def definition(self) -> dict[str, Any]:
        """What the Alerts page shows of the rule (JSON)."""
        action = self.action
        return {
            "line": self.line,
            "condition": self.condition,
            "severity": self.severity,
            "cooldown_s": self.cooldown_s,
            "channels": list(self.channels),
            "sql": self.sql or None,
            "action": None
            if action is None
            else {"set_mode": action.set_mode, "dry_run": action.dry_run,
                  "revert_when_ok": action.revert_when_ok},
        }  # fmt: skip

    def holds(self, value: float) -> bool:
        """Whether a threshold rule's condition holds for `value`."""
        return OPS[self.op](value, self.value)

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether a series' labels match the rule's (each of the rule's, exactly)."""
        return all(labels.get(k) == v for k, v in self.labels.items())

    def due(self, last: datetime | None, now: datetime) -> bool:
        """Whether an SQL rule's schedule ticked in (last, now] (never run: due)."""
        if last is None:
            return True
        nxt: datetime = croniter(self.schedule, last).get_next(datetime)
        return nxt <= now


@dataclass(frozen=True)
class RuleSet:
    channels: dict[str, Channel]
    rules: tuple[Rule, ...]
    errors: tuple[RuleError, ...]
    broken: bool = False  # the file as a whole is unusable (not YAML, not a mapping)
    failed: frozenset[str] = frozenset()  # names of the rules left out for an error

    @property
    def ok(self) -> bool:
        return not self.errors


EMPTY = RuleSet({"log": LOG}, (), ())


def duration(value: Any) -> int:
    """Seconds of a duration: `90`, `"90s"`, `"2m"`, `"1h"`; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int) and value >= 0:
        seconds = value
    else:
        m = DURATION.match(str(value).strip()) if isinstance(value, str) else None
        if m is None:
            raise ValueError(f"{str(value)[:40]!r} is not a duration (like 30s, 2m, 1h)")
        seconds = int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{seconds} s is longer than {MAX_DURATION_S // 86400} days")
    return seconds


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _pairs(node: yaml.Node) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """A mapping node's entries by key (duplicate keys: the last, like YAML loaders)."""
    return (
        {str(k.value): (k, v) for k, v in node.value} if isinstance(node, yaml.MappingNode) else {}
    )


ALIASES = "YAML anchors and aliases (&name, *name) are not allowed in rules.yaml"
MAX_NODES = 100_000  # a rules file has a few thousand


def _unsafe(root: yaml.Node) -> RuleError | None:
    """Why the document may not be built: a node reached twice (an alias of an anchor)
    or more than MAX_NODES nodes; None when the tree is plain. Iterative: depth costs no
    stack."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            return RuleError(_line(node), ALIASES)
        if len(seen) >= MAX_NODES:
            return RuleError(_line(node), f"more than {MAX_NODES} YAML values: not a rules file")
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                stack += (k, v)
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value
    return None


def parse(text: str, metrics: Collection[str] | None = None) -> RuleSet:
    """Parses rules.yaml. `metrics`: the catalogue's names, so a threshold rule on an
    unknown metric is an error (None: not checked). Never raises: a file this parser
    cannot make sense of is one error and no rules."""
    try:
        return _parse(text, metrics)
    except Exception as exc:  # hostile input must not stop the rules job
        why = f"could not be read: {type(exc).__name__}: {str(exc)[:200]}"
        return RuleSet(EMPTY.channels, (), (RuleError(0, why),), True)


def _parse(text: str, metrics: Collection[str] | None) -> RuleSet:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        unsafe = _unsafe(root) if root is not None else None
        if unsafe is not None:  # an alias: a few lines could stand for billions of values
            return RuleSet(EMPTY.channels, (), (unsafe,), True)
        data = loader.construct_document(root) if root is not None else None
    except RecursionError:
        return RuleSet(EMPTY.channels, (), (RuleError(0, "not YAML: nested too deep"),), True)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        return RuleSet(EMPTY.channels, (), (RuleError(line, f"not YAML: {exc.problem}"),), True)
    except yaml.YAMLError as exc:
        return RuleSet(EMPTY.channels, (), (RuleError(0, f"not YAML: {exc}"),), True)
    finally:
        loader.dispose()
    if root is None or data is None:
        return EMPTY
    if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        return RuleSet(
            EMPTY.channels,
            (),
            (RuleError(1, "the file must be a mapping with `channels:` and `rules:`"),),
            True,
        )
    errors: list[RuleError] = []
    broken = False  # a section of the wrong shape: the file is not usable as a whole
    failed: set[str] = set()
    top = _pairs(root)
    for key in sorted(set(top) - {"channels", "rules"}):
        errors.append(RuleError(_line(top[key][0]), f"unknown top-level key {key!r}"))
    channels = {"log": LOG}
    if "channels" in top:
        node = top["channels"][1]
        raw = data.get("channels")
        if raw is None:
            pass
        elif not isinstance(raw, dict):
            errors.append(RuleError(_line(node), "`channels` must be a mapping name → channel"))
            broken = True
        else:
            for name, (knode, _) in _pairs(node).items():
                try:
                    channels[name] = _channel(name, raw.get(name), _line(knode))
                except RuleError as exc:
                    # kept, so its rules still run on their other channels; its
                    # deliveries fail with this problem until the file is fixed
                    errors.append(exc)
                    if name != "log":
                        channels[name] = _broken(name, raw.get(name), _line(knode), str(exc))
    rules: list[Rule] = []
    if "rules" in top:
        node = top["rules"][1]
        raw_rules = data.get("rules")
        if raw_rules is None:
            raw_rules = []
        if not isinstance(raw_rules, list) or not isinstance(node, yaml.SequenceNode):
            errors.append(RuleError(_line(node), "`rules` must be a list"))
            broken = True
        else:
            seen: dict[str, int] = {}
            for item, rnode in zip(raw_rules, node.value, strict=True):
                line = _line(rnode)
                try:
                    rule = _rule(item, line, _pairs(rnode), channels, metrics)
                except RuleError as exc:
                    errors.append(exc)
                    if isinstance(item, dict) and isinstance(item.get("name"), str):
                        failed.add(item["name"])  # its alerts stay as they are
                    continue
                if rule.name in seen:
                    errors.append(
                        RuleError(
                            line, f"rule {rule.name!r} is already defined on line {seen[rule.name]}"
                        )
                    )
                    continue
                seen[rule.name] = line
                rules.append(rule)
    return RuleSet(channels, tuple(rules), tuple(errors), broken, frozenset(failed))


def _at(pairs: dict[str, tuple[yaml.Node, yaml.Node]], key: str, line: int) -> int:
    return _line(pairs[key][1]) if key in pairs else line


def _channel(name: str, raw: Any, line: int) -> Channel:
    if not NAME.match(name):
        raise RuleError(line, f"channel name {name!r} must match [a-z0-9_]+")
    if name == "log":
        raise RuleError(line, "`log` is the built-in channel; give yours another name")
    if not isinstance(raw, dict):
        raise RuleError(line, f"channel {name!r} must be a mapping with a `type`")
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in CHANNEL_OPTIONS:
        raise RuleError(line, f"channel {name!r}: type must be one of {', '.join(CHANNEL_TYPES)}")
    required, optional, rate = CHANNEL_OPTIONS[kind]
    options = {str(k): v for k, v in raw.items() if k not in ("type", "rate_per_min")}
    missing = sorted(required - set(options))
    if missing:
        raise RuleError(line, f"channel {name!r} ({kind}) needs {', '.join(missing)}")
    unknown = sorted(set(options) - required - optional)
    if unknown:
        raise RuleError(
            line,
            f"channel {name!r} ({kind}): unknown option(s) {', '.join(unknown)}"
            f"; allowed: {', '.join(sorted(required | optional))}",
        )
    if kind == "webhook" and ("url" in options) == ("webhook_url_env" in options):
        raise RuleError(
            line, f"channel {name!r} (webhook) needs exactly one of url, webhook_url_env"
        )
    for k, v in options.items():
        if k.endswith("_env") and not (isinstance(v, str) and re.match(r"^[A-Z_][A-Z0-9_]*$", v)):
            raise RuleError(
                line,
                f"channel {name!r}: {k} names an environment variable "
                f"(like OCULUS_HOOK_SECRET), not {v!r}",
            )
    if kind == "email":
        to = options["to"]
        if isinstance(to, str):
            options["to"] = to = [to]
        if not (isinstance(to, list) and to and all(isinstance(a, str) and "@" in a for a in to)):
            raise RuleError(line, f"channel {name!r}: `to` must be an address or a list of them")
        if options.get("security", "starttls") not in ("starttls", "ssl", "none"):
            raise RuleError(line, f"channel {name!r}: security must be starttls, ssl or none")
    per_min = raw.get("rate_per_min", rate)
    if isinstance(per_min, bool) or not isinstance(per_min, int) or not 0 <= per_min <= 10_000:
        raise RuleError(line, f"channel {name!r}: rate_per_min must be an integer 0..10000")
    return Channel(name, kind, options, per_min, line)


def _broken(name: str, raw: Any, line: int, problem: str) -> Channel:
    entry = raw if isinstance(raw, dict) else {}
    options = {str(k): v for k, v in entry.items() if k not in ("type", "rate_per_min")}
    return Channel(name, str(entry.get("type", "?")), options, 60, line, problem)


def _rule(
    raw: Any,
    line: int,
    pairs: dict[str, tuple[yaml.Node, yaml.Node]],
    channels: dict[str, Channel],
    metrics: Collection[str] | None,
) -> Rule:
    if not isinstance(raw, dict):
        raise RuleError(line, "a rule must be a mapping (name, metric or sql, ...)")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise RuleError(_at(pairs, "name", line), f"rule name {name!r} must match [a-z0-9_]+")
    kind = "sql" if "sql" in raw else "threshold" if "metric" in raw else None
    if kind is None:
        raise RuleError(line, f"rule {name!r} needs a `metric` (threshold) or an `sql`")
    if "sql" in raw and "metric" in raw:
        raise RuleError(line, f"rule {name!r} has both `metric` and `sql`; pick one")
    allowed = SQL_KEYS if kind == "sql" else THRESHOLD_KEYS
    unknown = sorted(str(k) for k in set(raw) - allowed)
    if unknown:
        k = unknown[0]
        raise RuleError(
            _at(pairs, k, line),
            f"rule {name!r}: unknown key(s) {', '.join(unknown)} for a {kind} rule",
        )

    def bad(key: str, what: str) -> RuleError:
        return RuleError(_at(pairs, key, line), f"rule {name!r}: {what}")

    severity = raw.get("severity", "warn")
    if severity not in SEVERITIES:
        raise bad("severity", f"severity must be one of {', '.join(SEVERITIES)}")
    message = raw.get("message", "{{ rule }}: {{ value }}")
    if not isinstance(message, str) or len(message) > MAX_MESSAGE:
        raise bad("message", f"message must be a template string of at most {MAX_MESSAGE} chars")
    chans = raw.get("channels", ["log"])
    if isinstance(chans, str):
        chans = [chans]
    if not isinstance(chans, list) or not chans or not all(isinstance(c, str) for c in chans):
        raise bad("channels", "channels must be a list of channel names")
    unknown_ch = [c for c in chans if c not in channels]
    if unknown_ch:
        raise bad(
            "channels",
            f"no channel {', '.join(map(repr, unknown_ch))} (defined: "
            f"{', '.join(sorted(channels))})",
        )
    try:
        cooldown = duration(raw.get("cooldown", 0))
    except ValueError as exc:
        raise bad("cooldown", f"cooldown: {exc}") from None
    common = {
        "name": name,
        "severity": severity,
        "message": message,
        "channels": tuple(dict.fromkeys(chans)),
        "cooldown_s": cooldown,
        "line": line,
    }
    if kind == "sql":
        sql = raw.get("sql")
        if not isinstance(sql, str) or not sql.strip() or len(sql) > MAX_SQL:
            raise bad("sql", f"sql must be one SELECT of at most {MAX_SQL} characters")
        schedule = raw.get("schedule")
        if not isinstance(schedule, str) or len(schedule.split()) != 6:
            raise bad(
                "schedule",
                "schedule must be six cron fields, seconds last "
                '(min hour dom mon dow sec, like "0 */5 * * * *")',
            )
        if not croniter.is_valid(schedule):
            raise bad("schedule", f"schedule {schedule!r} is not a valid cron expression")
        return Rule(kind="sql", sql=sql.strip().rstrip(";"), schedule=schedule, **common)
    metric = raw.get("metric")
    if not isinstance(metric, str) or (metrics is not None and metric not in metrics):
        raise bad(
            "metric",
            f"unknown metric {metric!r}"
            + (f"; the catalogue: {', '.join(sorted(metrics))}" if metrics else ""),
        )
    labels = raw.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(k, str) for k in labels):
        raise bad("labels", "labels must be a mapping label → value")
    op = raw.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise bad("op", f"op must be one of {' '.join(OPS)}")
    value = raw.get("value")
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not -MAX_VALUE <= value <= MAX_VALUE  # also NaN, inf and 400-digit integers
    ):
        raise bad("value", f"value must be a number, not {value!r}")
    try:
        for_s = duration(raw.get("for", 0))
    except ValueError as exc:
        raise bad("for", f"for: {exc}") from None
    action = _action(raw, bad)
    return Rule(
        kind="threshold",
        metric=metric,
        labels={k: str(v) for k, v in labels.items()},
        op=op,
        value=float(value),
        for_s=for_s,
        for_text=str(raw.get("for", "0s")),
        action=action,
        **common,
    )


def _action(raw: dict[str, Any], bad: Callable[[str, str], RuleError]) -> Action | None:
    """`action: {set_mode: BUY_ONLY}`; `dry_run` and `revert_when_ok` inside the action
    or beside it on the rule (SPEC §11 lists them as the rule's)."""
    act = raw.get("action")
    flags = {k: raw[k] for k in ("dry_run", "revert_when_ok") if k in raw}
    if act is None:
        if flags:
            raise bad(next(iter(flags)), "dry_run / revert_when_ok need an `action`")
        return None
    if not isinstance(act, dict) or set(act) - ACTION_KEYS or "set_mode" not in act:
        raise bad(
            "action",
            "action must be {set_mode: BUY_ONLY|SELL_ONLY|PAUSED|REMOVED"
            "[, dry_run: true][, revert_when_ok: true]}",
        )
    flags.update({k: act[k] for k in ("dry_run", "revert_when_ok") if k in act})
    if not all(isinstance(v, bool) for v in flags.values()):
        raise bad("action", "dry_run and revert_when_ok are true or false")
    mode = act["set_mode"]
    if mode not in MODES or mode == "ACTIVE":
        raise bad(
            "action", f"set_mode must be one of BUY_ONLY, SELL_ONLY, PAUSED, REMOVED, not {mode!r}"
        )
    return Action(mode, bool(flags.get("dry_run", False)), bool(flags.get("revert_when_ok", False)))


# --- the lifecycle ---------------------------------------------------------------------


@dataclass(frozen=True)
class Open:
    """An alert instance that is PENDING or FIRING, as stored."""

    id: int
    state: str
    since: datetime


def step(open_: Open | None, holds: bool, now: datetime, for_s: int) -> str | None:
    """The state an instance moves to now, or None when it stays as it is (or, with no
    open instance and a condition that does not hold, there is none)."""
    if open_ is None:
        if not holds:
            return None
        return "FIRING" if for_s <= 0 else "PENDING"
    if not holds:
        return "RESOLVED"
    if open_.state == "PENDING" and now - open_.since >= timedelta(seconds=for_s):
        return "FIRING"
    return None


def cooling(last_notified_fire: datetime | None, now: datetime, cooldown_s: int) -> bool:
    """Whether a FIRING is within the cooldown of the last one that was sent."""
    return last_notified_fire is not None and now - last_notified_fire < timedelta(
        seconds=cooldown_s
    )
