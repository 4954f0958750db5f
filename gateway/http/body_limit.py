"""Bounded request bodies: one pure ASGI middleware (responses pass through unbuffered, SSE
is untouched), outside `AuthMiddleware`, so an oversized request costs the same with or
without a token.

Policy: a request body may be at most `DEFAULT_BODY_LIMIT` bytes, unless its route has a row
in `BODY_LIMITS` — (method, path pattern, bytes, why), patterns as in `gateway.http.auth.POLICY`,
first match wins. Over the limit the answer is **413** `{"detail": ...}` (the limit and what
to do) with `Connection: close`:

- `Content-Length` over the limit: refused before the body is read (the application never
  runs; no auth, no routing, no audit row: the refusal is logged with the client address);
- a chunked body that runs over: reading stops at the first chunk past the limit and the
  application's body read fails with the 413 (it never holds more than limit + one chunk);
- the application answers before reading a body whose size is not known to be within the
  limit (e.g. 401 to an anonymous chunked upload): `Connection: close` is added, so the
  server does not go on reading and discarding the rest.

Header and URL sizes: uvicorn's h11 parser refuses (400, connection closed) a request line +
headers that is still incomplete past 16 KiB (`h11_max_incomplete_event_size`), but takes a
larger one that arrives complete in one socket read (up to 256 KiB). So this middleware also
answers **431** when the target and headers together exceed `MAX_HEAD` (16 KiB).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException

from gateway.http.paths import match as _match

log = logging.getLogger("gateway.body_limit")

KiB = 1024

#: Every request body, unless its route is in BODY_LIMITS. The largest legitimate body today
#: is a device command (its MQTT envelope is capped at 4 KiB by the protocol); a POS receipt
#: of ~1,800 lines, a webhook with 32 patterns and a 2,000-character URL, everything else
#: well under 1 KiB. 64 KiB leaves 16x headroom over the command and is uvicorn's own read
#: buffer high-water mark, so a refused body is never more than one buffer in memory.
DEFAULT_BODY_LIMIT = 64 * KiB

#: Routes that legitimately take more: (method, path pattern, bytes, why).
BODY_LIMITS: tuple[tuple[str, str, int, str], ...] = (
    ("PUT", "/samples/*", 256 * KiB,
     "a catalog entry: free-text `description`, and `image` may be an inline `data:` URI"),
    ("POST", "/purchases/import", 2 * 1024 * KiB,
     "a day's receipts as CSV: ~40,000 lines of a busy store's POS export"),
    ("POST", "/firmware", 1024 * KiB,
     "a firmware bundle (zip): the firmware is ~70 KB of .mpy; gateway.devices.ota.MAX_BUNDLE"),
)

#: Request target (path + query) and headers together, bytes. The largest legitimate head is
#: a browser's EventSource with `?access_token=` and its usual headers: well under 2 KiB.
MAX_HEAD = 16 * KiB

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


def body_limit(method: str, path: str) -> int:
    for meth, pattern, limit, _why in BODY_LIMITS:
        if meth == method and _match(pattern, path):
            return limit
    return DEFAULT_BODY_LIMIT


def _size(n: int) -> str:
    return f"{n // KiB} KiB" if n % KiB == 0 else f"{n} bytes"


def too_large_detail(method: str, path: str, limit: int, declared: int | None = None) -> str:
    got = f" (Content-Length {declared})" if declared is not None else ""
    return (f"request body too large{got}: {method} {path} takes at most {_size(limit)}. "
            "Send a smaller body (split large lists over several requests); "
            "docs/security.md lists the limits")


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body runs over its limit. An HTTPException, so
    FastAPI passes it through its body parsing and answers the project's `{"detail": ...}`
    (and AuthMiddleware audits it)."""

    def __init__(self, detail: str) -> None:
        super().__init__(413, detail, headers={"Connection": "close"})


def _framing(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bool, int]:
    """(declared Content-Length or None, chunked?, bytes of the headers)"""
    length: int | None = None
    chunked = False
    size = 0
    for k, v in headers:
        size += len(k) + len(v) + 4
        if k == b"content-length":
            try:
                length = int(v)
            except ValueError:  # h11 refuses these before we run; be safe anyway
                length = None
                chunked = True  # unknown size: treat like a stream
        elif k == b"transfer-encoding" and b"chunked" in v.lower():
            chunked = True
    return length, chunked, size


class BodyLimitMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.counters = {"too_large_declared": 0, "too_large_streamed": 0, "head_too_large": 0}

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared, chunked, head = _framing(scope["headers"])
        head += len(scope.get("raw_path", b"")) + len(scope.get("query_string", b""))
        if head > MAX_HEAD:
            self.counters["head_too_large"] += 1
            await _send_error(send, 431, f"request target and headers are {head} bytes; at most "
                                         f"{_size(MAX_HEAD)}: shorten the URL or the headers")
            return
        if not chunked and not declared:  # no body: nothing to bound
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        limit = body_limit(method, path)
        if not chunked:
            assert declared is not None
            if declared <= limit:  # h11 delivers exactly Content-Length bytes: bounded
                return await self.app(scope, receive, send)
            self.counters["too_large_declared"] += 1
            log.warning("body refused status=413 ip=%s %s %s content-length=%d limit=%d",
                        (scope.get("client") or ("?",))[0], method, path, declared, limit)
            await _send_error(send, 413, too_large_detail(method, path, limit, declared))
            return

        received = 0
        complete = over = started = False

        async def limited() -> dict[str, Any]:
            nonlocal received, complete, over
            if over:
                raise BodyTooLarge(too_large_detail(method, path, limit))
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    self.counters["too_large_streamed"] += 1
                    log.warning("body refused status=413 ip=%s %s %s streamed>%d limit=%d",
                                (scope.get("client") or ("?",))[0], method, path, received,
                                limit)
                    raise BodyTooLarge(too_large_detail(method, path, limit))
                if not message.get("more_body", False):
                    complete = True
            return message

        async def closing(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if not complete:  # the rest of a stream of unknown size: do not drain it
                    headers = [h for h in message.get("headers", ()) if h[0] != b"connection"]
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, limited, closing)
        except BodyTooLarge as exc:  # the app let it through instead of answering it
            if started:
                raise
            await _send_error(send, 413, exc.detail)


async def _send_error(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def annotate_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Every operation that takes a body documents its 413 and its limit."""
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict) or "requestBody" not in op:
                continue
            concrete = path.replace("{", "").replace("}", "")  # /samples/{id} -> /samples/id
            limit = body_limit(method.upper(), concrete)
            why = next((w for m, p, _l, w in BODY_LIMITS
                        if m == method.upper() and _match(p, concrete)), None)
            if why is not None:
                note = (f"Request body limit: {_size(limit)} (the default is "
                        f"{_size(DEFAULT_BODY_LIMIT)}): {why}.")
                op["description"] = (op.get("description", "") + "\n\n" + note).strip()
            op.setdefault("responses", {}).setdefault("413", {
                "description": f"request body over {_size(limit)} (refused before it is "
                               "read when Content-Length says so)"})
    return schema


def install(app: Any) -> None:
    """Outermost middleware (call after auth.install's add_middleware) + OpenAPI notes."""
    app.add_middleware(BodyLimitMiddleware)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = annotate_openapi(generate())
        return app.openapi_schema

    app.openapi = openapi
