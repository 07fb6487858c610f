"""Hostile and malformed input: every route answers 4xx with a JSON detail, never 5xx,
and writes nothing. The body models' bounds are the columns' bounds."""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import sql
from test_api import MARKET, WALLET, TestClient, add_market, api_client, audit_count

from api import models
from common.domain import copy_config
from common.runtime import settings as settings_mod
from common.store import copy_configs, db, users

BIG = 2**70
ZERO = "0x" + "0" * 40
# Labels with nothing to see: zero-width space, right-to-left override, BOM, soft hyphen,
# isolates, a combining accent alone, ideographic space.
INVISIBLE = [
    "\u200b",
    "\u202e",
    "\u200b\u202e \u200b",
    "\ufeff",
    "\u00ad",
    "\u2066\u2069",
    "\u0301",
    "\u3000",
    " \u200b\u200d ",
]
TEN_MB = b'{"label": "' + b"a" * 10_000_000 + b'"}'
DEEP = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
# Bodies no route accepts (raw bytes, sent as application/json).
HOSTILE: list[bytes] = [
    b"",
    b"[]",
    b"null",
    b'"x"',
    b"1",
    b"true",
    b"{",
    b'{"a": 1',
    b"[" * 10_000 + b"]" * 10_000,
    DEEP,
    b"\xff\xfe{}",
    b'{"label": "\xff\xfe"}',
    b'{"nope": NaN}',
    b'{"nope": Infinity}',
    TEN_MB,
    b'{"unknown_field": 1}',
    json.dumps({"x": BIG}).encode(),
]


def wallet(n: int) -> str:
    return f"0x{n:040x}"


def as_bytes(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def config_bodies(user: bool) -> list[Any]:
    out: list[Any] = [
        {},
        {"max_spread_micros": "12"},
        {"max_spread_micros": 1.5},
        {"max_spread_micros": True},
        {"max_spread_micros": -1},
        {"max_spread_micros": BIG},
        {"max_spread_micros": 2**63},
        {"max_spread_micros": [1]},
        {"max_spread_micros": {"a": 1}},
        b'{"max_spread_micros": NaN}',
        b'{"max_spread_micros": 1e400}',
        {"max_total_exposure_bps": 10_001},
        {"copy_pct_bps": 100_001},
        {"group_window_ms": 0},
        {"decision_delay_ms": 2**31},
        {"allow_partial_fills": 1},
        {"allow_partial_fills": "true"},
        {"max_spread_micros": 1, "guardrail_id": 3},
        {"max_spread_micros": 1, "scope": "GLOBAL"},
        # Fits the column, but no sane config: each field has a documented range.
        {"decision_delay_ms": 2**31 - 1},
        {"decision_delay_ms": 600_001},
        {"decision_jitter_ms": 600_001},
        {"group_window_ms": 2**31 - 1},
        {"group_window_ms": 60_001},
        {"starting_cash_micros": 2**63 - 1},
        {"starting_cash_micros": 10**15 + 1},
        {"starting_cash_micros": 0},
        {"max_trade_notional_micros": 10**15 + 1},
        {"max_spread_micros": 1_000_001},
        {"max_worse_than_theirs_micros": 2**63 - 1},
        {"min_depth_ratio_bps": 100_001},
        {"no_open_before_close_s": 2**31 - 1},
        {"max_signal_age_s": 86_401},
        b'{"max_spread_micros": 1, "max_spread_micros": 2}',
        b'{"max_spread_micros": 1, "copy_pct_bps": 5, "max_spread_micros": 1}',
    ]
    if not user:
        out.append({"max_spread_micros": None})
    return out


# Per route: (path, bodies that must be refused besides HOSTILE).
CASES: dict[str, tuple[str, list[Any]]] = {
    "config_global": ("/api/config/global", config_bodies(user=False)),
    "config_user": ("/api/config/user/1", config_bodies(user=True)),
    "pause": (
        "/api/control/pause",
        [
            {},
            {"paused": "true"},
            {"paused": 1},
            {"paused": None},
            {"paused": True, "reason": "x" * 501},
            {"paused": True, "reason": "a\u0000b"},
            {"paused": True, "reason": 5},
            {"paused": True, "reason": "\u202e"},
            b'{"paused": true, "paused": false}',
            b'{"paused": true, "reason": "a", "reason": "b"}',
        ],
    ),
    "follow": (
        "/api/users",
        [
            {"wallet": WALLET},
            {"wallet": 5, "label": "x"},
            {"wallet": WALLET, "label": ""},
            {"wallet": WALLET, "label": "   "},
            {"wallet": WALLET, "label": "x" * 101},
            {"wallet": WALLET, "label": "a\u0000b"},
            {"wallet": WALLET, "label": "x", "proxies": "0x12"},
            {"wallet": WALLET, "label": "x", "proxies": [1]},
            {"wallet": WALLET, "label": "x", "proxies": ["0x" + f"{i:040x}" for i in range(21)]},
            {"wallet": WALLET, "label": "x", "proxies": ["0xzz"]},
            {"wallet": "0x" + "g" * 40, "label": "x"},
            {"wallet": "x" * 10_000, "label": "x"},
            # Each with a wallet of its own: one wrongly accepted cannot hide the next.
            {"wallet": ZERO, "label": "x"},
            {"wallet": ZERO.replace("0x", "0X"), "label": "x"},
            {"wallet": wallet(1), "label": "x", "proxies": [ZERO]},
            *({"wallet": wallet(10 + i), "label": label} for i, label in enumerate(INVISIBLE)),
            {"wallet": wallet(2), "label": "whale\u202e"},
            b'{"wallet": "0x' + b"3" * 40 + b'", "label": "a", "label": "b"}',
            b'{"wallet": "0x' + b"4" * 40 + b'", "wallet": "0x' + b"5" * 40 + b'", "label": "a"}',
        ],
    ),
    "update_user": (
        "/api/users/1",
        [
            {},
            {"enabled": None, "copy_mode": None},
            {"enabled": "yes"},
            {"enabled": 1},
            {"copy_mode": "FOO"},
            {"copy_mode": "active"},
            {"copy_mode": 1},
            b'{"enabled": true, "enabled": false}',
        ],
    ),
    "blacklist": (
        f"/api/markets/{MARKET}/blacklist",
        [
            {},
            {"blacklisted": "true"},
            {"blacklisted": None},
            {"blacklisted": 0},
            b'{"blacklisted": true, "blacklisted": false}',
        ],
    ),
    "config_test": (
        "/api/config/test",
        [
            {"global": {"nope": 1}},
            {"global": {"max_spread_micros": None}},
            {"global": []},
            {"global": {"max_spread_micros": -5}},
            {"users": {"x": {"copy_pct_bps": 1}}},
            {"users": {"0": {"copy_pct_bps": 1}}},
            {"users": {str(BIG): {"copy_pct_bps": 1}}},
            {"users": {"1": {}}},
            {"users": {"999": {"copy_pct_bps": 1}}},
            {"users": []},
            {"hours": 0},
            {"hours": 169},
            {"hours": "24"},
            {"hours": True},
            b'{"hours": NaN}',
            b'{"hours": 1e400}',
            {"hours": 1.5},
            {"global": {"min_trade_notional_micros": 10**12}},
            {"global": {"decision_delay_ms": 2**31 - 1}},
            {"users": {"1": {"group_window_ms": 2**31 - 1}}},
            b'{"hours": 1, "hours": 2}',
            b'{"global": {"copy_pct_bps": 1, "copy_pct_bps": 2}}',
            b'{"users": {"1": {"copy_pct_bps": 1}, "1": {"copy_pct_bps": 2}}}',
        ],
    ),
    "revert": ("/api/audit/1/revert", [{"force": True}, {"x": 1}]),
}


@pytest.fixture
def api(db_url: str, tmp_path: Path, conn: db.Conn) -> Iterator[TestClient]:
    with api_client(db_url, tmp_path) as client:
        assert client.post("/api/users", json={"wallet": WALLET, "label": "w"}).status_code == 201
        add_market(conn)
        yield client


def refused(api: TestClient, path: str, body: bytes) -> str | None:
    """Returns what is wrong with the answer to a bad body, or None if it was refused well."""
    r = api.post(path, content=body, headers={"content-type": "application/json"})
    if not 400 <= r.status_code < 500:
        return f"{path} {body[:60]!r}: {r.status_code} {r.text[:200]}"
    detail = r.json().get("detail")
    if not isinstance(detail, str) or not detail:
        return f"{path} {body[:60]!r}: no detail in {r.text[:200]}"
    return None


@pytest.mark.parametrize("route", sorted(CASES))
def test_bad_bodies_are_refused_and_write_nothing(
    api: TestClient, conn: db.Conn, route: str
) -> None:
    path, bodies = CASES[route]
    written = audit_count(conn)
    hostile = [b for b in HOSTILE if b or route != "revert"]  # a revert may send no body
    problems = [refused(api, path, b) for b in [*hostile, *map(as_bytes, bodies)]]
    assert [p for p in problems if p] == []
    assert audit_count(conn) == written


def test_errors_name_the_field(api: TestClient) -> None:
    r = api.post("/api/config/global", json={"max_spread_micros": "12", "nope": 1})
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert fields == {"max_spread_micros", "nope"}
    r = api.post("/api/config/global", content=TEN_MB, headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = api.post("/api/config/global", content=DEEP, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "recursion" in r.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/config/user/abc"),
        ("POST", "/api/config/user/0"),
        ("POST", f"/api/config/user/{BIG}"),
        ("POST", "/api/users/-1"),
        ("POST", f"/api/users/{2**63}"),
        ("POST", "/api/markets/0x12/blacklist"),
        ("POST", f"/api/markets/{MARKET}00/blacklist"),
        ("POST", f"/api/markets/{MARKET.replace('0x', '0X')}/blacklist"),
        ("POST", f"/api/audit/{2**64}/revert"),
        ("POST", "/api/audit/1/revert?force=maybe"),
        ("GET", f"/api/config/test/{2**63}"),
        ("GET", "/api/config/test/x"),
        ("GET", "/api/audit?limit=1e3"),
    ],
)
def test_bad_paths_are_refused(api: TestClient, method: str, path: str) -> None:
    r = api.request(method, path, json={"copy_pct_bps": 1, "enabled": True, "blacklisted": True})
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=5,
)
FIELDS = (*copy_config.GUARDRAIL_FIELDS, *copy_config.SIZING_FIELDS)


def test_fuzzed_config_changes_never_fail_the_server(api: TestClient, conn: db.Conn) -> None:
    @settings(max_examples=150, deadline=None)
    @given(st.dictionaries(st.sampled_from([*FIELDS, "other"]), JSON, max_size=3))
    def check(body: dict[str, Any]) -> None:
        r = api.post(  # json.dumps writes NaN and Infinity too
            "/api/config/user/1",
            content=as_bytes(body),
            headers={"content-type": "application/json"},
        )
        assert r.status_code in (200, 400, 422), r.text
        if r.status_code == 200:
            effective = r.json()["effective"]
            base = copy_configs.load(conn).base
            for name, value in body.items():
                assert effective[name] == (getattr(base, name) if value is None else value)

    check()


def test_every_value_the_models_take_fits_its_column(conn: db.Conn) -> None:
    """For each field, the ends of its range (and just past them) are tried on the model
    and on the column: what the model takes, the column takes."""
    user = users.add(conn, WALLET, "w", [], "2026-01-01T00:00:00Z")
    wrong = []
    for name in FIELDS:
        bounds = models.ConfigFields.range_of(name)
        if bounds is None:
            continue
        low, high = bounds
        table = "guardrail_config" if name in copy_config.GUARDRAIL_FIELDS else "copy_sizing_config"
        for value in (low - 1, low, high, high + 1):
            try:
                models.UserConfigChange.model_validate({name: value})
                model_ok = True
            except ValueError:
                model_ok = False
            assert model_ok == (low <= value <= high), (name, value)
            try:
                with conn.transaction():
                    insert = sql.SQL(
                        "INSERT INTO {} (scope, followed_user_id, version, {})"
                        " VALUES ('USER', %(u)s, 1, %(v)s)"
                    ).format(sql.Identifier(table), sql.Identifier(name))
                    conn.execute(insert, {"u": user, "v": value})
                    raise _Rollback
            except _Rollback:
                db_ok = True
            except (psycopg.errors.CheckViolation, psycopg.errors.NumericValueOutOfRange):
                db_ok = False
            if model_ok and not db_ok:
                wrong.append((name, value))
    assert wrong == []


def documented_ranges() -> dict[str, tuple[str, str, str]]:
    """docs/config.md's table: field -> (unit, default, range) as written."""
    text = (settings_mod.ROOT / "docs" / "config.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \| ([^|]+) \| ([^|]+) \|", text, re.MULTILINE)
    return {
        name: (unit.strip(), default.strip(), span.strip()) for name, unit, default, span in rows
    }


def test_every_config_field_has_its_range_documented() -> None:
    documented = documented_ranges()
    assert set(documented) == set(FIELDS)
    defaults = copy_config.Config()
    for name, (_unit, default, span) in documented.items():
        bounds = models.ConfigFields.range_of(name)
        expected = "true / false" if bounds is None else f"{bounds[0]:_} – {bounds[1]:_}"
        assert span.replace(",", "_") == expected, name
        value = getattr(defaults, name)
        shown = str(value).lower() if isinstance(value, bool) else f"{value:_}"
        assert default.replace(",", "_") == shown, name
        if bounds is not None:
            assert bounds[0] <= value <= bounds[1], name


class _Rollback(Exception):
    pass


def test_models_cover_the_config_and_the_modes() -> None:
    assert set(models.ConfigFields.model_fields) == set(FIELDS)
    mode = models.UserUpdate.model_fields["copy_mode"].annotation
    (literal,) = (a for a in typing.get_args(mode) if typing.get_origin(a) is typing.Literal)
    assert typing.get_args(literal) == users.MODES
