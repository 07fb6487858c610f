"""The what-if against a database the real pipeline filled (sandbox → poll → group →
simulate): re-evaluating under the config in force reproduces what the simulator
recorded, decision for decision; a proposal changes the outcome the way it should; and
nothing is written."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from test_simulate_e2e import run_pipeline

from common.store import copy_configs, db, whatif
from functions import whatif as whatif_cli

pytestmark = pytest.mark.sandbox
ALL_TIME = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def _counts(conn: db.Conn) -> tuple[int, ...]:
    row = conn.execute(
        """SELECT (SELECT count(*) FROM copy_attempt) AS a, (SELECT count(*) FROM ledger_entry)
                  AS l, (SELECT count(*) FROM executable_fill) AS f,
                  (SELECT count(*) FROM guardrail_config) AS g"""
    ).fetchone()
    assert row is not None
    return (row["a"], row["l"], row["f"], row["g"])


def test_whatif_reproduces_the_record_and_reacts_to_a_proposal(db_url: str) -> None:
    run_pipeline(db_url, seed=5, steps=24)
    with db.connect(db_url, autocommit=True) as conn:
        before = _counts(conn)
        same = whatif.report(conn, *ALL_TIME, copy_configs.load(conn))
        for scope, part in same["scopes"].items():
            current, recorded = part["current"], part["recorded"]
            assert current["executed"] > 0, scope
            assert current["executed"] == recorded["executed"], scope
            assert current["skipped"] == recorded["skipped"], scope
            assert current["by_reason"] == recorded["by_reason"], scope
            assert part["pnl_difference_micros"] == 0
        # No spread allowed at all: every book is too wide, no BUY or SELL executes (a
        # MERGE or SPLIT needs no book).
        strict = whatif.report(
            conn, *ALL_TIME, copy_configs.propose(conn, {"max_spread_micros": 0})
        )
        for part in strict["scopes"].values():
            assert part["proposed"]["executed"] < part["current"]["executed"]
            assert part["proposed"]["fees_micros"] == 0
            assert part["proposed"]["by_reason"]["SPREAD_TOO_WIDE"] > 0
        # Copying at 10× the size with a bigger cap trades more notional.
        bigger = copy_configs.propose(
            conn, {"copy_pct_bps": 1000, "max_trade_notional_micros": 2_000_000_000}
        )
        big = whatif.report(conn, *ALL_TIME, bigger)
        for part in big["scopes"].values():
            assert (
                part["proposed"]["filled_notional_micros"]
                > part["current"]["filled_notional_micros"]
            )
        # A per-user override applies to that user only.
        user = conn.execute("SELECT min(followed_user_id) AS u FROM copy_attempt").fetchone()
        assert user is not None
        paused_one = copy_configs.propose(conn, {}, {user["u"]: {"max_spread_micros": 0}})
        assert paused_one.for_user(user["u"]).max_spread_micros == 0
        assert paused_one.base.max_spread_micros == 20_000
        assert _counts(conn) == before  # read only


def test_whatif_cli_prints_json_and_rejects_bad_input(db_url: str) -> None:
    end = datetime.now(tz=UTC) + timedelta(days=3650)
    base = [sys.executable, "-m", "functions.whatif", "--database-url", db_url]
    ok = subprocess.run(
        [*base, "--end", end.isoformat(), "--set", "max_spread_micros=30000"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(ok.stdout)["groups"] == 0
    for bad in (["--set", "no_such_field=1"], ["--set", "max_spread_micros"], ["--user", "x"]):
        result = subprocess.run([*base, *bad], capture_output=True, text=True)
        assert result.returncode == 2, bad
        assert "error" in result.stderr


def test_parse_changes() -> None:
    assert whatif_cli.parse_changes(["a=1", "b=true"]) == {"a": 1, "b": True}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        whatif_cli.parse_changes(["a"])
