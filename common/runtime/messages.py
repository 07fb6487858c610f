"""Alert message templates (SPEC §11): Jinja2's sandbox, plain text, bounded: `*` and
`**` are capped, and loops, macros, blocks and includes are refused (expressions,
filters and `if` are what a message needs; a loop nested in a loop could hold the rules
job for hours). A template that does not compile or fails to render still yields a
message: the raw values, with the template's error, so an alert is never lost to its
wording."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError, nodes
from jinja2.sandbox import SandboxedEnvironment

MAX_CHARS = 2_000  # a rendered message
MAX_REPEAT = 10_000  # the longest string or list `*` may build


_WIDE = re.compile(r"[%:][^a-zA-Z%{}]*?\d{5,}")  # a width or precision of 10,000 or more


def _narrow(text: Any) -> None:
    """Refuses a format string that would pad to 10,000 characters or more."""
    if isinstance(text, str) and _WIDE.search(text):
        raise TemplateError("a format width or precision over 9999")


def _bounded(name: str, f: Callable[..., Any]) -> Callable[..., Any]:
    """A filter whose number arguments (widths, counts) stay within MAX_CHARS."""

    @functools.wraps(f)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        for a in (*args, *kwargs.values()):
            if isinstance(a, int) and not isinstance(a, bool) and abs(a) > MAX_CHARS:
                raise TemplateError(f"{name}: {a} is more than {MAX_CHARS}")
        if name == "format":
            _narrow(next((a for a in args if isinstance(a, str)), None))
        return f(*args, **kwargs)

    return bounded


class _Env(SandboxedEnvironment):
    """The sandbox, with what could build a huge value bounded: `*` of a text or list
    (MAX_REPEAT), `**` (its result's size), `%` and `format` widths, and the number
    arguments of filters (`center(10**8)`)."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {n: _bounded(n, f) for n, f in self.filters.items()}

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > 64:
                raise TemplateError("exponent too large")
            if isinstance(left, int) and left.bit_length() * abs(right) > 4096:
                raise TemplateError("power too large")
            return left**right
        if operator == "%":
            _narrow(left)
            return left % right
        for seq, n in ((left, right), (right, left)):
            long = isinstance(seq, str | list | tuple) and isinstance(n, int)
            if long and len(seq) * n > MAX_REPEAT:
                raise TemplateError("repetition too long")
        return left * right

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # `'{:>999999999}'.format(1)`: the sandbox's own wrapper, once the text is narrow
        if isinstance(getattr(value, "__self__", None), str):
            _narrow(value.__self__)
        return super().wrap_str_format(value)


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
    except Exception as exc:
        return f"template: {type(exc).__name__}: {str(exc)[:200]}"
    return None


def raw(values: dict[str, Any]) -> str:
    """The values as they are, for a message whose template failed."""
    shown = {k: v for k, v in values.items() if k not in ("message",)}
    return json.dumps(shown, default=str, sort_keys=True)[:MAX_CHARS]


def render(source: str, values: dict[str, Any]) -> tuple[str, str | None]:
    """(the message, the template's error or None)."""
    try:
        text = str(_compile(source).render(values))  # a dict: a variable may be named "self"
    except Exception as exc:
        error = f"template: {type(exc).__name__}: {exc}"[:300]
        return f"{values.get('rule', 'alert')}: {raw(values)} ({error})"[:MAX_CHARS], error
    return text[:MAX_CHARS], None
