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


def copy_of_check(conn: db.Conn, user_id: int, leader_id: int | None) -> None:
    """FollowError unless user `user_id` may be marked as the copy wallet of `leader_id`
    (None: unmarked, always allowed): the leader is another followed user, not itself a
    copy wallet (its fills are not grouped, so nothing would pair), and no wallet is a
    copy of the user."""
    if leader_id is None:
        return
    if leader_id == user_id:
        raise FollowError("a wallet cannot be a copy of itself")
    leader = conn.execute(
        "SELECT copy_of_user_id FROM followed_user WHERE id = %(l)s", {"l": leader_id}
    ).fetchone()
    if leader is None:
        raise FollowError(f"no followed user {leader_id} to copy")
    if leader["copy_of_user_id"] is not None:
        raise FollowError(f"user {leader_id} is itself a copy wallet, not a leader")
    copied = conn.execute(
        "SELECT id FROM followed_user WHERE copy_of_user_id = %(u)s LIMIT 1", {"u": user_id}
    ).fetchone()
    if copied is not None:
        raise FollowError(f"user {user_id} is the leader of copy wallet {copied['id']}")


def leader_id(conn: db.Conn, key: str) -> int:
    """The id of the followed user `key` (id or wallet); FollowError if none."""
    return int(_row(conn, key)["id"])


def set_copy_of(
    conn: db.Conn, key: str, leader: int | None, *, actor: str = "cli",
    request_id: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Marks user `key` as the admin's copy wallet of user `leader` (None: unmarks it),
    audited as `follow.copy_of`; returns {"id", "copy_of_user_id"}."""
    with conn.transaction():
        user = _row(conn, key)
        before = conn.execute(
            "SELECT id, copy_of_user_id FROM followed_user WHERE id = %(u)s FOR UPDATE",
            {"u": user["id"]},
        ).fetchone()
        assert before is not None
        copy_of_check(conn, user["id"], leader)
        conn.execute(
            "UPDATE followed_user SET copy_of_user_id = %(l)s, updated_at = now() WHERE id = %(u)s",
            {"l": leader, "u": user["id"]},
        )
        after = {"id": user["id"], "copy_of_user_id": leader}
        _audit(conn, "follow.copy_of", str(user["id"]), before, after, actor, request_id)
    return after


def add(
    conn: db.Conn,
    wallet: str,
    label: str,
    proxies: list[str],
    now: Any,
    *,
    actor: str = "cli",
    request_id: str | None = None,
    copy_of: int | None = None,
) -> int:
    """Adds a followed user with its wallets (audited as `actor`), the admin's copy
    wallet of user `copy_of` if given; returns its id."""
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
        copy_of_check(conn, 0, copy_of)
        row = conn.execute(
            "INSERT INTO followed_user (label, profile_wallet, followed_at, copy_of_user_id)"
            " VALUES (%(l)s, %(w)s, %(t)s, %(c)s) RETURNING id",
            {"l": label.strip(), "w": profile, "t": now, "c": copy_of},
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
            {"label": label.strip(), "wallets": [profile, *others], "copy_of_user_id": copy_of},
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
                  u.copy_of_user_id,
                  array_agg(w.wallet ORDER BY w.id) AS wallets,
                  (SELECT count(*) FROM trade_event t WHERE t.followed_user_id = u.id) AS fills
           FROM followed_user u JOIN followed_user_proxy_wallet w ON w.followed_user_id = u.id
           GROUP BY u.id ORDER BY u.id"""
    ).fetchall()


def followed_wallets(conn: db.Conn) -> dict[str, int]:
    """Returns wallet (lower case) -> followed_user_id for enabled users not REMOVED."""
    rows = conn.execute(
        """SELECT w.wallet, w.followed_user_id FROM followed_user_proxy_wallet w
           JOIN followed_user u ON u.id = w.followed_user_id
           WHERE u.enabled AND u.copy_mode <> 'REMOVED'"""
    ).fetchall()
    return {r["wallet"].lower(): int(r["followed_user_id"]) for r in rows}
