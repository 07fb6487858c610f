"""Jobs start in a fresh process every few seconds (the scheduler), so what they import
is their start-up time: heavy libraries stay out until a code path needs them
(benchmarks/cold_start.py measures the time)."""

from __future__ import annotations

import json
import subprocess
import sys

from common.runtime import settings

JOBS = [
    "functions.poll",
    "functions.price",
    "functions.snapshot",
    "functions.rollup",
    "functions.reconcile",
    "functions.config_test",
    "functions.simulate",
    "functions.group",
    "functions.whatif",
    "functions.follow",
    "functions.metrics",
    "functions.notify",
]
# httpx only when a request is made; the rest belong to the site builder and the API.
HEAVY = ["httpx", "httpcore", "matplotlib", "jinja2", "fastapi", "uvicorn", "psycopg_pool"]


def loaded_after(code: str) -> list[str]:
    """Runs `code` in a fresh interpreter; returns which HEAVY modules it loaded."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=settings.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return list(json.loads(done.stdout.splitlines()[-1]))


def test_jobs_import_no_heavy_library() -> None:
    assert loaded_after("\n".join(f"import {m}" for m in JOBS)) == []


def test_upstreams_make_their_client_at_the_first_request() -> None:
    made = (
        "from common.runtime import settings\nfrom common.upstream import http\n"
        "s = settings.Settings(http_max_retries=0, clob_url='http://127.0.0.1:9')\n"
        "ups = http.make_upstreams(s)"
    )
    assert loaded_after(made) == []
    request = "try:\n    ups.clob.get('/book')\nexcept http.UpstreamError:\n    pass"
    assert "httpx" in loaded_after(f"{made}\n{request}")
