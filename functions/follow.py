"""Manage followed wallets: `python -m functions.follow add|list|enable|disable|mode`.

`add` registers the wallet (and any `--proxy` wallets whose fills are the same trader's),
then seeds its shadow book from `/positions`, so later SELLs of older positions are
right. If the Data API cannot answer, the user is added unseeded (saying which host it
tried and why that failed) and `poll` seeds it on its next run. A demo database (one
that follows the sandbox's leaders) is never seeded from the real Polymarket because the
base URLs were left unset: `poll`, run with the sandbox's URLs, seeds it. Every change
is written to `audit_log`.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from psycopg.types.json import Jsonb

from common.runtime import jobs, settings
from common.store import db
from common.upstream import http
from functions import poll

MODES = ("ACTIVE", "BUY_ONLY", "SELL_ONLY", "PAUSED", "REMOVED")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


class FollowError(ValueError):
    pass


def parse_wallet(text: str) -> str:
    """Returns the wallet lowercased; raises FollowError on anything else."""
    value = text.strip()
    if not _ADDRESS.match(value):
        raise FollowError(f"not a wallet address (0x + 40 hex digits): {text!r}")
    if int(value, 16) == 0:  # no one's wallet: its "fills" would be mints and burns
        raise FollowError("the zero address is not a wallet")
    return value.lower()


def _audit(
    conn: db.Conn,
    action: str,
    target: str,
    before: Any,
    after: Any,
    actor: str = "cli",
    request_id: str | None = None,
) -> None:
    conn.execute(
        "INSERT INTO audit_log (actor, action, target_type, target_id, before, after, request_id)"
        " VALUES (%(actor)s, %(a)s, 'followed_user', %(t)s, %(b)s, %(f)s, %(r)s)",
        {
            "actor": actor,
            "a": action,
            "t": target,
            "b": Jsonb(before),
            "f": Jsonb(after),
            "r": request_id,
        },
    )


def _row(conn: db.Conn, key: str) -> dict[str, Any]:
    where = "id = %(k)s::bigint" if key.isdigit() else "profile_wallet = %(k)s"
    value = key if key.isdigit() else parse_wallet(key)
    row = conn.execute(
        f"SELECT id, label, profile_wallet, enabled, copy_mode FROM followed_user WHERE {where}",  # noqa: S608
        {"k": value},
    ).fetchone()
    if row is None:
        raise FollowError(f"no followed user {key!r}")
    return row


def add(
    conn: db.Conn,
    wallet: str,
    label: str,
    proxies: list[str],
    now: Any,
    *,
    actor: str = "cli",
    request_id: str | None = None,
) -> int:
    """Adds a followed user with its wallets (audited as `actor`); returns its id."""
    profile = parse_wallet(wallet)
    others = [parse_wallet(p) for p in proxies]
    if not 1 <= len(label.strip()) <= 100:
        raise FollowError("label must be 1 to 100 characters")
    with conn.transaction():
        taken = conn.execute(
            "SELECT wallet FROM followed_user_proxy_wallet WHERE wallet = ANY(%(w)s)",
            {"w": [profile, *others]},
        ).fetchall()
        if taken:
            raise FollowError(f"already followed: {', '.join(r['wallet'] for r in taken)}")
        row = conn.execute(
            "INSERT INTO followed_user (label, profile_wallet, followed_at)"
            " VALUES (%(l)s, %(w)s, %(t)s) RETURNING id",
            {"l": label.strip(), "w": profile, "t": now},
        ).fetchone()
        assert row is not None
        user_id = int(row["id"])
        for w in dict.fromkeys([profile, *others]):
            conn.execute(
                "INSERT INTO followed_user_proxy_wallet (followed_user_id, wallet)"
                " VALUES (%(u)s, %(w)s)",
                {"u": user_id, "w": w},
            )
        _audit(
            conn,
            "follow.add",
            str(user_id),
            None,
            {"label": label.strip(), "wallets": [profile, *others]},
            actor,
            request_id,
        )
    return user_id


def seed_refusal(conn: db.Conn, s: settings.Settings) -> str | None:
    """Why `add` must not seed from the configured upstreams, or None: a demo database
    (it follows the sandbox's leaders) with a base URL left at the real Polymarket's."""
    defaults = settings.Settings.model_fields
    real = [
        (name, url)
        for name, url in (("data_api_url", s.data_api_url), ("gamma_url", s.gamma_url))
        if url == defaults[name].default
    ]
    if not real:
        return None
    demo = conn.execute(
        "SELECT 1 FROM followed_user WHERE label LIKE %(p)s LIMIT 1",
        {"p": settings.SANDBOX_LEADER_LABEL + "%"},
    ).fetchone()
    if demo is None:
        return None
    name, url = real[0]
    return (
        f"not seeding from {url}: this database follows the sandbox's leaders (a demo one)"
        f" and OCULUS_{name.upper()} is not set; the next poll will seed it"
    )


def seed_failure(ups: http.Upstreams, exc: http.UpstreamError) -> str:
    """What `add` says when seeding failed: the host it tried and why."""
    upstream = getattr(ups, exc.upstream, None)
    host = upstream.base_url if isinstance(upstream, http.Upstream) else exc.upstream
    why = str(exc).removeprefix(f"{exc.upstream}: ")
    return f"could not seed from {host} ({why}); the next poll will seed it"


def set_fields(conn: db.Conn, key: str, **fields: Any) -> dict[str, Any]:
    """Changes `enabled` and/or `copy_mode` of one user; returns the row after."""
    with conn.transaction():
        before = _row(conn, key)
        conn.execute(
            "UPDATE followed_user SET enabled = %(enabled)s, copy_mode = %(mode)s,"
            " updated_at = now() WHERE id = %(id)s",
            {
                "id": before["id"],
                "enabled": fields.get("enabled", before["enabled"]),
                "mode": fields.get("copy_mode", before["copy_mode"]),
            },
        )
        after = _row(conn, str(before["id"]))
        _audit(conn, "follow.update", str(before["id"]), before, after)
    return after


def list_users(conn: db.Conn) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT u.id, u.label, u.profile_wallet, u.enabled, u.copy_mode, u.seeded_at,
                  array_agg(w.wallet ORDER BY w.id) AS wallets,
                  (SELECT count(*) FROM trade_event t WHERE t.followed_user_id = u.id) AS fills
           FROM followed_user u JOIN followed_user_proxy_wallet w ON w.followed_user_id = u.id
           GROUP BY u.id ORDER BY u.id"""
    ).fetchall()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m functions.follow",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--database-url", help="default: DATABASE_URL or the embedded server")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("add", help="follow a wallet and seed its shadow book")
    a.add_argument("wallet")
    a.add_argument("--label", required=True)
    a.add_argument("--proxy", action="append", default=[], help="another wallet of the trader")
    a.add_argument("--no-seed", action="store_true", help="leave seeding to the next poll")
    sub.add_parser("list", help="list followed users")
    for name in ("enable", "disable"):
        sub.add_parser(name, help=f"{name} a user (id or wallet)").add_argument("user")
    m = sub.add_parser("mode", help="set a user's copy mode")
    m.add_argument("user")
    m.add_argument("mode", choices=MODES)
    return p


def seed(conn: db.Conn, s: settings.Settings, user_id: int) -> None:
    """Seeds the new user's shadow book, or says why not (the next poll will)."""
    refusal = seed_refusal(conn, s)
    if refusal is not None:
        print(refusal)
        return
    user = next(u for u in poll.followed_users(conn) if u.id == user_id)
    with http.make_upstreams(s) as ups:
        try:
            n = poll.seed_user(conn, ups, user, jobs.utcnow())
        except http.UpstreamError as exc:
            print(seed_failure(ups, exc))
            return
    print(f"seeded shadow book with {n} positions")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    s = settings.get()
    jobs.setup_logging(s)
    try:
        conn = db.connect(args.database_url, autocommit=True)
    except db.DatabaseUnavailable as exc:
        print(f"follow: database unavailable: {exc}", file=sys.stderr)
        return 1
    try:
        if args.command == "add":
            user_id = add(conn, args.wallet, args.label, args.proxy, jobs.utcnow())
            print(f"followed {args.wallet.lower()} as user {user_id} ({args.label})")
            if not args.no_seed:
                seed(conn, s, user_id)
        elif args.command == "list":
            for r in list_users(conn):
                seeded = r["seeded_at"].isoformat() if r["seeded_at"] else "not seeded"
                print(
                    f"{r['id']:>4}  {r['label']:<20} {r['copy_mode']:<9} "
                    f"{'enabled' if r['enabled'] else 'disabled':<8} fills={r['fills']:<6} "
                    f"{seeded}  {' '.join(r['wallets'])}"
                )
        elif args.command in ("enable", "disable"):
            row = set_fields(conn, args.user, enabled=args.command == "enable")
            print(f"user {row['id']} {args.command}d")
        else:
            row = set_fields(conn, args.user, copy_mode=args.mode)
            print(f"user {row['id']} mode {row['copy_mode']}")
    except FollowError as exc:
        print(f"follow: {exc}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
