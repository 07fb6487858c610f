"""Giving freed memory back to the system between a long-running program's batches.

CPython returns its small-object arenas when they empty, but glibc keeps the freed
chunks of larger allocations (API payloads, query results, rendered pages) in its heap,
so a loop's RSS keeps a few MB it no longer uses. `trim()` asks glibc to release them
(`malloc_trim(0)`, about a millisecond); where libc is not glibc it does nothing. The
whole stack must fit 400 MB (issue 18): in the demo this gives back ~3 MB in the site
builder and ~1 MB in the scheduler and loops."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS)
        return None
    return trim


def trim() -> None:
    """Releases the heap's free memory to the system (glibc); else a no-op."""
    if (malloc_trim := _malloc_trim()) is not None:
        malloc_trim(0)
