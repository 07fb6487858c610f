"""Small HTTP helpers shared by the route modules: JSON bodies and query parsing."""

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response


class BadRequest(Exception):
    """Raised by parsers; routes turn it into 400 {"error": ...}."""


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # allow_nan: junk rows deliberately carry NaN, which the real API has been seen to send
    text = json.dumps(body, separators=(",", ":"), allow_nan=True)
    return Response(text, status_code=status, media_type="application/json", headers=headers)


def error(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def sandbox(request: Request) -> Any:
    return request.app.state.sandbox


def int_param(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"invalid {name}: {raw!r}") from None


def float_param(request: Request, name: str, default: float) -> float:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise BadRequest(f"invalid {name}: {raw!r}") from None


def list_param(request: Request, name: str) -> list[str]:
    """Returns the values of a parameter given repeated and/or comma-separated."""
    out: list[str] = []
    for raw in request.query_params.getlist(name):
        out.extend(part.strip() for part in raw.split(",") if part.strip())
    return out


def bool_param(request: Request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.lower()
    if lowered not in ("true", "false", "1", "0"):
        raise BadRequest(f"invalid {name}: {raw!r}")
    return lowered in ("true", "1")


async def json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except ValueError:
        raise BadRequest("request body is not valid JSON") from None
