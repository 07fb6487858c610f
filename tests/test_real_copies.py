"""Real copies (SPEC §10): pairing real copy fills with the leader's groups, the CSV
import (bad rows, BOM and CRLF, 100k rows, a second import), copy wallets (not grouped,
not in the league, synced, marked and unmarked through the write API) and the score
job's attribution and score of the pairs."""

from __future__ import annotations

import argparse
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from common.domain import attribution, copy_csv, real_copies
from common.runtime import jobs, settings
from common.store import copy_configs, db, groups, users
from common.store import real_copies as store
from functions import follow, import_copies
from functions import score as score_job
from tests import site_data

T = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
NOW = site_data.NOW


# -- pairing (pure) -------------------------------------------------------------------


def fill(i: int, seconds: float, asset: str = "1", side: str = "BUY") -> real_copies.Fill:
    return real_copies.Fill(i, asset, side, T + timedelta(seconds=seconds))


def group(i: int, seconds: float, asset: str = "1", side: str = "BUY") -> real_copies.Group:
    return real_copies.Group(i, asset, side, T + timedelta(seconds=seconds))


def test_the_nearest_preceding_group_wins() -> None:
    groups_ = [group(1, 0), group(2, 60), group(3, 130)]  # 3 starts after the fill
    assert real_copies.pair([fill(10, 120)], groups_) == {10: 2}


def test_a_group_at_the_fill_s_instant_precedes_it_and_ties_go_to_the_lower_id() -> None:
    assert real_copies.pair([fill(10, 60)], [group(5, 60), group(4, 60)]) == {10: 4}


def test_fifteen_minutes_is_the_limit() -> None:
    g = [group(1, 0)]
    assert real_copies.pair([fill(10, 900)], g) == {10: 1}
    assert real_copies.pair([fill(10, 900.001)], g) == {10: None}


def test_several_fills_pair_with_one_group() -> None:
    got = real_copies.pair([fill(10, 3), fill(11, 9), fill(12, 40)], [group(1, 0)])
    assert got == {10: 1, 11: 1, 12: 1}


def test_a_fill_of_another_asset_or_side_or_before_every_group_stays_unpaired() -> None:
    g = [group(1, 10)]
    fills = [fill(10, 20, asset="2"), fill(11, 20, side="SELL"), fill(12, 5)]
    assert real_copies.pair(fills, g) == {10: None, 11: None, 12: None}


def test_a_pair_is_attributed_with_t0_equal_to_its_fill_and_no_book_leaves_parts_unknown() -> None:
    book = real_copies.Book(mid=505_000, best_bid=500_000, best_ask=510_000, depth=100_000_000)
    a = real_copies.attempt("BUY", 520_000, 10_000_000, 50_000, T, 500_000, T, book)
    t = attribution.attribute(a, 600_000)
    assert (t.ideal, t.exec, t.sizing, t.skip, t.unfilled) == (1_000_000, 750_000, 0, 0, 0)
    assert (t.latency, t.slippage, t.fee) == (50_000, 150_000, 50_000)
    assert t.ideal - t.exec == t.lost
    s = real_copies.score(a)
    assert s is not None and s.total is not None and s.cost is not None
    blind = real_copies.attempt(
        "BUY", 520_000, 10_000_000, 50_000, T, 500_000, T, real_copies.NO_BOOK
    )
    t = attribution.attribute(blind, 600_000)
    assert t.latency is None and t.slippage == 200_000 and t.ideal - t.exec == t.lost
    s = real_copies.score(blind)
    assert s is not None and (s.cost, s.congestion, s.total) == (None, None, None)
    assert s.timing == 4000 and s.financial == 0  # 400 bps worse than theirs: none


# -- the CSV (pure) -------------------------------------------------------------------

TX = "0x" + "ab" * 32
HEADER = "timestamp,tx_hash,asset,side,price,size,fee"


def parse(line: str, header: str = HEADER) -> copy_csv.Row:
    cols = copy_csv.columns(header.split(","))
    return copy_csv.row(line.split(","), cols, T)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (f"yesterday,{TX},1,BUY,0.5,10,0", "neither ISO 8601 nor unix seconds"),
        (f"1764511509000,{TX},1,BUY,0.5,10,0", "looks like milliseconds"),
        (f"2019-12-31T23:59:59Z,{TX},1,BUY,0.5,10,0", "out of range"),
        (f"2026-11-25T00:00:00Z,{TX},1,BUY,0.5,10,0", "out of range"),  # the future
        (f",{TX},1,BUY,0.5,10,0", "timestamp is empty"),
        ("1764511509,0xabc,1,BUY,0.5,10,0", "tx_hash '0xabc' is not"),
        (f"1764511509,{TX},0x12,BUY,0.5,10,0", "not a token id"),
        (f"1764511509,{TX},1,HOLD,0.5,10,0", "side 'HOLD' is not BUY or SELL"),
        (f"1764511509,{TX},1,BUY,1.5,10,0", "not between 0 and 1"),
        (f"1764511509,{TX},1,BUY,0,10,0", "not between 0 and 1"),
        (f"1764511509,{TX},1,BUY,abc,10,0", "price 'abc' is not a decimal"),
        (f"1764511509,{TX},1,BUY,0.1234567,10,0", "more than 6 decimals"),
        (f"1764511509,{TX},1,BUY,0.5,-3,0", "size -3 is negative"),
        (f"1764511509,{TX},1,BUY,0.5,0,0", "size is 0"),
        (f"1764511509,{TX},1,BUY,0.5,1e30,0", "is not a decimal"),
        (f"1764511509,{TX},1,BUY,0.5,10,-1", "fee -1 is negative"),
        (f"1764511509,{TX},1,BUY", "4 fields, the header needs at least 7"),
        (f"1764511509,{TX},1,BUY,0.5,1000000000000,0", "up to 12 digits"),  # past a bigint
        (f"9999-12-31T23:59:59-05:00,{TX},1,BUY,0.5,10,0", "out of range"),
        (f"2026-11-19,{TX},1,BUY,0.5,10,0", "no time of day"),
        (f"2026-11-19T10:00:00.1234567Z,{TX},1,BUY,0.5,10,0", "more than 6 decimals of a"),
        (f"1764511509,{TX},1,BUY,0.5,10\udcff,0", "not UTF-8"),
    ],
)
def test_every_kind_of_bad_row_says_why(line: str, reason: str) -> None:
    with pytest.raises(copy_csv.BadRow, match=reason.replace("(", r"\(")):
        parse(line)


def test_good_rows_read_iso_and_unix_times_any_case_and_an_empty_fee() -> None:
    a = parse(f"2026-11-19T10:00:00.5+01:00,{TX.upper().replace('0X', '0x')},42,buy,0.55,12.5,")
    assert (a.at, a.tx_hash, a.side, a.price, a.size, a.fee) == (
        datetime(2026, 11, 19, 9, 0, 0, 500_000, tzinfo=UTC), TX, "BUY", 550_000, 12_500_000, 0,
    )  # fmt: skip
    b = parse(f"1795082400.5,{TX},42,Sell,.5,3,0.01")
    assert b.at == datetime(2026, 11, 19, 10, 0, 0, 500_000, tzinfo=UTC) and b.fee == 10_000
    naive = parse(f"2026-11-19 10:00:00,{TX},42,BUY,0.5,3,0")
    assert naive.at.tzinfo is not None and naive.at.hour == 10  # UTC
    no_fee = parse(f"{TX},42,BUY,0.5,3,1795082400", "tx_hash,asset,side,price,size,timestamp")
    assert no_fee.fee == 0 and no_fee.size == 3_000_000


def test_a_header_without_a_column_or_with_one_twice_is_refused() -> None:
    with pytest.raises(copy_csv.HeaderError, match="lacks size"):
        copy_csv.columns(["timestamp", "tx_hash", "asset", "side", "price"])
    with pytest.raises(copy_csv.HeaderError, match="named twice"):
        copy_csv.columns([*HEADER.split(","), "Price"])
    assert copy_csv.columns(["\ufeffTimestamp ", *HEADER.split(",")[1:], "note"])["timestamp"] == 0


# -- against Postgres -----------------------------------------------------------------


def run_score(conn: db.Conn, at: datetime) -> dict[str, int]:
    ctx = jobs.Context(args=argparse.Namespace(), settings=settings.get(), clock=lambda: at)
    score_job.run_once(conn, ctx)
    return ctx.counts


def leader_groups(conn: db.Conn, leader: int) -> list[dict[str, object]]:
    return conn.execute(
        "SELECT id, asset_id, action, window_start, their_price_micros FROM copy_group"
        " WHERE followed_user_id = %s AND action IN ('BUY', 'SELL') ORDER BY id",
        (leader,),
    ).fetchall()


def write_csv(path: Path, lines: list[str], *, bom: bool = False, crlf: bool = False) -> Path:
    text = ("\r\n" if crlf else "\n").join(lines) + ("\r\n" if crlf else "\n")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8", "surrogateescape"))
    return path


def import_file(conn: db.Conn, path: Path, leader: int) -> import_copies.Tally:
    return import_copies.run(conn, path, leader, NOW, io.StringIO())


def test_an_import_with_a_bom_and_crlf_keeps_bad_rows_by_line_and_a_second_adds_nothing(
    conn: db.Conn, tmp_path: Path
) -> None:
    ids = site_data.load(conn)
    leader = ids[1]
    g = leader_groups(conn, leader)[0]
    at = g["window_start"] + timedelta(seconds=4)  # type: ignore[operator]
    good = f"{at.isoformat()},{TX},{g['asset_id']},{g['action']},0.47,10,0.01"
    lines = [
        "Timestamp,TX_hash,asset,side,price,size,fee,note",
        good + ",first",
        good + ",the same fill twice in one file: two fills",
        "",
        f"{at.isoformat()},{TX},{g['asset_id']},{g['action']},2,10,0,bad price",
        f'{int(at.timestamp())},{TX},{g["asset_id"]},"{g["action"]}",0.48,5,,"quoted, note"',
        "1764511509,nope,1,BUY,0.5,10,0",
    ]
    path = write_csv(tmp_path / "mine.csv", lines, bom=True, crlf=True)
    t = import_file(conn, path, leader)
    assert (t.rows, t.added, t.present, t.bad_lines, t.blank) == (5, 3, 0, ["5", "7"], 1)
    kept = conn.execute(
        "SELECT reason, context FROM quarantine WHERE source = 'import_copies' ORDER BY id"
    ).fetchall()
    assert [r["context"]["line"] for r in kept] == [5, 7]
    assert kept[0]["reason"].startswith("mine.csv line 5: price 2 is not between 0 and 1")
    stored = conn.execute(
        "SELECT import_line, side, price_micros, share_micros, fee_micros, leader_user_id"
        " FROM real_copy_fill ORDER BY import_line"
    ).fetchall()
    assert [(r["import_line"], r["price_micros"], r["share_micros"]) for r in stored] == [
        (2, 470_000, 10_000_000), (3, 470_000, 10_000_000), (6, 480_000, 5_000_000),
    ]  # fmt: skip
    before = conn.execute("SELECT * FROM real_copy_fill ORDER BY id").fetchall()
    again = import_file(conn, path, leader)
    assert (again.added, again.present, again.bad) == (0, 3, 2)
    assert conn.execute("SELECT * FROM real_copy_fill ORDER BY id").fetchall() == before
    assert (
        conn.execute(
            "SELECT count(*) AS n FROM quarantine WHERE source = 'import_copies'"
        ).fetchone()["n"]
        == 2
    )
    line = import_copies.summary("mine.csv", again, 0.5)
    assert (
        "0 added, 3 already there (imported before, or a copy wallet's), 2 quarantined (lines 5, 7"
        in line
    )


def test_the_command_refuses_a_file_without_its_columns_and_a_copy_wallet_as_leader(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with db.connect(db_url, autocommit=True) as conn:
        ids = site_data.load(conn)
        users.set_copy_of(conn, str(ids[2]), ids[0])
    path = write_csv(tmp_path / "x.csv", ["time,asset,side", "1,2,BUY"])
    assert import_copies.main([str(path), "--copy-of", str(ids[0]), "--database-url", db_url]) == 2
    assert "x.csv: the header lacks timestamp, tx_hash, price, size" in capsys.readouterr().err
    good = write_csv(tmp_path / "y.csv", [HEADER])
    assert import_copies.main([str(good), "--copy-of", str(ids[2]), "--database-url", db_url]) == 2
    assert "is itself a copy wallet" in capsys.readouterr().err
    assert import_copies.main([str(good), "--copy-of", str(ids[0]), "--database-url", db_url]) == 0
    assert "y.csv: 0 rows, 0 added" in capsys.readouterr().out


def test_a_hundred_thousand_rows_import_and_pair(conn: db.Conn, tmp_path: Path) -> None:
    ids = site_data.load(conn)
    leader = ids[1]
    g = leader_groups(conn, leader)[0]
    start = g["window_start"]
    lines = [HEADER]
    for i in range(100_000):
        at = start + timedelta(milliseconds=10 * i)  # type: ignore[operator]
        lines.append(f"{at.isoformat()},{TX},{g['asset_id']},{g['action']},0.45,{1 + i % 7},0")
    path = write_csv(tmp_path / "big.csv", lines)
    t = import_file(conn, path, leader)
    assert (t.rows, t.added, t.bad) == (100_000, 100_000, 0)
    looked, _ = store.pair(conn, NOW)
    assert looked == 100_000
    s = store.summary(conn, leader)
    # 10 ms apart: the first 90,001 fills are within 15 min of the group's first fill
    assert (s.paired, s.unpaired, s.pending) == (90_001, 9_999, 0)


def test_a_copy_wallet_s_fills_are_not_grouped_but_paired_attributed_and_scored(
    conn: db.Conn,
) -> None:
    ids = site_data.load(conn)
    leader = ids[1]
    mine = site_data.add_real_copy(conn, leader)
    groups.assign(conn, NOW, copy_configs.load(conn))
    states = conn.execute(
        "SELECT DISTINCT group_state FROM trade_event WHERE followed_user_id = %s", (mine,)
    ).fetchall()
    assert [r["group_state"] for r in states] == ["NOT_COPIED"]
    lead = leader_groups(conn, leader)
    got = run_score(conn, NOW)
    assert got["real_added"] == len(lead) + 1 and got["real_paired"] == len(lead) + 1
    assert got["real_attributed"] == len(lead) == got["real_scored"]
    s = store.summary(conn, leader)
    assert (s.paired, s.unpaired, s.wallet) == (len(lead), 1, len(lead) + 1)
    pairs = conn.execute(
        "SELECT f.copy_group_id, c.* FROM real_copy_fill f"
        " JOIN real_copy_attribution c ON c.real_copy_fill_id = f.id ORDER BY f.id"
    ).fetchall()
    assert [r["copy_group_id"] for r in pairs] == [g["id"] for g in lead]
    for r in pairs:
        assert r["ideal_micros"] - r["exec_micros"] == (
            (r["latency_micros"] or 0) + r["slippage_micros"] + r["fee_micros"]
        )
        # the book the leader's copy was decided on, 3 s before this fill, is within 30 s
        assert r["latency_micros"] is not None and r["order_book_snapshot_id"] is not None
    scores = conn.execute("SELECT * FROM real_copy_score").fetchall()
    # 6 s late; the book holds its 3 shares at the touch (no cost), a 0.010 spread
    assert {(r["timing_cpts"], r["cost_cpts"], r["congestion_cpts"], r["total_cpts"])
            for r in scores} == {(3933, 0, 889, 4822)}  # fmt: skip
    again = run_score(conn, NOW + timedelta(seconds=60))
    assert again.get("real_added", 0) == again.get("real_attributed", 0) == 0
    assert again.get("real_scored", 0) == again.get("real_repaired", 0) == 0
    ret = store.retention(conn, NOW, leader)["30d"]
    assert ret.n == len(lead) and ret.ideal - ret.exec == ret.latency + ret.slippage + ret.fee
    # unmarked: its fills are no longer real copies
    users.set_copy_of(conn, str(mine), None)
    assert run_score(conn, NOW + timedelta(seconds=120))["real_dropped"] == len(lead) + 1
    assert store.summary(conn, leader).total == 0


def test_marking_refuses_chains_and_itself_and_is_audited(conn: db.Conn) -> None:
    ids = site_data.load(conn)
    with pytest.raises(users.FollowError, match="copy of itself"):
        users.set_copy_of(conn, str(ids[0]), ids[0])
    users.set_copy_of(conn, str(ids[2]), ids[0])
    with pytest.raises(users.FollowError, match="itself a copy wallet"):
        users.set_copy_of(conn, str(ids[1]), ids[2])
    with pytest.raises(users.FollowError, match="leader of copy wallet"):
        users.set_copy_of(conn, str(ids[0]), ids[1])
    audit = conn.execute(
        "SELECT before, after FROM audit_log WHERE action = 'follow.copy_of'"
    ).fetchall()
    assert [(a["before"]["copy_of_user_id"], a["after"]["copy_of_user_id"]) for a in audit] == [
        (None, ids[0])
    ]


def test_follow_add_copy_of_marks_the_new_wallet(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with db.connect(db_url, autocommit=True) as conn:
        ids = site_data.load(conn)
    wallet = "0x" + "98" * 20
    args = ["--database-url", db_url, "add", wallet, "--label", "mine", "--no-seed"]
    assert follow.main([*args, "--copy-of", site_data.USERS[0][1]]) == 0
    assert f"the copy wallet of user {ids[0]}" in capsys.readouterr().out
    with db.connect(db_url) as conn:
        row = conn.execute(
            "SELECT copy_of_user_id FROM followed_user WHERE profile_wallet = %s", (wallet,)
        ).fetchone()
    assert row is not None and row["copy_of_user_id"] == ids[0]
    assert follow.main(["--database-url", db_url, "copy-of", wallet, "none"]) == 0
    assert "is not a copy wallet" in capsys.readouterr().out


def test_the_leader_page_shows_simulated_vs_real_and_the_unpaired_fills(
    conn: db.Conn, tmp_path: Path
) -> None:
    from site_builder import build

    ids = site_data.load(conn)
    leader = ids[1]
    mine = site_data.add_real_copy(conn, leader)
    run_score(conn, NOW)
    out = tmp_path / "site"
    done = build.Builder(out, clock=lambda: NOW).build_all(conn)
    assert not done.failed
    page = (out / f"users/{leader}.html").read_text()
    n = len(leader_groups(conn, leader))
    assert "Simulated vs real copy" in page and f"{n} real fills paired" in page
    assert "1 unpaired" in page and "Unpaired copy fills" in page
    assert "no group within 15 min" in page and "before this leader was followed" not in page
    ret = store.retention(conn, NOW, leader)["30d"]
    assert f"${abs(ret.ideal) / 1e6:,.2f}" in page and f"${abs(ret.exec) / 1e6:,.2f}" in page
    for chart, mark in (("real-waterfall", b"<g><title>"), ("sim-curve", b"<polyline"),
                        ("real-curve", b"<polyline")):  # fmt: skip
        assert f"/charts/user-{leader}-{chart}.svg?v=" in page
        assert mark in (out / f"charts/user-{leader}-{chart}.svg").read_bytes()
    own = (out / f"users/{mine}.html").read_text()
    assert "your copy wallet</span> of" in own and f"/users/{leader}.html" in own
    assert f"/api/users/{mine}/copy-of" in own
    assert "Simulated vs real copy" not in (out / f"users/{ids[0]}.html").read_text()
    board = (out / "leaders.html").read_text()
    assert "my copy" not in board and site_data.USERS[0][0] in board


def test_an_overlong_line_an_open_quote_and_a_quoted_newline_are_kept_by_their_lines(
    conn: db.Conn, tmp_path: Path
) -> None:
    ids = site_data.load(conn)
    good = f"1795082400,{TX},42,BUY,0.5,3,0"
    lines = [
        HEADER + ",note",
        good + ',"two\nlines"',  # one record on lines 2-3: fine
        good + "," + "x" * 70_000,  # past 64 kB: refused, never held whole
        f'1795082401,{TX},42,BUY,0.5,3,0,"open quote',
        good.replace("0.5", "0.6"),
    ]
    path = tmp_path / "odd-\udcff.csv"
    write_csv(path, lines)
    t = import_file(conn, path, ids[0])
    # the open quote swallows the line after it: one bad record on lines 5-6
    assert (t.rows, t.added, t.bad_lines) == (3, 1, ["4", "5-6"])
    reasons = [
        r["reason"] for r in conn.execute("SELECT reason FROM quarantine ORDER BY id DESC LIMIT 2")
    ]
    assert any("line 4: longer than 64 kB" in r for r in reasons)
    assert any("not CSV" in r for r in reasons)
    assert all("odd-\ufffd.csv" in r for r in reasons)  # a name that is not UTF-8, shown


def test_a_fill_pairs_once_its_group_closes_and_a_csv_copy_of_a_wallet_fill_is_skipped(
    conn: db.Conn, tmp_path: Path
) -> None:
    ids = site_data.load(conn)
    leader = ids[1]
    g = leader_groups(conn, leader)[0]
    conn.execute(
        "UPDATE copy_group SET state = 'OPEN', their_price_micros = NULL, closed_at = NULL"
        " WHERE id = %s",
        (g["id"],),
    )
    at = g["window_start"] + timedelta(seconds=3)  # type: ignore[operator]
    path = write_csv(
        tmp_path / "a.csv", [HEADER, f"{at.isoformat()},{TX},{g['asset_id']},{g['action']},0.5,2,0"]
    )
    import_file(conn, path, leader)
    assert store.pair(conn, NOW) == (1, 0)
    assert store.summary(conn, leader).unpaired == 1  # its group is still open
    conn.execute(
        "UPDATE copy_group SET state = 'DONE', their_price_micros = 450000, closed_at = %s"
        " WHERE id = %s",
        (NOW + timedelta(seconds=30), g["id"]),
    )
    assert store.pair(conn, NOW + timedelta(seconds=60)) == (0, 1)
    assert store.summary(conn, leader).paired == 1
    assert store.pair(conn, NOW + timedelta(seconds=120)) == (0, 0)  # nothing to redo
    # the copy wallet's own fill of that transaction is not added a second time
    mine = users.add(conn, "0x" + "97" * 20, "mine", [], NOW, copy_of=leader)
    conn.execute(
        """INSERT INTO trade_event (source, source_id, followed_user_id, wallet, asset_id,
               side, price_micros, share_micros, usdc_notional_micros, tx_hash, event_time,
               detect_time)
           VALUES ('DATA_API', 'x1', %s, %s, %s, %s, 500000, 2000000, 1000000, %s, %s, %s)""",
        (mine, "0x" + "97" * 20, g["asset_id"], g["action"], TX, at, NOW),
    )
    assert store.sync(conn, NOW) == (0, 0)
    # a removed copy wallet's fills are no longer the real copy
    conn.execute("UPDATE trade_event SET tx_hash = %s WHERE source_id = 'x1'", ("0x" + "cd" * 32,))
    assert store.sync(conn, NOW) == (1, 0)
    users.set_fields(conn, str(mine), copy_mode="REMOVED")
    assert store.sync(conn, NOW) == (0, 1)
