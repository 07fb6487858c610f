"""The league table of leaders (SPEC §10): rank by your outcome, not theirs. Pure: the
page (`site_builder/pages/leaders.py`) reads the figures, this orders them.

Rank score = ROI 30 d × n / (n + SHRINK), n the copy attempts in the window, so a thin
sample shrinks towards zero; ties by retention 30 d (none last). A leader with fewer than
MIN_ATTEMPTS attempts is listed after every ranked one, as "too few copies", unranked.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

SHRINK = 20
MIN_ATTEMPTS = 10


@dataclass(frozen=True)
class Standing:
    """What ranks one leader at one moment."""

    user_id: int
    roi_30d: Decimal | None  # PnL in the window / equity at its start; None: no snapshot
    attempts: int  # copy attempts decided in the window
    retention: Decimal | None

    @property
    def ranked(self) -> bool:
        return self.attempts >= MIN_ATTEMPTS and self.roi_30d is not None

    @property
    def score(self) -> Decimal | None:
        if not self.ranked or self.roi_30d is None:
            return None
        return self.roi_30d * self.attempts / (self.attempts + SHRINK)


def order(standings: list[Standing]) -> list[tuple[int | None, Standing]]:
    """The table's order, each with its rank (None: too few copies, listed last)."""

    def key(s: Standing) -> tuple[int, Decimal, int, Decimal, int]:
        score = s.score if s.score is not None else Decimal(0)
        retention = s.retention if s.retention is not None else Decimal(0)
        return (0 if s.ranked else 1, -score, 0 if s.retention is not None else 1, -retention,
                s.user_id)  # fmt: skip

    out: list[tuple[int | None, Standing]] = []
    rank = 0
    for s in sorted(standings, key=key):
        if s.ranked:
            rank += 1
        out.append((rank if s.ranked else None, s))
    return out


def ranks(standings: list[Standing]) -> dict[int, int]:
    """User → rank, for the ranked ones."""
    return {s.user_id: r for r, s in order(standings) if r is not None}
