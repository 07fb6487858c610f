"""Order books kept live from the CLOB market channel (SPEC §12): a `book` snapshot,
then `price_change` deltas (each the new total size at one price on one side; 0 removes
the level), with a short history so the book at a past moment (just before a leader's
fill) can be rebuilt. Pure: the watcher (functions/watch_books.py) feeds it messages
already parsed into micros, and compares it with REST `/book` to catch drift.

Prices and sizes are integer micros; a side maps price → size. `at(t)` replays the
newest snapshot at or before `t` and the deltas after it up to `t`."""

from __future__ import annotations

import bisect
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from common.domain import money

BUY, SELL = "BUY", "SELL"  # a price_change's side: BUY the bids, SELL the asks
BAND = 100_000  # compact books keep levels within ±0.10 of mid ...
MAX_LEVELS = 50  # ... and at most this many a side


@dataclass(frozen=True, slots=True)
class Levels:
    """One moment of a book: bids best (highest) first, asks best (lowest) first."""

    bids: tuple[tuple[int, int], ...]
    asks: tuple[tuple[int, int], ...]

    @property
    def best_bid(self) -> int | None:
        return self.bids[0][0] if self.bids else None

    @property
    def best_ask(self) -> int | None:
        return self.asks[0][0] if self.asks else None

    @property
    def mid(self) -> int | None:
        if self.best_bid is None or self.best_ask is None:
            return None
        return money.div_round(self.best_bid + self.best_ask, 2)  # as clob.OrderBook.mid

    def compact(self, band: int = BAND, max_levels: int = MAX_LEVELS) -> Levels:
        """The levels within `band` of mid (of the best price on a one-sided book), at
        most `max_levels` a side: what a ladder stores."""
        ref = self.mid if self.mid is not None else self.best_bid or self.best_ask
        if ref is None:
            return self
        bids = tuple(lv for lv in self.bids if lv[0] >= ref - band)[:max_levels]
        asks = tuple(lv for lv in self.asks if lv[0] <= ref + band)[:max_levels]
        return Levels(bids, asks)

    def differences(self, other: Levels) -> list[str]:
        """What differs from `other`, level by level (empty: the same book)."""
        out = []
        for name, mine, theirs in (("bid", self.bids, other.bids), ("ask", self.asks, other.asks)):
            a, b = dict(mine), dict(theirs)
            for price in sorted(a.keys() | b.keys()):
                if a.get(price) != b.get(price):
                    out.append(f"{name} {price}: {a.get(price)} vs {b.get(price)}")
        return out


def _sorted(side: dict[int, int], bids: bool) -> tuple[tuple[int, int], ...]:
    return tuple(sorted(((p, s) for p, s in side.items() if s > 0), reverse=bids))


@dataclass(frozen=True, slots=True)  # a busy book holds thousands: ~¼ of the memory
class Change:
    """One price level's new total size (0: the level is gone); `seq` orders it among
    the book's snapshots and changes (two may share a millisecond)."""

    seq: int
    at_ms: int
    side: str  # BUY (bids) | SELL (asks)
    price: int
    size: int


class Changes:
    """A book's changes, oldest first, in five columns of machine integers: ~33 bytes a
    change where a deque of `Change` objects takes ~190 (a busy book holds tens of
    thousands; the watcher's memory goal is 60 MB). A deque's subset: append, popleft,
    [0], iteration (as `Change`s), len, clear."""

    __slots__ = ("_at", "_head", "_price", "_seq", "_side", "_size")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self._seq, self._at = array("q"), array("q")
        self._price, self._size, self._side = array("q"), array("q"), array("b")
        self._head = 0

    def append(self, c: Change) -> None:
        self._seq.append(c.seq)
        self._at.append(c.at_ms)
        self._price.append(c.price)
        self._size.append(c.size)
        self._side.append(0 if c.side == BUY else 1)

    def _get(self, i: int) -> Change:
        return Change(self._seq[i], self._at[i], BUY if self._side[i] == 0 else SELL,
                      self._price[i], self._size[i])  # fmt: skip

    def __getitem__(self, i: int) -> Change:
        if i != 0 or not self:
            raise IndexError(i)
        return self._get(self._head)

    def popleft(self) -> Change:
        c = self[0]
        self._head += 1
        if self._head >= 1024 and self._head * 2 >= len(self._seq):  # drop the dead head
            for col in (self._seq, self._at, self._price, self._size, self._side):
                del col[: self._head]
            self._head = 0
        return c

    def __len__(self) -> int:
        return len(self._seq) - self._head

    def __bool__(self) -> bool:
        return len(self) > 0

    def __iter__(self) -> Iterator[Change]:
        for i in range(self._head, len(self._seq)):
            yield self._get(i)

    def apply(
        self, bids: dict[int, int], asks: dict[int, int], after_seq: int, upto_ms: int
    ) -> None:
        """Applies to `bids`/`asks` the changes after `after_seq` stamped up to `upto_ms`,
        straight from the columns (no object a change: `at` reads thousands)."""
        i = bisect.bisect_right(self._seq, after_seq, lo=self._head)
        cols = zip(self._at[i:], self._side[i:], self._price[i:], self._size[i:], strict=True)
        for at_ms, side, price, size in cols:
            if at_ms > upto_ms:
                continue  # stamps may run out of order by a little: each is judged alone
            book = bids if side == 0 else asks
            if size > 0:
                book[price] = size
            else:
                book.pop(price, None)

    def between(self, lo_ms: int, hi_ms: int, after_seq: int = 0) -> list[Change]:
        """The changes after `after_seq` stamped in (lo_ms, hi_ms], in (stamp, seq) order."""
        i = bisect.bisect_right(self._seq, after_seq, lo=self._head)
        out = [self._get(j) for j in range(i, len(self._seq)) if lo_ms < self._at[j] <= hi_ms]
        return sorted(out, key=lambda c: (c.at_ms, c.seq))

    def stamps(self, lo_ms: int, hi_ms: int) -> set[int]:
        return {t for t in self._at[self._head :] if lo_ms <= t <= hi_ms}

    @property
    def first_seq(self) -> int:
        return self._seq[self._head]

    @property
    def first_at(self) -> int:
        return self._at[self._head]


@dataclass
class LiveBook:
    """One asset's book, and its recent history (`keep_ms`) of snapshots and changes."""

    asset_id: str
    keep_ms: int = 120_000
    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)
    synced: bool = False  # a snapshot has been applied since the last reset
    updated_ms: int = 0
    # history: snapshots (seq, at_ms, Levels) and the changes after the oldest one
    _seq: int = 0
    _gaps: list[list[int]] = field(default_factory=list)  # [from, to) the book was unknown
    _snapshots: deque[tuple[int, int, Levels]] = field(default_factory=deque)
    _changes: Changes = field(default_factory=Changes)

    def snapshot(
        self, at_ms: int, bids: list[tuple[int, int]], asks: list[tuple[int, int]]
    ) -> None:
        """Replaces the book with a `book` message's (or a REST /book's) levels. The
        changes already seen that are stamped after it (a REST book read a moment before
        the stream moved on) are applied again on top, so a resync drops none of them."""
        stale = self.synced and at_ms < self.updated_ms
        later = self._changes.between(at_ms, self.updated_ms) if stale else []
        self.bids = {p: s for p, s in bids if s > 0}
        self.asks = {p: s for p, s in asks if s > 0}
        if self._gaps and self._gaps[-1][1] < 0:  # the gap since the reset ends here
            self._gaps[-1][1] = at_ms
        self.synced = True
        self.updated_ms = max(self.updated_ms, at_ms)
        self._seq += 1
        self._snapshots.append((self._seq, at_ms, self.levels()))
        for c in later:
            self.change(c.at_ms, c.side, c.price, c.size)
        self._trim(at_ms)

    def change(self, at_ms: int, side: str, price: int, size: int) -> bool:
        """Applies one `price_change` entry; False (ignored) before the first snapshot,
        whose levels would be missing, or for an unknown side."""
        if not self.synced or side not in (BUY, SELL):
            return False
        book = self.bids if side == BUY else self.asks
        if size > 0:
            book[price] = size
        else:
            book.pop(price, None)
        self.updated_ms = max(self.updated_ms, at_ms)
        self._seq += 1
        self._changes.append(Change(self._seq, at_ms, side, price, size))
        self._trim(at_ms)
        return True

    def reset(self) -> None:
        """Forgets the levels (a dropped connection: deltas may have been missed); the
        history stays, so the past is still known up to the drop."""
        if self.synced:
            self._gaps.append([self.updated_ms, -1])
        self.bids, self.asks, self.synced = {}, {}, False

    def levels(self) -> Levels:
        return Levels(_sorted(self.bids, True), _sorted(self.asks, False))

    def at(self, t_ms: int) -> Levels | None:
        """The book as it was at `t_ms`: the newest snapshot stamped at or before it,
        and the changes after that snapshot stamped up to `t_ms`; None when the history
        does not reach back that far."""
        base = None
        for snap in self._snapshots:
            if snap[1] > t_ms:
                break
            base = snap
        if base is None:
            return None
        seq, _, levels = base
        bids, asks = dict(levels.bids), dict(levels.asks)
        self._changes.apply(bids, asks, seq, t_ms)
        return Levels(_sorted(bids, True), _sorted(asks, False))

    def change_times(self, lo_ms: int, hi_ms: int) -> list[int]:
        """The distinct moments in [lo_ms, hi_ms] at which the history changed."""
        moments = {at for _, at, _ in self._snapshots if lo_ms <= at <= hi_ms}
        moments.update(self._changes.stamps(lo_ms, hi_ms))
        return sorted(moments)

    def states(self, lo_ms: int, hi_ms: int) -> Iterator[Levels]:
        """The book at `lo_ms`, then after each moment in (lo_ms, hi_ms] it changed: one
        replay, not one `at` a moment (a REST check's window holds hundreds on a busy
        book). A snapshot inside the window: each moment rebuilt (`at`)."""
        if any(lo_ms < at <= hi_ms for _, at, _ in self._snapshots):
            for t in [lo_ms, *self.change_times(lo_ms + 1, hi_ms)]:
                if (levels := self.at(t)) is not None:
                    yield levels
            return
        base = None
        for snap in self._snapshots:
            if snap[1] > lo_ms:
                break
            base = snap
        if base is None:
            return
        bids, asks = dict(base[2].bids), dict(base[2].asks)
        self._changes.apply(bids, asks, base[0], lo_ms)
        yield Levels(_sorted(bids, True), _sorted(asks, False))
        moment = None
        for c in self._changes.between(lo_ms, hi_ms, base[0]):
            if moment is not None and c.at_ms != moment:
                yield Levels(_sorted(bids, True), _sorted(asks, False))
            moment = c.at_ms
            side = bids if c.side == BUY else asks
            if c.size > 0:
                side[c.price] = c.size
            else:
                side.pop(c.price, None)
        if moment is not None:
            yield Levels(_sorted(bids, True), _sorted(asks, False))

    def first_after(self, t_ms: int) -> tuple[int, Levels] | None:
        """The first snapshot stamped at or after `t_ms` (the first book seen after a
        detection, when the asset was not watched before it), or None."""
        for _, at_ms, levels in self._snapshots:
            if at_ms >= t_ms:
                return at_ms, levels
        return None

    def reaches(self, t_ms: int, now_ms: int) -> bool:
        """Whether the history holds the book at `t_ms`: not before its oldest snapshot,
        not after `now_ms`, not while the book was unknown (a dropped connection until
        the next snapshot)."""
        if not self._snapshots or not self._snapshots[0][1] <= t_ms <= now_ms:
            return False
        if not self.synced and t_ms > self.updated_ms:
            return False
        return not any(lo < t_ms and (hi < 0 or t_ms < hi) for lo, hi in self._gaps)

    def _trim(self, now_ms: int) -> None:
        """Keeps `keep_ms` of history: the newest snapshot before the cut is the base,
        with the changes stamped before the cut folded into it (so a book that gets no
        new snapshot for hours still holds only `keep_ms` of changes)."""
        cut = now_ms - self.keep_ms
        self._gaps = [g for g in self._gaps if g[1] < 0 or g[1] > cut]
        snaps, changes = self._snapshots, self._changes
        while len(snaps) > 1 and snaps[1][1] <= cut:
            snaps.popleft()
        if not snaps:
            changes.clear()
            return
        while changes and changes.first_seq <= snaps[0][0]:
            changes.popleft()
        limit = snaps[1][0] if len(snaps) > 1 else None
        if (
            not changes
            or changes.first_at > cut
            or (limit is not None and changes.first_seq > limit)
        ):
            return
        seq, at_ms, levels = snaps[0]
        bids, asks = dict(levels.bids), dict(levels.asks)
        while changes and changes.first_at <= cut and (limit is None or changes.first_seq < limit):
            c = changes.popleft()
            side = bids if c.side == BUY else asks
            if c.size > 0:
                side[c.price] = c.size
            else:
                side.pop(c.price, None)
            seq, at_ms = c.seq, max(at_ms, c.at_ms)
        snaps[0] = (seq, at_ms, Levels(_sorted(bids, True), _sorted(asks, False)))


@dataclass(frozen=True)
class Rung:
    """One delay's book of a ladder."""

    delay_ms: int
    at_ms: int  # the moment the book is of
    source: str  # LIVE: as it was then; LIVE_AFTER: the first book seen after detection
    levels: Levels


def ladder(
    book: LiveBook, first_fill_ms: int, detect_ms: int, delays_ms: tuple[int, ...], now_ms: int
) -> list[Rung]:
    """The book at each delay after the leader's first fill, as far as the history
    holds it: +0 is the book just before the fill, or (the history does not reach back
    to it) the book at detection, or else the first book after it; a delay the history
    does not reach (not yet, or no longer) is left out."""
    out = []
    for d in delays_ms:
        t = first_fill_ms + d if d > 0 else first_fill_ms - 1
        if book.reaches(t, now_ms) and (levels := book.at(t)) is not None:
            out.append(Rung(d, t, "LIVE", levels.compact()))
        elif d == 0 and book.reaches(detect_ms, now_ms) and (seen := book.at(detect_ms)):
            out.append(Rung(d, detect_ms, "LIVE_AFTER", seen.compact()))  # watched by then
        elif d == 0 and (after := book.first_after(detect_ms)) is not None:
            out.append(Rung(d, after[0], "LIVE_AFTER", after[1].compact()))
    return out
