"""GET /healthz and /readyz (SPEC §11): no login, loopback only, readiness from the
database and the scheduler's and the listener's heartbeats."""

from __future__ import annotations

import warnings
from datetime import timedelta
from pathlib import Path

from starlette.exceptions import StarletteDeprecationWarning

from api import app
from common.runtime import jobs
from common.store import db
from tests.test_api import make_settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

LOCAL = ("127.0.0.1", 50000)


def beat(conn: db.Conn, process: str, age_s: float) -> None:
    """A heartbeat of `process`, `age_s` old."""
    jobs.heartbeat(conn, process, jobs.utcnow() - timedelta(seconds=age_s), {})


def test_healthz_and_readyz_answer_loopback_without_a_login(
    db_url: str, conn: db.Conn, tmp_path: Path
) -> None:
    with TestClient(app.create_app(make_settings(tmp_path), db_url), client=LOCAL) as local:
        assert local.get("/healthz").json() == {"ok": True}
        r = local.get("/readyz")
        assert r.status_code == 503  # no scheduler or listener has beaten yet
        names = {c["name"]: c["ok"] for c in r.json()["checks"]}
        assert names == {"database": True, "scheduler": False, "listen": False}
        beat(conn, "scheduler", 1)
        beat(conn, "listen", 1)
        beat(conn, "site_builder", 9_999)  # not a readyz check (the dashboard's own)
        r = local.get("/readyz")
        assert r.status_code == 200 and r.json()["ready"] is True, r.json()
        beat(conn, "listen", 9_999)
        r = local.get("/readyz")
        assert r.status_code == 503
        assert [c["name"] for c in r.json()["checks"] if not c["ok"]] == ["listen"]


def test_healthz_and_readyz_are_not_served_off_the_machine_or_through_a_proxy(
    db_url: str, tmp_path: Path
) -> None:
    made = app.create_app(make_settings(tmp_path), db_url)
    with TestClient(made, client=("192.0.2.7", 40000)) as remote:
        assert remote.get("/healthz").status_code == 404
        assert remote.get("/readyz").status_code == 404
    with TestClient(made, client=LOCAL) as proxied:
        headers = {"X-Forwarded-For": "192.0.2.7"}
        assert proxied.get("/healthz", headers=headers).status_code == 404


def test_metrics_in_prometheus_format_to_loopback_or_a_session(
    db_url: str, conn: db.Conn, tmp_path: Path
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from common.store import metrics
    from tests.test_api import log_in

    at = jobs.utcnow()
    metrics.write(
        conn,
        [
            metrics.Point("queue.groups_undecided", {}, 3.0),
            metrics.Point("job.last_ok_age_s", {"job": 'pr"ice'}, 12.5),
        ],
        at,
    )
    made = app.create_app(make_settings(tmp_path), db_url)
    with TestClient(made, client=LOCAL) as local:
        r = local.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(r.text)}
        assert {s.value for s in families["oculus_queue_groups_undecided"].samples} == {3.0}
        (sample,) = families["oculus_job_last_ok_age_s"].samples
        assert sample.labels == {"job": 'pr"ice'} and sample.value == 12.5
        assert families["oculus_listener_connected"].samples == []  # none written yet
        assert "Copy groups closed" in families["oculus_queue_groups_undecided"].documentation
    with TestClient(made, client=("192.0.2.7", 40000)) as remote:
        assert remote.get("/metrics").status_code == 401  # off the machine: a session
        log_in(remote)
        assert "oculus_queue_groups_undecided" in remote.get("/metrics").text
