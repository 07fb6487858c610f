"""Freed heap memory goes back to the system between a loop's batches (glibc)."""

from __future__ import annotations

import subprocess
import sys

from common.runtime import settings

SCRIPT = """
from common.runtime import memory
def rss_mb():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS'):
            return int(line.split()[1]) // 1024
chunks = [bytes(4000 + i % 7) for i in range(40000)]  # ~160 MB from malloc's heap
kept = chunks[::50]  # a few survivors keep the freed chunks between them in the heap
del chunks
before = rss_mb()
memory.trim()
print(before, rss_mb())
"""


def test_trim_gives_a_fragmented_heap_back_to_the_system() -> None:
    done = subprocess.run(  # a fresh interpreter: the test process's heap is its own
        [sys.executable, "-c", SCRIPT], cwd=settings.ROOT, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    before, after = map(int, done.stdout.split())
    assert before > 100 and after < before - 80, (before, after)
