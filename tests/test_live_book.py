"""Books kept from the market channel (common/domain/live_book.py): deltas on a snapshot,
the book at a past moment rebuilt from the history, the compact form a ladder stores."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from common.domain.live_book import BUY, SELL, Levels, LiveBook, ladder

PRICES = st.integers(min_value=1, max_value=99).map(lambda c: c * 10_000)
SIZES = st.integers(min_value=0, max_value=5).map(lambda n: n * 1_000_000)
LEVELS = st.lists(st.tuples(PRICES, SIZES.filter(bool)), max_size=8, unique_by=lambda x: x[0])
EVENT = st.one_of(
    st.tuples(st.just("book"), LEVELS, LEVELS),
    st.tuples(st.sampled_from([BUY, SELL]), PRICES, SIZES),
)


def replay(events: list[tuple[int, object]], t: int) -> Levels | None:
    """The book at `t` the slow way: every event stamped up to t, in arrival order, from
    the last snapshot stamped up to t."""
    bids: dict[int, int] = {}
    asks: dict[int, int] = {}
    seen = False
    last_snap = max((i for i, (at, e) in enumerate(events) if at <= t and e[0] == "book"),
                    default=None)  # fmt: skip
    if last_snap is None:
        return None
    for i, (at, e) in enumerate(events):
        if i < last_snap or at > t:
            continue
        if e[0] == "book":
            bids, asks, seen = dict(e[1]), dict(e[2]), True
        elif seen:
            side = bids if e[0] == BUY else asks
            if e[2]:
                side[e[1]] = e[2]
            else:
                side.pop(e[1], None)
    return Levels(tuple(sorted(bids.items(), reverse=True)), tuple(sorted(asks.items())))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), EVENT), max_size=40), st.integers(0, 1100))
def test_the_book_at_a_moment_is_the_replay_of_its_history(
    steps: list[tuple[int, tuple[object, ...]]], t: int
) -> None:
    book = LiveBook("1", keep_ms=10_000_000)
    now, events = 0, []
    for gap, e in steps:
        now += gap * 20  # stamps only move forward here
        events.append((now, e))
        if e[0] == "book":
            book.snapshot(now, list(e[1]), list(e[2]))  # type: ignore[arg-type]
        else:
            book.change(now, str(e[0]), int(e[1]), int(e[2]))  # type: ignore[call-overload]
    assert book.at(t) == replay(events, t)
    if events and any(e[0] == "book" for _, e in events):
        assert book.at(now) == book.levels()


def test_deltas_before_the_first_snapshot_are_ignored_and_a_reset_needs_a_new_one() -> None:
    book = LiveBook("1")
    assert not book.change(1, BUY, 500_000, 10)
    book.snapshot(2, [(500_000, 10), (490_000, 5)], [(510_000, 7)])
    assert book.change(3, SELL, 510_000, 0) and book.change(4, BUY, 495_000, 3)
    assert book.levels() == Levels(((500_000, 10), (495_000, 3), (490_000, 5)), ())
    book.reset()
    assert not book.change(5, BUY, 480_000, 1) and book.levels() == Levels((), ())
    assert book.at(4) == Levels(((500_000, 10), (495_000, 3), (490_000, 5)), ())  # kept


def test_history_is_kept_for_its_window_only() -> None:
    book = LiveBook("1", keep_ms=1_000)
    book.snapshot(0, [(500_000, 1)], [])
    for t in range(1, 3_000, 10):
        book.change(t, BUY, 500_000, t)
    assert book.at(2_500) is not None and book.at(500) is None  # older than the window
    assert len(book._changes) <= 110


def test_a_compact_book_keeps_ten_cents_around_mid_and_fifty_levels_a_side() -> None:
    bids = tuple((500_000 - i * 1_000, 1) for i in range(200))
    asks = tuple((510_000 + i * 1_000, 1) for i in range(200))
    c = Levels(bids, asks).compact()
    assert len(c.bids) == 50 and len(c.asks) == 50
    assert c.bids[-1][0] >= 505_000 - 100_000 and c.asks[-1][0] <= 505_000 + 100_000
    thin = Levels(((500_000, 1), (300_000, 1)), ((520_000, 1), (900_000, 1))).compact()
    assert thin == Levels(((500_000, 1),), ((520_000, 1),))
    assert Levels(((500_000, 1), (300_000, 2)), ()).compact().bids == ((500_000, 1),)


def test_differences_name_each_level_that_differs() -> None:
    a = Levels(((500_000, 10),), ((510_000, 7),))
    b = Levels(((500_000, 9),), ((510_000, 7), (520_000, 1)))
    assert a.differences(b) == ["bid 500000: 10 vs 9", "ask 520000: None vs 1"]
    assert a.differences(a) == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), EVENT), min_size=1, max_size=60),
       st.integers(0, 300))  # fmt: skip
def test_a_short_history_still_rebuilds_every_moment_of_its_window(
    steps: list[tuple[int, tuple[object, ...]]], back: int
) -> None:
    book = LiveBook("1", keep_ms=300)
    now, events = 0, []
    for gap, e in steps:
        now += gap * 20
        events.append((now, e))
        if e[0] == "book":
            book.snapshot(now, list(e[1]), list(e[2]))  # type: ignore[arg-type]
        else:
            book.change(now, str(e[0]), int(e[1]), int(e[2]))  # type: ignore[call-overload]
    t = now - back  # inside the window
    expected = replay(events, t)
    if expected is not None:
        assert book.at(t) == expected
    assert len(book._changes) <= sum(1 for at, e in events if at > now - 300 and e[0] != "book")


def test_a_ladder_takes_each_delay_from_the_history() -> None:
    book = LiveBook("1", keep_ms=120_000)
    book.snapshot(0, [(500_000, 10)], [(520_000, 10)])
    for t in range(1_000, 70_000, 1_000):  # the best bid grows by one share a second
        book.change(t, BUY, 500_000, 10 + t // 1_000)
    fill = 5_000
    rungs = ladder(book, fill, fill + 300, (0, 2_000, 5_000, 60_000), now_ms=fill + 60_000)
    assert [(r.delay_ms, r.at_ms, r.source) for r in rungs] == [
        (0, 4_999, "LIVE"), (2_000, 7_000, "LIVE"), (5_000, 10_000, "LIVE"),
        (60_000, 65_000, "LIVE"),
    ]  # fmt: skip
    assert [r.levels.bids[0][1] for r in rungs] == [14, 17, 20, 75]  # each moment's own
    # 60 s is not reached before it is due; the others are
    early = ladder(book, fill, fill, (0, 60_000), now_ms=fill + 10_000)
    assert [r.delay_ms for r in early] == [0]


def test_before_the_asset_was_watched_plus_zero_is_the_first_book_after_detection() -> None:
    book = LiveBook("1")
    book.snapshot(8_000, [(500_000, 10)], [(520_000, 10)])  # subscribed at the detection
    rungs = ladder(book, 5_000, 7_500, (0, 2_000, 5_000), now_ms=20_000)
    assert [(r.delay_ms, r.at_ms, r.source) for r in rungs] == [
        (0, 8_000, "LIVE_AFTER"), (5_000, 10_000, "LIVE"),
    ]  # fmt: skip


def test_a_ladder_skips_the_moments_the_book_was_unknown() -> None:
    book = LiveBook("1")
    book.snapshot(0, [(500_000, 10)], [])
    book.change(1_000, BUY, 500_000, 11)
    book.reset()  # the connection dropped at 1 s; the next snapshot comes at 9 s
    book.snapshot(9_000, [(500_000, 12)], [])
    rungs = ladder(book, 500, 500, (0, 2_000, 10_000), now_ms=20_000)
    assert [(r.delay_ms, r.levels.bids[0][1]) for r in rungs] == [(0, 10), (10_000, 12)]


def test_a_snapshot_older_than_changes_seen_keeps_those_changes() -> None:
    """A resync from a REST book read a moment before the stream moved on: the changes
    stamped after the REST book are applied again on top (none is lost)."""
    b = LiveBook("1")
    b.snapshot(0, [(400_000, 10)], [(600_000, 10)])
    b.change(10, BUY, 410_000, 5)
    b.change(20, SELL, 590_000, 7)
    b.snapshot(15, [(400_000, 10), (410_000, 5), (420_000, 1)], [(600_000, 10)])  # REST at 15
    assert b.levels().bids == ((420_000, 1), (410_000, 5), (400_000, 10))
    assert b.levels().asks == ((590_000, 7), (600_000, 10))  # the change at 20 kept
    then = b.at(16)
    assert then is not None and then.asks == ((600_000, 10),)  # REST's book at 15..19
    now = b.at(25)
    assert now is not None and now.asks == ((590_000, 7), (600_000, 10))


def test_changes_columns_behave_as_a_deque() -> None:
    from collections import deque

    from common.domain.live_book import Change, Changes

    ours, theirs = Changes(), deque()
    for i in range(5_000):
        c = Change(i, 1_700_000_000_000 + i, BUY if i % 3 else SELL, 10_000 * (i % 90), i * 7)
        ours.append(c)
        theirs.append(c)
        if i % 5 < 3 and i > 100:  # drop from the head often, past the compaction point
            assert ours.popleft() == theirs.popleft()
    assert len(ours) == len(theirs) and ours[0] == theirs[0] and list(ours) == list(theirs)
    ours.clear()
    assert not ours and len(ours) == 0


def test_states_replay_equals_the_book_at_each_moment() -> None:
    import random

    rng = random.Random(7)
    b = LiveBook("1", keep_ms=10**9)
    b.snapshot(0, [(400_000, 10)], [(600_000, 10)])
    t = 0
    for _ in range(600):
        t += rng.choice((0, 1, 3, 7))
        side = rng.choice((BUY, SELL))
        price = rng.randrange(30, 70) * 10_000
        b.change(t, side, price, rng.choice((0, 5, 9)))
    lo, hi = 400, 900
    moments = [lo, *[m for m in b.change_times(lo + 1, hi)]]
    assert list(b.states(lo, hi)) == [b.at(m) for m in moments]
    b.snapshot(650, [(410_000, 1)], [(590_000, 1)])  # a snapshot inside: rebuilt moment by moment
    later = [lo, *[m for m in b.change_times(lo + 1, hi)]]
    assert list(b.states(lo, hi)) == [b.at(m) for m in later]


def test_the_ladders_plus_zero_is_the_book_at_detection_when_the_fill_is_too_old() -> None:
    b = LiveBook("1", keep_ms=120_000)
    b.snapshot(1_000_000, [(450_000, 10)], [(550_000, 10)])
    b.change(1_050_000, BUY, 460_000, 4)
    # the fill was 10 minutes before detection: the history does not reach it; at
    # detection the book was watched and synced (no snapshot after it: a quiet book)
    (rung,) = ladder(b, 1_060_000 - 600_000, 1_060_000, (0,), 1_070_000)
    assert rung.source == "LIVE_AFTER" and rung.at_ms == 1_060_000
    assert rung.levels.bids == ((460_000, 4), (450_000, 10))
