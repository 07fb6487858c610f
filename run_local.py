"""`make run`: the whole system on this machine, against the bundled sandbox exchange
(`make run-live`: against the configured upstreams, real Polymarket by default).

Starts (or reuses) the embedded Postgres, applies migrations, points every upstream base
URL at the sandbox on loopback and follows its leaders (demo), and runs supervisord with
`supervisord.conf`, printing progress until the first copy attempt shows; Ctrl-C stops
every process, then the embedded Postgres.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import signal
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from common.runtime import jobs, nginx, settings
from common.runtime.supervise import step
from common.store import db, migrate


def demo_environment(port: int) -> dict[str, str]:
    """Returns the OCULUS_* variables that point the clients at the sandbox."""
    base = f"http://127.0.0.1:{port}"
    return {
        "OCULUS_DATA_API_URL": f"{base}/data-api",
        "OCULUS_CLOB_URL": f"{base}/clob",
        "OCULUS_GAMMA_URL": f"{base}/gamma",
        "OCULUS_CHAIN_WS_URL": f"ws://127.0.0.1:{port}/chain",
        "OCULUS_CLOB_WS_URL": f"ws://127.0.0.1:{port}/clob/ws/market",
        "OCULUS_RTDS_WS_URL": f"ws://127.0.0.1:{port}/rtds",
        "OCULUS_SANDBOX_PORT": str(port),
    }


def demo_settings(port: int, **overrides: Any) -> settings.Settings:
    """Returns settings pointed at a sandbox on `port` (tests and benchmarks use it)."""
    env = demo_environment(port)
    values: dict[str, Any] = {k.removeprefix("OCULUS_").lower(): v for k, v in env.items()}
    known = {k: v for k, v in values.items() if k in settings.Settings.model_fields}
    return settings.Settings(**known, **overrides)  # (the sandbox's port is not a setting)


def follow_sandbox_leaders(url: str, seed: int, leaders: int = 3, copiers: int = 0) -> list[str]:
    """Follows the demo scenario's leader wallets (unseeded: the first poll seeds them
    once the sandbox is up), and its copier wallets as the admin's copy wallets of their
    leader; returns the wallets newly followed."""
    from common.store import users
    from sandbox import scenario  # the demo's only use of the sandbox's code

    people = scenario.generate(seed, leaders=leaders, copiers=copiers or None)["leaders"]
    added = []
    with db.connect(url, autocommit=True) as conn:
        known = {r["wallet"] for r in conn.execute("SELECT wallet FROM followed_user_proxy_wallet")}
        ids = {
            r["wallet"]: r["followed_user_id"]
            for r in conn.execute("SELECT wallet, followed_user_id FROM followed_user_proxy_wallet")
        }
        for i, person in enumerate(people):
            wallet = person["wallet"]
            if wallet in known:
                continue
            copy_of = ids.get(person.get("copier_of", ""))
            label = (
                f"{settings.SANDBOX_COPIER_LABEL}{i + 1 - leaders}"
                if "copier_of" in person
                else f"{settings.SANDBOX_LEADER_LABEL}{i + 1}"
            )
            ids[wallet] = users.add(conn, wallet, label, [], jobs.utcnow(), copy_of=copy_of)
            added.append(wallet)
    return added


def ensure_admin_password(s: settings.Settings) -> str:
    """Creates the admin's password on the first start, unless one is configured: its
    hash in var/admin.passwd, the password itself in var/admin.password (mode 0600).
    Returns where the operator finds the password."""
    from api import auth  # hashlib and the settings only: cheap to import

    plain = s.var_dir / "admin.password"
    if s.admin_password_hash is None and not auth.password_file(s).exists():
        password = secrets.token_urlsafe(12)
        auth.set_password(s, password)
        tmp = plain.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        os.replace(tmp, plain)
    stored = s.admin_password_hash or auth.password_file(s).read_text().strip()
    if plain.exists():
        if auth.verify_password(plain.read_text().strip(), stored):
            return f"password in {shown(plain)}"
        plain.unlink()  # changed since with `python -m api passwd`: keep no old password
    return "password as set with `python -m api passwd`"


def shown(path: Path) -> str:
    """Returns the path relative to the checkout when it is inside it."""
    return str(path.relative_to(settings.ROOT)) if path.is_relative_to(settings.ROOT) else str(path)


MILESTONES = (  # what the operator waits for, each since this start
    (
        "first leader fill stored",
        "SELECT min(detect_time) AS t FROM trade_event WHERE detect_time >= %(since)s",
    ),
    (
        "first copy attempt",
        "SELECT min(decision_time) AS t FROM copy_attempt WHERE decision_time >= %(since)s",
    ),
    (
        "equity curves drawable (2 snapshots)",
        "SELECT CASE WHEN count(DISTINCT bucket) >= 2"
        " THEN max(bucket) END AS t FROM portfolio_snapshot"
        " WHERE bucket >= date_trunc('minute', %(since)s::timestamptz)",
    ),
)


def watch(url: str, since: datetime, http_url: str, supervisord_pid: int) -> int:
    """The milestone watcher (`--watch`, a child of common.runtime.supervise): says when the
    dashboard answers and when the first fill, copy attempt and equity points land
    (what the operator waits for), then exits."""
    import httpx  # only here: the watcher's one request

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    pending = list(MILESTONES)
    up = False

    def after() -> str:
        return f"after {(jobs.utcnow() - since).total_seconds():.0f}s"

    while pending or not up:
        time.sleep(1)
        try:
            os.kill(supervisord_pid, 0)
        except ProcessLookupError:
            return 0
        if not up:
            with contextlib.suppress(httpx.HTTPError):
                up = httpx.get(http_url + "login.html", timeout=1).status_code == 200
            if up:
                step(f"dashboard answering at {http_url} {after()}")
        try:
            with db.connect(url, autocommit=True) as conn:
                for name, query in list(pending):
                    row = conn.execute(query, {"since": since}).fetchone()
                    if row and row["t"] is not None:
                        pending.remove((name, query))
                        step(f"{name} {after()}")
        except (db.DatabaseUnavailable, psycopg.Error):
            pass
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__)
    parser.add_argument("--sandbox-port", type=int, default=8090)
    parser.add_argument("--sandbox-seed", type=int, default=7)
    parser.add_argument(
        "--sandbox-leaders", type=int, default=3, help="the sandbox's leaders, all followed"
    )
    parser.add_argument(
        "--sandbox-copiers",
        type=int,
        default=1,
        help="the sandbox's copy wallets of its first leader, followed as your copy wallets",
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="against the configured upstreams (real Polymarket), no sandbox, no demo leaders",
    )
    parser.add_argument(
        "--check", action="store_true", help="prepare the database and print the plan, then exit"
    )
    parser.add_argument("--watch", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--since", type=datetime.fromisoformat, help=argparse.SUPPRESS)
    parser.add_argument("--http-url", help=argparse.SUPPRESS)
    parser.add_argument("--supervisord-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.watch:  # the milestone watcher, started by common.runtime.supervise
        return watch(os.environ["DATABASE_URL"], args.since, args.http_url, args.supervisord_pid)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    s = settings.get()
    started = time.monotonic()
    # Ctrl-C stops the embedded Postgres too, unless it was up before (tests, a shell)
    embedded = s.database_url is None and not db.embedded_running(s)
    step("starting Postgres" + ("" if s.database_url else f" (embedded, {shown(s.pgdata)})"))
    try:
        url = db.database_url(s)
        with db.connect(url, autocommit=True) as conn:
            applied = migrate.apply(conn)
            followed = conn.execute(
                "SELECT count(*) AS n FROM followed_user WHERE enabled AND copy_mode <> 'REMOVED'"
            ).fetchone()
    except (db.DatabaseUnavailable, migrate.MigrationError) as exc:
        step(f"cannot prepare the database: {exc}")
        return 1
    step(f"database ready; migrations applied: {', '.join(applied) or 'none pending'}")
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "OCULUS_VAR_DIR": str(s.var_dir),
        "OCULUS_SANDBOX_AUTOSTART": "false" if args.live else "true",
        "OCULUS_SANDBOX_PORT": str(args.sandbox_port),
        "OCULUS_SANDBOX_SEED": str(args.sandbox_seed),
        "OCULUS_SANDBOX_LEADERS": str(args.sandbox_leaders),
        "OCULUS_SANDBOX_COPIERS": str(args.sandbox_copiers),
    }
    if args.live:
        n = followed["n"] if followed else 0
        step(f"live mode: Data API {s.data_api_url}, CLOB {s.clob_url}, chain {s.chain_ws_url}")
        step(
            f"following {n} traders"
            + ("" if n else "; add one with `python -m functions.follow add 0xWALLET --label NAME`")
        )
    else:
        added = follow_sandbox_leaders(
            url, args.sandbox_seed, args.sandbox_leaders, args.sandbox_copiers
        )
        if added:
            shown_wallets = ", ".join(added[:5]) + (
                f" and {len(added) - 5} more" if len(added) > 5 else ""
            )
            step(f"following the sandbox's leaders: {shown_wallets}")
        env.update(demo_environment(args.sandbox_port))
        step(f"sandbox exchange: http://127.0.0.1:{args.sandbox_port} (seed {args.sandbox_seed})")
    (s.var_dir / "log").mkdir(parents=True, exist_ok=True)
    where = ensure_admin_password(s)
    if nginx.find() is None:
        step(nginx.INSTALL_HINT)
    http_url = f"http://{s.http_host}:{s.http_port}/"
    step(f"dashboard: {http_url} — user {s.admin_user}, {where}")
    step(f"logs: {shown(s.var_dir / 'log')}; ready in {time.monotonic() - started:.1f}s")
    if args.check:
        return 0
    since = jobs.utcnow() - timedelta(seconds=time.monotonic() - started)
    watcher = [sys.executable, "-m", "run_local", "--watch", "--since", since.isoformat()]
    supervise = [
        sys.executable,
        "-m",
        "common.runtime.supervise",
        "--conf",
        str(settings.ROOT / "supervisord.conf"),
    ]
    if embedded:
        supervise.append("--stop-embedded")
    supervise += ["--watch", *watcher, "--http-url", http_url]
    sys.stdout.flush()
    os.execve(sys.executable, supervise, env)  # a small process for the system's lifetime
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
