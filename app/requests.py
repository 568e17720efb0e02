"""What the apps' ingresses share: the client-error type, the JSON body reader, integer
parameters, the error reply (their handle codec is in app/contracts.py).

No Ray import: the apps' pure parsing code and its tests use it as is.
"""

import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse


class BadRequest(ValueError):
    """A client error: HTTP 400 / gRPC INVALID_ARGUMENT. The message names the field."""


def bad_request(error: BadRequest) -> JSONResponse:
    return JSONResponse({"error": str(error)}, status_code=400)


def subpath(request: Request) -> str:
    """The path below the route prefix (Serve sets the prefix as the ASGI root_path)."""
    path: str = request.scope.get("path", "/")
    root: str = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return "/" + path.strip("/")


async def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object (empty body: no fields)."""
    body = await request.body()
    if not body:
        return {}
    try:
        data = json.loads(body)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError both
        raise BadRequest(f"body: malformed JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"body: expected a JSON object; got {type(data).__name__}")
    return data


def int_param(params: Mapping[str, Any], name: str, default: int) -> int:
    """One integer field from query parameters (strings) or a JSON object; absent or "": default."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if isinstance(raw, str):
        try:
            return int(raw)
        except ValueError:
            raise BadRequest(f"{name} must be an integer; got {raw!r}") from None
    # bool is an int subclass; "size": true is a client bug, not 1.
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise BadRequest(f"{name} must be an integer; got {raw!r}")
    return raw
