"""Alert message templates (SPEC §11): Jinja2's sandbox, plain text, bounded: `*` and
`**` are capped, and loops, macros, blocks and includes are refused (expressions,
filters and `if` are what a message needs; a loop nested in a loop could hold the rules
job for hours). A template that does not compile or fails to render still yields a
message: the raw values, with the template's error, so an alert is never lost to its
wording."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError, nodes
from jinja2.sandbox import SandboxedEnvironment

MAX_CHARS = 2_000  # a rendered message
MAX_REPEAT = 10_000  # the longest string or list `*` may build


class _Env(SandboxedEnvironment):
    """The sandbox, with `*` and `**` bounded: `{{ 'x' * 10**9 }}` would otherwise take
    the process's memory."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > 64:
                raise TemplateError("exponent too large")
            return left**right
        for seq, n in ((left, right), (right, left)):
            long = isinstance(seq, str | list | tuple) and isinstance(n, int)
            if long and len(seq) * n > MAX_REPEAT:
                raise TemplateError("repetition too long")
        return left * right


_ENV = _Env(autoescape=False, keep_trailing_newline=False)


# Statements a message has no use for, and whose cost is not bounded by its size
# (nested loops over ranges), or which reach outside it.
_REFUSED = (
    nodes.For, nodes.Macro, nodes.CallBlock, nodes.FilterBlock, nodes.Include, nodes.Import,
    nodes.FromImport, nodes.Extends, nodes.Block,
)  # fmt: skip


@lru_cache(maxsize=512)
def _compile(source: str) -> Any:
    tree = _ENV.parse(source)
    for node in tree.find_all(_REFUSED):
        raise TemplateError(
            f"{type(node).__name__.lower()} statements are not allowed in a message "
            f"(line {node.lineno}): use expressions, filters and if"
        )
    return _ENV.from_string(tree)


def check(source: str) -> str | None:
    """The template's syntax error, or None."""
    try:
        _compile(source)
    except TemplateError as exc:
        return f"template: {exc}"
    return None


def raw(values: dict[str, Any]) -> str:
    """The values as they are, for a message whose template failed."""
    shown = {k: v for k, v in values.items() if k not in ("message",)}
    return json.dumps(shown, default=str, sort_keys=True)[:MAX_CHARS]


def render(source: str, values: dict[str, Any]) -> tuple[str, str | None]:
    """(the message, the template's error or None)."""
    try:
        text = str(_compile(source).render(**values))
    except Exception as exc:
        error = f"template: {type(exc).__name__}: {exc}"[:300]
        return f"{values.get('rule', 'alert')}: {raw(values)} ({error})"[:MAX_CHARS], error
    return text[:MAX_CHARS], None
