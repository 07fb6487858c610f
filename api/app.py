"""The FastAPI application: login, the session check nginx asks before serving anything,
health, and the write routes (`api.routes`)."""

from __future__ import annotations

import ipaddress
import logging
import math
import time
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from api import auth, deps, exposition, routes, throttle
from common.runtime import jobs, settings
from common.store import db, metrics, status

LOGIN_PAGE = "/login.html"
READY_WAIT_S = 2.0  # a monitor's probe: answer before it gives up
log = logging.getLogger(__name__)


def safe_next(target: str | None) -> str:
    """Returns a local path to go to after login (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target if target.isprintable() else "/"


async def login_form(request: Request) -> dict[str, str]:
    """The login form's fields (urlencoded, as the login page posts them; at most 4 KB).
    Parsed here rather than by FastAPI's Form, which needs python-multipart."""
    body = await request.body()
    if len(body) > 4096:
        raise HTTPException(status_code=413, detail="login form too large")
    try:
        fields = urllib.parse.parse_qs(body.decode(), max_num_fields=10, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(status_code=400, detail="unreadable login form") from exc
    return {k: (fields.get(k) or [""])[0] for k in ("user", "password", "next")}


READYZ_CHECKS = ("database", "scheduler", "listen")


def _is_loopback(request: Request) -> bool:
    """The request comes straight from this machine: a loopback peer, and no proxy in
    between (nginx adds X-Forwarded-For)."""
    host = request.client.host if request.client else ""
    try:
        local = ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = False
    return local and "x-forwarded-for" not in request.headers


def _local_or_session(request: Request) -> None:
    """A loopback peer no proxy forwarded, else 401 without the dashboard's session."""
    if not _is_loopback(request):
        deps.require_session(request)


def _loopback_only(request: Request) -> None:
    """404 unless the request comes straight from this machine (nginx does not pass
    these paths on)."""
    if not _is_loopback(request):
        raise HTTPException(status_code=404, detail="Not Found")


def create_app(s: settings.Settings | None = None, database_url: str | None = None) -> FastAPI:
    """Returns the app; the pool opens on startup (database_url, or the configured one)."""
    s = s or settings.get()
    st = deps.State(
        admin=auth.Admin.from_settings(s),
        origins=frozenset(s.public_origins()),
        logins=throttle.LoginBackoff(s.login_failures_allowed, s.login_backoff_max_s),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        st.pool = db.make_pool(database_url or db.database_url(s), max_size=4)
        try:
            yield
        finally:
            st.pool.close()

    app = FastAPI(
        title="Oculus write API",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.oculus = st

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
                "problem": e.get("msg", "invalid"),
            }
            for e in exc.errors()
        ]
        return JSONResponse({"detail": "invalid request", "errors": problems}, status_code=422)

    @app.get("/api/health")
    def health(conn: deps.Conn) -> dict[str, object]:
        row = conn.execute("SELECT paused FROM system_control WHERE id = 1").fetchone()
        return {"ok": True, "paused": bool(row and row["paused"])}

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(db.DatabaseUnavailable)
    async def database_down(request: Request, exc: Exception) -> JSONResponse:
        # A connection lost mid-request (the database restarted or went away): the
        # client may try again; it is not a bug of ours.
        log.warning("%s %s: %s", request.method, request.url.path, deps.first_line(exc))
        problem = await run_in_threadpool(deps.database_problem, st.pool, exc)
        return JSONResponse({"detail": problem}, status_code=503, headers={"Retry-After": "5"})

    def readiness(only: tuple[str, ...] | None = None) -> JSONResponse:
        """The readiness checks (`only` those named), 503 with the failing ones."""
        try:
            if st.pool is None:
                raise db.DatabaseUnavailable("not connected")
            with st.pool.connection(timeout=READY_WAIT_S) as conn:
                checks = status.readiness(conn, jobs.utcnow(), s.reconcile_stale_after_s)
        except (psycopg.OperationalError, db.DatabaseUnavailable) as exc:
            checks = [status.Check("database", False, deps.database_problem(st.pool, exc))]
        if only is not None:
            checks = [c for c in checks if c.name in only]
        body = {"ready": status.ready(checks), "checks": [vars(c) for c in checks]}
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get("/api/ready")
    def ready() -> JSONResponse:
        """Readiness for a monitor: the database answers and the processes beat (503
        with the failing checks otherwise, the database's with its reason). Same checks
        as `python -m functions.ops ready`."""
        return readiness()

    @app.get("/healthz")
    def healthz(request: Request) -> dict[str, bool]:
        """The API process is up (SPEC §11): no database, no login; loopback only."""
        _loopback_only(request)
        return {"ok": True}

    @app.get("/readyz")
    def readyz(request: Request) -> JSONResponse:
        """Ready (SPEC §11): the database answers and the scheduler and the listener
        beat; 503 with the failing checks otherwise. No login; loopback only."""
        _loopback_only(request)
        return readiness(READYZ_CHECKS)

    @app.get("/metrics", dependencies=[Depends(_local_or_session)])  # before the pool
    def prometheus(conn: deps.Conn) -> Response:
        """The metric catalogue's newest values in Prometheus's text format (SPEC §11):
        to a loopback peer directly (a Prometheus on this machine), else only with the
        dashboard's session (through nginx)."""
        body, content_type = exposition.render(metrics.latest(conn))
        return Response(body, media_type=content_type)

    @app.get("/api/auth/check", status_code=204)
    def check(request: Request) -> Response:
        deps.require_session(request)
        return Response(status_code=204)

    @app.post("/api/login")
    async def login(request: Request) -> Response:
        deps.refuse_cross_site(request)
        form = await login_form(request)
        user, password, next_path = form["user"], form["password"], form["next"]
        wait = st.logins.admit(time.monotonic())
        if wait > 0:
            seconds = math.ceil(wait)
            return JSONResponse(
                {"detail": f"too many failed logins: try again in {seconds} s"},
                status_code=429,
                headers={"Retry-After": str(seconds)},
            )
        ok = False
        try:  # scrypt takes a while: in a worker thread, not on the event loop
            ok = await run_in_threadpool(st.admin.check_login, user, password)
        finally:
            locked_s = st.logins.done(time.monotonic(), ok=ok)
        if locked_s:
            log.warning("failed logins from all addresses: logins refused for %.0f s", locked_s)
        if not ok:
            return RedirectResponse(f"{LOGIN_PAGE}?failed=1", status_code=303)
        response = RedirectResponse(safe_next(next_path), status_code=303)
        response.set_cookie(
            auth.COOKIE,
            st.admin.issue(time.time()),
            max_age=int(st.admin.ttl_s),
            httponly=True,
            secure=s.cookie_secure,
            samesite="strict",
            path="/",
        )
        return response

    @app.post("/api/logout")
    def logout(request: Request, request_id: deps.RequestId) -> Response:
        """Ends every session the request's cookies name (two, if one was planted
        beside ours; none, if forged) and clears the cookie: it needs no valid session."""
        deps.refuse_cross_site(request)
        now = time.time()
        tokens = auth.session_cookies(request.headers.getlist("cookie"))
        named = (st.admin.session(t, now) for t in tokens)
        st.revoked.end([s for s in named if s is not None], st.pool, request_id)
        response = RedirectResponse(LOGIN_PAGE, status_code=303)
        response.delete_cookie(auth.COOKIE, path="/", httponly=True, samesite="strict")
        return response

    app.include_router(routes.router)
    return app
