"""`make run`: the whole system on this machine, against the bundled sandbox exchange.

Starts (or reuses) the embedded Postgres, applies migrations, points every upstream base
URL at the sandbox on loopback, and runs supervisord in the foreground with
`supervisord.conf`; Ctrl-C stops every process it started.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from common import db, jobs, migrate, nginx, settings


def demo_environment(port: int) -> dict[str, str]:
    """Returns the OCULUS_* variables that point the clients at the sandbox."""
    base = f"http://127.0.0.1:{port}"
    return {
        "OCULUS_DATA_API_URL": f"{base}/data-api",
        "OCULUS_CLOB_URL": f"{base}/clob",
        "OCULUS_GAMMA_URL": f"{base}/gamma",
        "OCULUS_CHAIN_WS_URL": f"ws://127.0.0.1:{port}/chain",
        "OCULUS_SANDBOX_PORT": str(port),
    }


def demo_settings(port: int, **overrides: Any) -> settings.Settings:
    """Returns settings pointed at a sandbox on `port` (tests and benchmarks use it)."""
    env = demo_environment(port)
    values: dict[str, Any] = {k.removeprefix("OCULUS_").lower(): v for k, v in env.items()}
    return settings.Settings(**values, **overrides)


def follow_sandbox_leaders(url: str, seed: int) -> list[str]:
    """Follows the demo scenario's leader wallets (unseeded: the first poll seeds them
    once the sandbox is up); returns the wallets newly followed."""
    from functions import follow
    from sandbox import scenario  # the demo's only use of the sandbox's code

    wallets = [leader["wallet"] for leader in scenario.generate(seed)["leaders"]]
    added = []
    with db.connect(url, autocommit=True) as conn:
        known = {r["wallet"] for r in conn.execute("SELECT wallet FROM followed_user_proxy_wallet")}
        for i, wallet in enumerate(wallets):
            if wallet not in known:
                follow.add(conn, wallet, f"sandbox-leader-{i + 1}", [], jobs.utcnow())
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


def step(message: str) -> None:
    print(f"[oculus] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__)
    parser.add_argument("--sandbox-port", type=int, default=8090)
    parser.add_argument("--sandbox-seed", type=int, default=7)
    parser.add_argument(
        "--check", action="store_true", help="prepare the database and print the plan, then exit"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    s = settings.get()
    started = time.monotonic()
    step("starting Postgres" + ("" if s.database_url else f" (embedded, {s.pgdata})"))
    try:
        url = db.database_url(s)
        with db.connect(url, autocommit=True) as conn:
            applied = migrate.apply(conn)
    except (db.DatabaseUnavailable, migrate.MigrationError) as exc:
        step(f"cannot prepare the database: {exc}")
        return 1
    step(f"database ready; migrations applied: {', '.join(applied) or 'none pending'}")
    followed = follow_sandbox_leaders(url, args.sandbox_seed)
    if followed:
        step(f"following the sandbox's leaders: {', '.join(followed)}")
    env = {
        **os.environ,
        **demo_environment(args.sandbox_port),
        "OCULUS_SANDBOX_SEED": str(args.sandbox_seed),
    }
    (s.var_dir / "log").mkdir(parents=True, exist_ok=True)
    step(f"sandbox exchange: http://127.0.0.1:{args.sandbox_port} (seed {args.sandbox_seed})")
    where = ensure_admin_password(s)
    if nginx.find() is None:
        step(nginx.INSTALL_HINT)
    step(f"dashboard: http://{s.http_host}:{s.http_port}/ — user {s.admin_user}, {where}")
    step(
        f"logs: {s.var_dir / 'log'}; ready in {time.monotonic() - started:.1f}s; "
        "Ctrl-C stops everything"
    )
    if args.check:
        return 0
    conf = settings.ROOT / "supervisord.conf"
    supervisord = os.path.join(os.path.dirname(sys.executable), "supervisord")
    os.execve(supervisord, [supervisord, "-n", "-c", str(conf)], env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
