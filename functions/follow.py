"""Manage followed wallets: `python -m functions.follow add|list|enable|disable|mode|copy-of`.

`add` registers the wallet (and any `--proxy` wallets whose fills are the same trader's),
then seeds its shadow book from `/positions`, so later SELLs of older positions are
right. If the Data API cannot answer, the user is added unseeded (saying which host it
tried and why that failed) and `poll` seeds it on its next run. A demo database (one
that follows the sandbox's leaders) is never seeded from the real Polymarket because the
base URLs were left unset: `poll`, run with the sandbox's URLs, seeds it. Every change
is written to `audit_log`.

`add 0xMINE --label mine --copy-of LEADER` (or `copy-of USER LEADER` later, `copy-of
USER none` to undo) marks a wallet as the admin's own copy of a leader (id or wallet):
it is polled like any other, its shadow book is the admin's real portfolio, its fills
are not copied, and the score job pairs them with the leader's groups (SPEC §10).
"""

from __future__ import annotations

import argparse
import sys

from common.runtime import jobs, settings
from common.store import budget, db, polling, users
from common.upstream import http


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
    a.add_argument("--copy-of", metavar="LEADER", help="the admin's copy wallet of this leader")
    sub.add_parser("list", help="list followed users")
    for name in ("enable", "disable"):
        sub.add_parser(name, help=f"{name} a user (id or wallet)").add_argument("user")
    m = sub.add_parser("mode", help="set a user's copy mode")
    m.add_argument("user")
    m.add_argument("mode", choices=users.MODES)
    c = sub.add_parser("copy-of", help="mark a user as the admin's copy wallet of a leader")
    c.add_argument("user")
    c.add_argument("leader", help="the leader's id or wallet, or 'none' to unmark")
    return p


def seed(conn: db.Conn, s: settings.Settings, user_id: int) -> None:
    """Seeds the new user's shadow book, or says why not (the next poll will)."""
    refusal = seed_refusal(conn, s)
    if refusal is not None:
        print(refusal)
        return
    user = next(u for u in polling.followed_users(conn) if u.id == user_id)
    with budget.make_upstreams(s) as ups:
        try:
            n = polling.seed_user(conn, ups, user, jobs.utcnow())
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
            leader = users.leader_id(conn, args.copy_of) if args.copy_of else None
            user_id = users.add(
                conn, args.wallet, args.label, args.proxy, jobs.utcnow(), copy_of=leader
            )
            copy = f", the copy wallet of user {leader}" if leader else ""
            print(f"followed {args.wallet.lower()} as user {user_id} ({args.label}){copy}")
            if not args.no_seed:
                seed(conn, s, user_id)
        elif args.command == "list":
            for r in users.list_users(conn):
                seeded = r["seeded_at"].isoformat() if r["seeded_at"] else "not seeded"
                print(
                    f"{r['id']:>4}  {r['label']:<20} {r['copy_mode']:<9} "
                    f"{'enabled' if r['enabled'] else 'disabled':<8} fills={r['fills']:<6} "
                    f"{seeded}  {' '.join(r['wallets'])}"
                    + (f"  copy of {r['copy_of_user_id']}" if r["copy_of_user_id"] else "")
                )
        elif args.command == "copy-of":
            leader = None if args.leader == "none" else users.leader_id(conn, args.leader)
            row = users.set_copy_of(conn, args.user, leader)
            what = f"the copy wallet of user {leader}" if leader else "not a copy wallet"
            print(f"user {row['id']} is {what}")
        elif args.command in ("enable", "disable"):
            row = users.set_fields(conn, args.user, enabled=args.command == "enable")
            print(f"user {row['id']} {args.command}d")
        else:
            row = users.set_fields(conn, args.user, copy_mode=args.mode)
            print(f"user {row['id']} mode {row['copy_mode']}")
    except users.FollowError as exc:
        print(f"follow: {exc}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
