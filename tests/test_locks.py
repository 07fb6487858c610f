"""Advisory lock ids live in one registry and never collide."""

from __future__ import annotations

import re
from pathlib import Path

from common.store import locks

ROOT = Path(__file__).resolve().parents[1]


def test_lock_ids_are_distinct_and_fit_a_bigint() -> None:
    values = list(locks.ALL.values())
    assert len(values) == len(set(values)), locks.ALL
    assert all(0 < v < 2**63 for v in values)
    assert len(values) >= 8


def test_two_int_lock_classes_are_distinct_and_fit_an_int4() -> None:
    """The class half of the two-int locks (per job, per user's ingest) is a key space of
    its own: no two uses may share a class."""
    classes = list(locks.CLASSES.values())
    assert len(classes) == len(set(classes)), locks.CLASSES
    assert all(0 < v < 2**31 for v in classes)
    assert not set(locks.CLASSES) & set(locks.ALL)
    found = {n for n in dir(locks) if n.endswith("_CLASS")}
    assert found == set(locks.CLASSES)  # a class outside the registry is not checked


def test_no_module_writes_a_lock_id_of_its_own() -> None:
    """A lock id typed outside the registry could collide unseen."""
    literal = re.compile(r"0x(6F63|0C01)_?[0-9A-F]{2,4}\b", re.IGNORECASE)
    found = [
        f"{p.relative_to(ROOT)}:{n}"
        for folder in ("common", "functions", "api", "site_builder")
        for p in (ROOT / folder).rglob("*.py")
        if p.name != "locks.py"
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if literal.search(line)
    ]
    assert found == []
