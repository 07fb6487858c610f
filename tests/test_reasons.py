"""The reason codes are documented in one place: README.md's table is that list."""

from __future__ import annotations

import re

from common.domain import reasons
from common.runtime import settings


def test_readme_table_is_the_registry() -> None:
    text = (settings.ROOT / "README.md").read_text()
    section = text.split("**Reason codes.**", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| (.+) \|$", section, flags=re.M))
    assert rows == reasons.REASONS


def test_codes_are_stable_identifiers() -> None:
    assert all(re.fullmatch(r"[A-Z][A-Z_]+", code) for code in reasons.REASONS)
    assert reasons.describe("NO_BOOK").startswith("No order book")
