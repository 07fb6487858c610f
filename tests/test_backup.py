"""Backups: a dump restores to identical tables, rotation keeps the newest and touches
nothing else, the off-host copy and command run, and a restore never happens by accident."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from common.runtime import jobs, settings
from common.store import db
from functions import backup
from tests import site_data

# Table -> its primary key, for an ordered checksum.
CHECKED = {
    "ledger_entry": "id",
    "trade_event": "id",
    "activity_event": "id",
    "portfolio_snapshot": "id",
    "copy_attempt": "id",
    "executable_fill": "id",
    "market_price_snapshot": "asset_id, bucket",
}


@pytest.fixture
def backups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The backup directory, set through the environment like an operator would."""
    directory = tmp_path / "backups"
    monkeypatch.setenv("OCULUS_BACKUP_DIR", str(directory))
    for name in ("OCULUS_BACKUP_TARGET_DIR", "OCULUS_BACKUP_COMMAND", "OCULUS_BACKUP_KEEP"):
        monkeypatch.delenv(name, raising=False)
    settings.get.cache_clear()
    yield directory
    settings.get.cache_clear()


def use(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    settings.get.cache_clear()


def load(url: str) -> None:
    """The site's fixed dataset plus ledgers, book fills and activity, a few thousand rows."""
    with db.connect(url, autocommit=True) as conn:
        users = site_data.load(conn)
        conn.execute(
            """INSERT INTO ledger_entry (portfolio_scope, followed_user_id, asset_id, entry_type,
                   share_delta_micros, cash_delta_micros, price_micros, ref_id, effective_time)
               SELECT CASE WHEN n %% 3 = 0 THEN 'EXEC_GLOBAL' ELSE 'EXEC_USER' END,
                      CASE WHEN n %% 3 = 0 THEN NULL ELSE %(u)s::bigint END, '1001', 'TRADE_FILL',
                      n * 1000, -n * 470, 470000, 'attempt:' || n, %(t)s + n * interval '1 s'
               FROM generate_series(1, 3000) AS n""",
            {"u": users[0], "t": site_data.NOW},
        )
        conn.execute(
            """INSERT INTO executable_fill (copy_attempt_id, level_index, price_micros,
                   share_micros, notional_micros, fee_micros)
               SELECT a.id, l, 400000 + l * 10000, 1000000 * (l + 1), 400000 * (l + 1), l
               FROM copy_attempt a, generate_series(0, 2) AS l WHERE a.decision = 'EXECUTE'"""
        )
        conn.execute(
            """INSERT INTO activity_event (source, source_id, followed_user_id, wallet,
                   activity_type, condition_id, share_micros, usdc_micros, event_time,
                   detect_time, payload)
               SELECT 'DATA_API', 'act:' || n, %(u)s, %(w)s, 'MERGE', %(c)s, n * 1000000,
                      n * 1000000, %(t)s, %(t)s, jsonb_build_object('n', n, 'note', 'ü''"')
               FROM generate_series(1, 200) AS n""",
            {"u": users[1], "w": site_data.USERS[1][1], "c": site_data.M1, "t": site_data.NOW},
        )
        conn.execute(
            """INSERT INTO market_price_snapshot (asset_id, bucket, mid_micros, price_source,
                   observed_at)
               SELECT '1002', %(t)s - n * interval '30 s', 500000 + n, 'MIDPOINT', %(t)s
               FROM generate_series(1, 2000) AS n""",
            {"t": site_data.NOW},
        )


def checksums(url: str) -> dict[str, tuple[int, str]]:
    """Returns, per checked table, (rows, md5 of its rows as text in key order)."""
    out = {}
    with db.connect(url, autocommit=True) as conn:
        for table, key in CHECKED.items():
            query = sql.SQL(
                "SELECT count(*) AS n, md5(coalesce(string_agg(t::text, '|' ORDER BY {k}), ''))"
                " AS h FROM {t} AS t"
            ).format(k=sql.SQL(key), t=sql.Identifier(table))
            row = conn.execute(query).fetchone()
            assert row is not None
            out[table] = (row["n"], row["h"])
    return out


def runs(url: str) -> list[dict[str, object]]:
    with db.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT status, items, counts, error FROM job_run WHERE job = 'backup' ORDER BY id"
        ).fetchall()


def databases(url: str) -> list[str]:
    with db.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database ORDER BY datname").fetchall()
    return [r["datname"] for r in rows]


def dumps(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if backup.DUMP_NAME.match(p.name))


def test_backup_then_wipe_then_restore_gives_identical_tables(
    db_url: str, backups: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load(db_url)
    before = checksums(db_url)
    assert all(n > 0 for n, _ in before.values())

    assert backup.main(["--once", "--database-url", db_url]) == 0
    (run,) = runs(db_url)
    counts = run["counts"]
    assert isinstance(counts, dict)
    assert run["status"] == "OK" and counts["dumps"] == 1
    dump = Path(counts["file"])
    assert dump.parent == backups and backup.DUMP_NAME.match(dump.name)
    assert counts["bytes"] == dump.stat().st_size > 0
    assert counts["sha256"] == hashlib.sha256(dump.read_bytes()).hexdigest()
    assert counts["entries"] > 50 and counts["pruned"] == []
    assert not list(backups.glob("*.partial"))

    with db.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE ledger_entry, executable_fill, activity_event, portfolio_snapshot,"
            " market_price_snapshot, trade_event, copy_attempt CASCADE"
        )
    assert checksums(db_url) != before

    live = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    started = time.monotonic()
    assert backup.main(["restore", dump.name, "--yes", "--database-url", db_url]) == 0
    took = time.monotonic() - started
    kept = [n for n in databases(db_url) if n.startswith(f"{live}_before_restore_")]
    try:
        assert checksums(db_url) == before
        assert len(kept) == 1
        wiped = checksums(db.with_database(db_url, kept[0]))
        assert all(n == 0 for n, _ in wiped.values())
        assert not [n for n in databases(db_url) if n.startswith(f"{live}_restore_")]
        out = capsys.readouterr().out
        assert f'DROP DATABASE "{kept[0]}"' in out
    finally:
        with db.connect(db.with_database(db_url, "postgres"), autocommit=True) as conn:
            for name in kept:
                conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
    # Figures for the record (pytest -s): the dump's size and both durations.
    print(f"dump {counts['bytes']} bytes in {counts['seconds']} s; restore {took:.2f} s")


def test_rotation_keeps_the_newest_dumps_and_no_foreign_file(
    db_url: str, backups: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backups.mkdir()
    old = [f"oculus-2020010{d}T030000Z.dump" for d in range(1, 10)]
    foreign = ["notes.txt", "oculus-20200101T030000Z.dump.bak", "other.dump"]
    for name in [*old, *foreign, "oculus-20200102T030000Z.dump.partial"]:
        (backups / name).write_text(name)

    assert backup.main(["--once", "--database-url", db_url]) == 0

    kept = dumps(backups)
    assert len(kept) == 7
    assert kept[:6] == old[3:]  # the six newest old ones, then today's
    assert kept[6] > old[-1]
    assert all((backups / name).read_text() == name for name in foreign)
    assert not list(backups.glob("*.partial"))
    (run,) = runs(db_url)
    counts = run["counts"]
    assert isinstance(counts, dict)
    assert counts["pruned"] == ["oculus-20200102T030000Z.dump.partial", *old[:3]]

    assert backup.main(["list"]) == 0
    listing = capsys.readouterr().out
    assert kept[-1] in listing and old[0] not in listing and "notes.txt" not in listing


def test_the_dump_is_copied_to_the_target_dir_with_the_same_rotation(
    db_url: str, backups: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "offsite"
    target.mkdir()
    for d in range(1, 9):
        (target / f"oculus-2020010{d}T030000Z.dump").write_text("old")
    (target / "README").write_text("mine")
    use(monkeypatch, "OCULUS_BACKUP_TARGET_DIR", str(target))

    assert backup.main(["--once", "--database-url", db_url]) == 0

    (name,) = dumps(backups)
    assert (target / name).read_bytes() == (backups / name).read_bytes()
    assert len(dumps(target)) == 7 and (target / "README").read_text() == "mine"
    assert not list(target.glob("*.partial"))
    counts = runs(db_url)[0]["counts"]
    assert isinstance(counts, dict)
    assert counts["copied_to"] == str(target / name)


def test_the_backup_command_gets_the_dump_and_its_failure_fails_the_run(
    db_url: str, backups: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = tmp_path / "got"
    use(monkeypatch, "OCULUS_BACKUP_COMMAND", f"sh -c 'printf %s \"$0\" > {got}'")
    assert backup.main(["--once", "--database-url", db_url]) == 0
    (first,) = dumps(backups)
    assert got.read_text() == str(backups / first)

    use(monkeypatch, "OCULUS_BACKUP_COMMAND", "sh -c 'echo upload refused >&2; exit 3'")
    assert backup.main(["--once", "--database-url", db_url]) == 1

    ok, failed = runs(db_url)
    assert ok["status"] == "OK"
    assert failed["status"] == "FAILED"
    assert "sh exited 3: upload refused" in str(failed["error"])
    counts = failed["counts"]
    assert isinstance(counts, dict)
    assert counts["command"] == "sh" and Path(counts["file"]).is_file()  # the dump stays


def test_restore_refuses_without_yes_and_while_processes_beat(
    db_url: str, backups: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load(db_url)
    assert backup.main(["--once", "--database-url", db_url]) == 0
    (name,) = dumps(backups)
    before, names = checksums(db_url), databases(db_url)

    assert backup.main(["restore", name, "--database-url", db_url]) == 1
    assert "refusing without --yes" in capsys.readouterr().out
    assert checksums(db_url) == before and databases(db_url) == names

    with db.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO process_heartbeat (process, pid, host, started_at, beat_at)"
            " VALUES ('simulate', 4242, 'another-host', now(), now())"
        )
    assert backup.main(["restore", name, "--yes", "--database-url", db_url]) == 1
    out = capsys.readouterr().out
    assert "beat in the last 30 s: simulate" in out and "refusing" in out
    assert checksums(db_url) == before and databases(db_url) == names

    assert backup.main(["restore", "no-such.dump", "--yes", "--database-url", db_url]) == 1
    assert "no such dump" in capsys.readouterr().err
    assert databases(db_url) == names

    assert backup.main(["restore", name, "--yes", "--force", "--database-url", db_url]) == 0
    kept = sorted(set(databases(db_url)) - set(names))
    with db.connect(db.with_database(db_url, "postgres"), autocommit=True) as conn:
        for old in kept:
            conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(old)))
    assert len(kept) == 1 and checksums(db_url) == before


def test_a_just_stopped_process_on_this_host_does_not_block_a_restore(db_url: str) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    with db.connect(db_url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO process_heartbeat (process, pid, host, started_at, beat_at)
               VALUES ('listen', %(gone)s, %(h)s, now(), now()),
                      ('site', %(me)s, %(h)s, now(), now()),
                      ('poll', %(me)s, %(h)s, now(), now() - interval '31 s')""",
            {"gone": gone.pid, "me": os.getpid(), "h": socket.gethostname()},
        )
    assert backup._alive(db_url) == ["site"]


def test_prune_plan_only_ever_names_our_own_files() -> None:
    names = [f"oculus-2026010{d}T000000Z.dump" for d in range(1, 5)]
    names += ["oculus-x.dump", "Oculus-20260101T000000Z.dump", "oculus-20260109T000000Z.dump.gz"]
    names += ["oculus-20260109T000000Z.dump.partial"]
    assert backup.plan_prune(names, 2) == [
        "oculus-20260109T000000Z.dump.partial",
        "oculus-20260101T000000Z.dump",
        "oculus-20260102T000000Z.dump",
    ]
    assert backup.plan_prune(names[:4], 7) == []


def test_tools_must_be_at_least_the_server_version() -> None:
    found = [(Path("/wheel/bin"), 15), (Path("/usr/bin"), 18)]
    assert backup.choose_tools(found, 16) == Path("/usr/bin")
    assert backup.choose_tools(found, 15) == Path("/wheel/bin")
    with pytest.raises(backup.BackupError, match="no pg_dump of PostgreSQL 19 or newer"):
        backup.choose_tools(found, 19)


def test_the_password_goes_to_the_environment_not_the_command_line() -> None:
    conninfo, password = backup.split_password("postgresql://oc:s3cret@db.example:5433/oculus")
    assert password == "s3cret" and "s3cret" not in conninfo
    assert psycopg.conninfo.conninfo_to_dict(conninfo) == {
        "user": "oc",
        "host": "db.example",
        "port": "5433",
        "dbname": "oculus",
    }
    assert backup.split_password("host=/run/pg dbname=oculus")[1] is None


def test_dump_names_sort_by_time() -> None:
    a = backup.dump_name(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    b = backup.dump_name(datetime(2026, 1, 10, 0, 0, 0, tzinfo=UTC))
    assert a == "oculus-20260102T030405Z.dump" and a < b


def test_help_works() -> None:
    with pytest.raises(SystemExit) as exit_:
        backup.main(["--help"])
    assert exit_.value.code == 0


def test_a_tool_is_ended_when_the_run_is_asked_to_stop_or_times_out() -> None:
    """Inside the scheduler a run is a thread: its pg_dump must end with its stop flag,
    not outlive it (nor a timeout)."""
    stop = jobs.StopFlag()
    threading.Timer(0.3, lambda: setattr(stop, "stopped", True)).start()
    began = time.monotonic()
    with pytest.raises(backup.BackupError, match="sleep stopped: the run was asked to stop"):
        backup._run(["sleep", "30"], 60, stop=stop)
    assert time.monotonic() - began < 5
    with pytest.raises(backup.BackupError, match="sleep timed out after 0 s"):
        backup._run(["sleep", "30"], 0.2)
    assert backup._run(["echo", "done"], 10) == "done\n"
    with pytest.raises(backup.BackupError, match="exited 1"):
        backup._run(["false"], 10)
