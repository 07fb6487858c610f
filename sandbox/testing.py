"""Test and benchmark helper: run the sandbox as a subprocess on a free loopback port.

with testing.running_sandbox(seed=7, clock="manual") as sb:
    httpx.get(sb.data_api_url + "/trades", params={"user": sb.leaders[0]})
"""

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


class RunningSandbox:
    """URLs of one running sandbox plus helpers for its control routes."""

    def __init__(self, process: subprocess.Popen, ready: dict[str, Any]):
        self.process = process
        self.ready = ready
        self.port = ready["port"]
        base = f"http://127.0.0.1:{self.port}"
        self.base_url = base
        self.data_api_url = base + "/data-api"
        self.clob_url = base + "/clob"
        self.gamma_url = base + "/gamma"
        self.control_url = base + "/_sandbox"
        self.chain_ws_url = f"ws://127.0.0.1:{self.port}/chain"
        self.market_ws_url = f"ws://127.0.0.1:{self.port}/clob/ws/market"
        self.rtds_ws_url = f"ws://127.0.0.1:{self.port}/rtds"
        self.anchor_ms: int = ready["anchor_ms"]
        self.leaders: list[str] = ready["leaders"]
        self.client = httpx.Client(timeout=10)

    def _post(self, path: str, body: Any) -> Any:
        response = self.client.post(self.control_url + path, json=body)
        response.raise_for_status()
        return response.json()

    def state(self) -> dict[str, Any]:
        return self.client.get(self.control_url + "/state").raise_for_status().json()

    def truth(self, until_ms: int | None = None) -> dict[str, Any]:
        params = {} if until_ms is None else {"until_ms": until_ms}
        return self.client.get(self.control_url + "/truth", params=params).raise_for_status().json()

    def scenario(self) -> dict[str, Any]:
        return self.client.get(self.control_url + "/scenario").raise_for_status().json()

    def set_faults(self, **knobs: Any) -> dict[str, Any]:
        return self._post("/faults", knobs)

    def advance(self, ms: int) -> int:
        return self._post("/clock", {"advance_ms": ms})["now_ms"]

    def set_clock(self, ms: int) -> int:
        return self._post("/clock", {"set_ms": ms})["now_ms"]

    def drop_ws(self) -> int:
        return self._post("/ws/drop", {})["dropped"]

    def now_ms(self) -> int:
        return self.state()["now_ms"]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@contextlib.contextmanager
def running_sandbox(
    seed: int = 7, timeout: float = 15.0, **options: Any
) -> Iterator[RunningSandbox]:
    """Starts `python -m sandbox serve --port 0` with options as flags (clock="manual",
    anchor_ms=..., rate_429=0.1, ...), waits for its ready line, yields, then stops it."""
    argv = [sys.executable, "-m", "sandbox", "serve", "--seed", str(seed), "--port", "0"]
    for name, value in options.items():
        if value is not None:
            argv += [_flag(name), str(value)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    lines: list[str] = []

    def read_ready() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("{"):
                return

    reader = threading.Thread(target=read_ready, daemon=True)
    reader.start()
    reader.join(timeout)
    sandbox = None
    try:
        if not lines or not lines[-1].startswith("{"):
            process.kill()
            _, err = process.communicate(timeout=5)
            raise RuntimeError(f"sandbox did not start: {''.join(lines)}{err}")
        sandbox = RunningSandbox(process, json.loads(lines[-1]))
        yield sandbox
    finally:
        if sandbox is not None:
            sandbox.client.close()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
