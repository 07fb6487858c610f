"""Upstream probes (SPEC §11): one cheap request to each upstream per metrics run, a row
each in `upstream_probe`; an upstream that is down, slow or answers garbage is a failed
probe with a bounded reason, never a failed run."""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from common.runtime import jobs, settings
from common.store import db
from common.upstream import probes
from functions import metrics
from sandbox import testing

ANCHOR = 1_790_000_000_000
NOW = datetime.fromtimestamp(ANCHOR / 1000, tz=UTC) + timedelta(seconds=7.5)


@pytest.fixture(scope="module")
def sb() -> Iterator[testing.RunningSandbox]:
    with testing.running_sandbox(seed=7, clock="manual", anchor_ms=ANCHOR) as running:
        yield running


def dead_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pointed(sb: testing.RunningSandbox, **over: str) -> settings.Settings:
    urls = {
        "data_api_url": sb.data_api_url,
        "clob_url": sb.clob_url,
        "gamma_url": sb.gamma_url,
        "chain_ws_url": sb.chain_ws_url,
    }
    return settings.Settings(**{**urls, **over})


def context(s: settings.Settings) -> jobs.Context:
    return jobs.Context(args=argparse.Namespace(), settings=s, clock=lambda: NOW)


def rows(conn: db.Conn) -> dict[str, dict]:
    found = conn.execute("SELECT * FROM upstream_probe ORDER BY id").fetchall()
    return {r["upstream"]: r for r in found}


@pytest.mark.sandbox
def test_each_run_probes_every_upstream_of_the_sandbox(
    conn: db.Conn, sb: testing.RunningSandbox
) -> None:
    metrics.run_once(conn, context(pointed(sb)))
    got = rows(conn)
    assert set(got) == {"data_api", "clob", "gamma", "chain"}
    for r in got.values():
        assert r["ok"] and r["error"] is None and r["at"] == NOW
        assert 0 < r["latency_micros"] < probes.PROBE_TIMEOUT_S * 1e6
    assert {got[u]["status"] for u in ("data_api", "clob", "gamma")} == {200}
    # the sandbox's head: 2 s blocks from t=0, seen the chain delay late (here 2 s: the
    # block before t=0, stamped at its start)
    base, delay_ms = sb.scenario()["base_block"], sb.state()["knobs"]["chain_delay_s"] * 1000
    assert delay_ms == 2000
    head = base + (sb.now_ms() - ANCHOR - 2000) // 2000
    assert head == base - 1 and got["chain"]["head_block"] == head
    assert got["chain"]["head_at"] == datetime.fromtimestamp(ANCHOR // 1000 - 2, tz=UTC)
    assert got["chain"]["status"] is None
    # the run's metrics read this run's probes: no error, the head 9.5 s old
    points = {
        (r["name"], r["labels"].get("upstream", "")): r
        for r in conn.execute("SELECT name, labels, value_micros FROM metric_point")
    }
    for upstream, r in got.items():
        assert points[("upstream.error_rate", upstream)]["value_micros"] == 0
        p95 = points[("upstream.latency_p95_ms", upstream)]["value_micros"]
        assert p95 == r["latency_micros"] * 1000  # one probe: its latency, in ms
    assert points[("chain.head_age_s", "")]["value_micros"] == 9_500_000

    sb.advance(60_000)  # a minute later: 30 blocks on
    later = jobs.Context(
        args=argparse.Namespace(), settings=pointed(sb), clock=lambda: NOW + timedelta(minutes=1)
    )
    metrics.run_once(conn, later)
    chain = conn.execute(
        "SELECT head_block FROM upstream_probe WHERE upstream = 'chain' ORDER BY id"
    ).fetchall()
    assert [r["head_block"] for r in chain] == [head, head + 30]


@pytest.mark.sandbox
def test_a_dead_upstream_is_a_failed_probe_and_the_job_still_succeeds(
    db_url: str, conn: db.Conn, sb: testing.RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = dead_port()
    env = {
        "OCULUS_DATA_API_URL": f"http://127.0.0.1:{port}",
        "OCULUS_CLOB_URL": sb.clob_url,
        "OCULUS_GAMMA_URL": sb.gamma_url,
        "OCULUS_CHAIN_WS_URL": f"ws://127.0.0.1:{port}/chain",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("OCULUS_CLOCK_URL", raising=False)
    settings.get.cache_clear()
    try:
        assert metrics.main(["--once", "--database-url", db_url]) == 0
    finally:
        settings.get.cache_clear()
    got = rows(conn)
    assert {u: r["ok"] for u, r in got.items()} == {
        "data_api": False, "clob": True, "gamma": True, "chain": False
    }  # fmt: skip
    for upstream in ("data_api", "chain"):
        r = got[upstream]
        assert "refused" in r["error"].lower() or "connect" in r["error"].lower(), r["error"]
        assert r["status"] is None and r["head_block"] is None
        assert len(r["error"]) <= probes.ERROR_CHARS
    run = conn.execute("SELECT status, counts FROM job_run WHERE job = 'metrics'").fetchone()
    assert run is not None and run["status"] == "OK"
    assert run["counts"]["probes"] == 4 and run["counts"]["probes_failed"] == 2
    rates = {
        r["labels"]["upstream"]: r["value_micros"]
        for r in conn.execute(
            "SELECT labels, value_micros FROM metric_point WHERE name = 'upstream.error_rate'"
        )
    }
    assert rates == {"data_api": 1_000_000, "clob": 0, "gamma": 0, "chain": 1_000_000}


def test_an_error_status_or_garbage_is_a_failed_probe_with_a_bounded_reason() -> None:
    answers = {
        "/": httpx.Response(500, text="<html>" + "upstream exploded " * 500 + "</html>"),
        "/time": httpx.Response(200, text="<html>not a number</html>"),
        "/markets": httpx.Response(200, json={"markets": "not a list"}),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return answers[request.url.path.removeprefix("/x")]

    s = settings.Settings(
        data_api_url="http://probe.invalid/x",
        clob_url="http://probe.invalid/x",
        gamma_url="http://probe.invalid/x",
        chain_ws_url=f"ws://127.0.0.1:{dead_port()}",
    )
    got = {p.upstream: p for p in probes.probe_all(s, transport=httpx.MockTransport(handler))}
    assert not any(p.ok for p in got.values())
    assert got["data_api"].status == 500 and got["data_api"].error is not None
    assert got["data_api"].error.startswith("HTTP 500 <html>upstream exploded")
    assert got["clob"].status == 200 and "JSONDecodeError" in str(got["clob"].error)
    assert got["gamma"].status == 200 and "unexpected answer" in str(got["gamma"].error)
    for p in got.values():
        assert p.error is not None and len(p.error) <= probes.ERROR_CHARS and "\n" not in p.error


def test_a_wrong_health_answer_or_a_runaway_body_fails_the_probe() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "data.invalid":
            return httpx.Response(200, json={"data": "DEGRADED"})
        return httpx.Response(200, content=b"[" + b"1," * probes.BODY_MAX + b"1]")

    client = httpx.Client(transport=httpx.MockTransport(handler))
    health, gamma = probes.TARGETS[0], probes.TARGETS[2]
    said = probes.probe_http(client, health, "http://data.invalid")
    assert not said.ok and said.error == "health check says 'DEGRADED'"
    big = probes.probe_http(client, gamma, "http://gamma.invalid")
    assert not big.ok and big.error == f"answer over {probes.BODY_MAX} bytes"


@pytest.mark.sandbox
def test_a_slow_upstream_fails_its_probe_within_the_timeout() -> None:
    with testing.running_sandbox(seed=7, clock="manual", anchor_ms=ANCHOR) as slow:
        slow.set_faults(slow_rate=1.0, slow_ms=3000)
        got = probes.probe_all(pointed(slow), timeout_s=0.5)
    by = {p.upstream: p for p in got}
    for upstream in ("data_api", "clob", "gamma"):
        p = by[upstream]
        assert not p.ok and "Timeout" in str(p.error), p
        assert 400_000 <= p.latency_micros < 2_000_000
    assert by["chain"].ok  # faults touch the HTTP routes only


def serve_replies(replies: dict[str, object]) -> tuple[str, object]:
    """A WebSocket JSON-RPC server answering each method with a fixed `result` (or,
    given bytes, that raw frame); returns its URL and the server."""

    def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            for frame in ws:
                request = json.loads(frame)
                reply = replies[request["method"]]
                if isinstance(reply, bytes):
                    ws.send(reply.decode())
                else:
                    ws.send(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": reply}))

    server = serve(handler, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"ws://127.0.0.1:{server.socket.getsockname()[1]}", server


@pytest.mark.parametrize(
    ("replies", "why"),
    [
        ({"eth_blockNumber": "zz"}, "unexpected answer"),
        ({"eth_blockNumber": b"not json {"}, "eth_blockNumber: not JSON"),
        ({"eth_blockNumber": "0x10", "eth_getBlockByNumber": None}, "no block 16"),
        (
            {"eth_blockNumber": "0x10", "eth_getBlockByNumber": {"number": "0x10"}},
            "unexpected answer: timestamp",
        ),
        (
            {
                "eth_blockNumber": "0x10",
                "eth_getBlockByNumber": {"number": "0x10", "timestamp": "0x5"},
            },
            "not Unix seconds",
        ),
    ],
)
def test_a_chain_answer_that_is_not_a_head_fails_the_probe(
    replies: dict[str, object], why: str
) -> None:
    url, server = serve_replies(replies)
    try:
        p = probes.probe_chain(url, timeout_s=2.0)
    finally:
        server.shutdown()  # type: ignore[attr-defined]
    assert not p.ok and p.head_block is None and why in str(p.error), p.error


def test_a_chain_node_that_never_answers_fails_within_the_timeout() -> None:
    other = json.dumps({"jsonrpc": "2.0", "id": 99, "result": "0x1"}).encode()  # not ours
    url, server = serve_replies({"eth_blockNumber": other})
    try:
        p = probes.probe_chain(url, timeout_s=0.5)
    finally:
        server.shutdown()  # type: ignore[attr-defined]
    assert not p.ok and "TimeoutError" in str(p.error), p.error
    assert 400_000 <= p.latency_micros < 2_000_000
