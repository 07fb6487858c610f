"""What every route shares: the database pool, the admin check and the CSRF guard."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated

import psycopg
from fastapi import Depends, HTTPException, Request
from psycopg_pool import ConnectionPool, PoolTimeout

from api import auth, sessions, throttle
from common.runtime import settings
from common.store import db

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
POOL_WAIT_S = 5.0


@dataclass
class State:
    """Process-wide: set by app.create_app, read by the dependencies."""

    admin: auth.Admin
    origins: frozenset[str]  # settings.public_origins(): where our pages are served
    pool: ConnectionPool[db.Conn] | None = None
    revoked: sessions.Revoked = field(default_factory=sessions.Revoked)
    logins: throttle.LoginBackoff = field(default_factory=throttle.LoginBackoff)


def state(request: Request) -> State:
    value: State = request.app.state.oculus
    return value


def same_origin(request: Request) -> bool:
    """Returns whether an unsafe request may be from our own pages: a browser names the
    page that sent it in Origin (or at least Sec-Fetch-Site); a cross-site page cannot
    forge either. Origin is compared with the configured public origins, scheme and
    port included, never with the Host the client sent (which it chooses). Clients that
    send neither are not browsers and carry no ambient cookie, so they pass (they still
    need the session)."""
    sent = request.headers.get("origin")
    if sent is not None:
        try:
            return settings.origin(sent) in state(request).origins
        except ValueError:  # "null" (a sandboxed page, a file), or junk
            return False
    site = request.headers.get("sec-fetch-site")
    return site is None or site in ("same-origin", "none")


def refuse_cross_site(request: Request) -> None:
    """403 unless the request may come from our own pages (see same_origin)."""
    if not same_origin(request):
        raise HTTPException(status_code=403, detail="cross-site request refused")


def session_token(request: Request) -> str | None:
    """Returns the session cookie as sent (`auth.session_cookie`); 401 when it is sent
    twice."""
    try:
        return auth.session_cookie(request.headers.getlist("cookie"))
    except auth.CookieTwice as exc:
        raise HTTPException(status_code=401, detail=f"not logged in: {exc}") from exc


def require_session(request: Request) -> None:
    """401 unless the request carries exactly one session cookie, valid now and not
    ended by a logout."""
    st = state(request)
    session = st.admin.session(session_token(request), time.time())
    if session is None or st.revoked.ended(session, st.pool):
        raise HTTPException(status_code=401, detail="not logged in")


def require_admin(request: Request) -> str:
    """Returns the admin's name; 401 without a valid session, 403 on a cross-site write."""
    st = state(request)
    require_session(request)
    if request.method not in SAFE_METHODS:
        refuse_cross_site(request)
    return st.admin.user


def require_json(request: Request) -> None:
    """415 unless the body is JSON: an HTML form on another site cannot send JSON
    without a CORS preflight, which this API never answers."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise HTTPException(status_code=415, detail="send the body as application/json")


def database_problem(pool: ConnectionPool[db.Conn] | None, exc: Exception) -> str:
    """Returns why the database cannot be used, for a person: the error itself, or, when
    the pool gave no connection in time, whether the server refuses new ones (it is down:
    the reason) or all of ours are busy."""
    if not isinstance(exc, PoolTimeout):
        return f"database unavailable: {first_line(exc)}"
    if pool is None:
        return "database unavailable: not connected"
    conninfo = pool.conninfo if isinstance(pool.conninfo, str) else pool.conninfo()
    try:
        with psycopg.connect(conninfo, connect_timeout=2):
            pass
    except psycopg.Error as probe:
        return f"database unavailable: {first_line(probe)}"
    return "database busy: no pooled connection was free in time, try again in a moment"


def first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def unavailable(pool: ConnectionPool[db.Conn] | None, exc: Exception) -> HTTPException:
    """A 503 saying why, with a Retry-After."""
    return HTTPException(503, database_problem(pool, exc), headers={"Retry-After": "5"})


def connection(request: Request) -> Iterator[db.Conn]:
    """Yields a pooled connection (autocommit; writes open their own transaction)."""
    pool = state(request).pool
    if pool is None:
        raise HTTPException(503, "database unavailable: not connected", {"Retry-After": "5"})
    try:
        conn = pool.getconn(timeout=POOL_WAIT_S)
    except PoolTimeout as exc:
        raise unavailable(pool, exc) from exc
    try:
        conn.autocommit = True
        yield conn
    finally:
        pool.putconn(conn)


def request_id(request: Request) -> str:
    value = request.headers.get("x-request-id", "")
    return value[:64] if value.isprintable() and value else uuid.uuid4().hex


Admin = Annotated[str, Depends(require_admin)]
Json = Annotated[None, Depends(require_json)]
Conn = Annotated[db.Conn, Depends(connection)]
RequestId = Annotated[str, Depends(request_id)]
