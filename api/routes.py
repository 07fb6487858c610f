"""The write routes (SPEC §8). Every route needs the admin's session; a write takes a
JSON body from our own pages only (`deps`), read after the session check and capped in
size, validated by `models`, and done with its audit row in one transaction (`writes`).
Errors are `{"detail": "..."}`: 400 refused, 404 unknown, 409 changed meanwhile, 413
too large, 415 not JSON, 422 invalid."""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any, ParamSpec, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from api import deps, models
from common.runtime.jobs import utcnow
from common.store import writes

router = APIRouter()
MAX_BODY = 64 * 1024  # the largest real body (a config test) is a few KB
M = TypeVar("M", bound=BaseModel)
P = ParamSpec("P")
T = TypeVar("T")


async def _read(request: Request) -> bytes:
    """Returns the body; 413 past MAX_BODY (stops reading there)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise HTTPException(413, f"request body over {MAX_BODY} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise HTTPException(413, f"request body over {MAX_BODY} bytes")
    return bytes(raw)


class _DuplicateKeys(ValueError):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        counts = collections.Counter(k for k, _ in pairs)
        twice = sorted(k for k, n in counts.items() if n > 1)
        raise _DuplicateKeys(f"a key given twice: {', '.join(twice)[:200]}")
    return found


def refuse_duplicate_keys(raw: bytes) -> None:
    """422 when a JSON object in the body names a key twice: parsers disagree on which
    one counts (the last, here), so such a body has no one meaning. Anything else wrong
    with the body is left to the model to report."""
    try:
        json.loads(raw, object_pairs_hook=_object)
    except _DuplicateKeys as exc:
        error = {"loc": ("body",), "msg": str(exc), "type": "duplicate_key"}
        raise RequestValidationError([error]) from None
    except (ValueError, RecursionError):
        pass


def body(model: type[M], *, empty: bool = False) -> Any:
    """A dependency giving the body as `model`, parsed only once the admin's session and
    the content type have been checked; `empty` allows no body at all."""

    async def parse(request: Request, _admin: deps.Admin, _json: deps.Json) -> Any:
        raw = await _read(request)
        refuse_duplicate_keys(raw)
        try:
            return model.model_validate_json((raw or b"{}") if empty else raw)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in errors]
            ) from None

    return Depends(parse)


def _by(admin: deps.Admin, request_id: deps.RequestId) -> writes.By:
    return writes.By(admin, request_id)


def _call(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    try:
        return fn(*args, **kwargs)
    except writes.WriteError as exc:
        raise HTTPException(exc.status, str(exc)) from exc


By = Annotated[writes.By, Depends(_by)]
Id = Annotated[int, Path(ge=1, le=models.INT64_MAX)]
ConditionId = Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{64}$")]


@router.post("/api/config/global")
def config_global(
    change: Annotated[models.ConfigChange, body(models.ConfigChange)], by: By, conn: deps.Conn
) -> dict[str, Any]:
    return _call(writes.change_config, conn, by, None, change.changes())


@router.post("/api/config/user/{user_id}")
def config_user(
    user_id: Id,
    change: Annotated[models.UserConfigChange, body(models.UserConfigChange)],
    by: By,
    conn: deps.Conn,
) -> dict[str, Any]:
    return _call(writes.change_config, conn, by, user_id, change.changes())


@router.post("/api/control/pause")
def control_pause(
    pause: Annotated[models.Pause, body(models.Pause)], by: By, conn: deps.Conn
) -> dict[str, Any]:
    return _call(writes.pause, conn, by, pause.paused, pause.reason)


@router.post("/api/users", status_code=201)
def follow_user(
    new: Annotated[models.Follow, body(models.Follow)], by: By, conn: deps.Conn
) -> dict[str, Any]:
    return _call(writes.follow_user, conn, by, new.wallet, new.label, new.proxies)


@router.post("/api/users/{user_id}")
def update_user(
    user_id: Id,
    update: Annotated[models.UserUpdate, body(models.UserUpdate)],
    by: By,
    conn: deps.Conn,
) -> dict[str, Any]:
    fields = update.model_dump(exclude_none=True)
    return _call(writes.update_user, conn, by, user_id, fields)


@router.post("/api/users/{user_id}/copy-of")
def copy_of(
    user_id: Id,
    change: Annotated[models.CopyOf, body(models.CopyOf)],
    by: By,
    conn: deps.Conn,
) -> dict[str, Any]:
    return _call(writes.set_copy_of, conn, by, user_id, change.leader)


@router.post("/api/markets/{condition_id}/blacklist")
def blacklist(
    condition_id: ConditionId,
    change: Annotated[models.Blacklist, body(models.Blacklist)],
    by: By,
    conn: deps.Conn,
) -> dict[str, Any]:
    return _call(writes.blacklist, conn, by, condition_id.lower(), change.blacklisted)


@router.post("/api/config/test", status_code=202)
def config_test(
    test: Annotated[models.ConfigTest, body(models.ConfigTest)], by: By, conn: deps.Conn
) -> dict[str, Any]:
    queued = _call(writes.enqueue_test, conn, by, test.proposal(), test.hours)
    return {**queued, "page": f"/config-test/{queued['id']}.html"}


@router.get("/api/config/test/{test_id}")
def config_test_result(test_id: Id, _admin: deps.Admin, conn: deps.Conn) -> dict[str, Any]:
    return _call(writes.config_test, conn, test_id)


@router.post("/api/audit/{audit_id}/revert")
def revert(
    audit_id: Id,
    _body: Annotated[models.Empty, body(models.Empty, empty=True)],
    by: By,
    conn: deps.Conn,
    force: bool = False,
) -> dict[str, Any]:
    return _call(writes.revert, conn, by, audit_id, force)


@router.post("/api/alerts/silence")
def silence(
    change: Annotated[models.Silence, body(models.Silence)], by: By, conn: deps.Conn
) -> dict[str, Any]:
    until = None if change.minutes == 0 else utcnow() + timedelta(minutes=change.minutes)
    return _call(writes.silence, conn, by, change.rule, change.labels, until, change.reason)


@router.get("/api/audit")
def audit(
    _admin: deps.Admin, conn: deps.Conn, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> dict[str, Any]:
    return {"items": writes.audit_rows(conn, limit)}
