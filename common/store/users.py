"""Followed users and their wallets (`followed_user`, `followed_user_proxy_wallet`):
follow, list, enable / disable, copy mode. Every change writes its `audit_log` row in the
same transaction. The command line is `functions.follow`; the write API and the launcher
use these directly."""

from __future__ import annotations

import re
from typing import Any

from psycopg.types.json import Jsonb

from common.store import db

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
