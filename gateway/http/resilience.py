"""What the API answers when the database cannot take a value or a write: a number past 64 bits
(422), a full disk (507), a file locked by another process past the busy timeout (503, retry).
Nothing was stored; the gateway keeps serving reads and keeps running, and devices keep their
un-acknowledged events and re-send them (docs/operations.md, tests/hil/test_faults.py)."""
from __future__ import annotations

import logging
import sqlite3

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

log = logging.getLogger("gateway.resilience")


def storage_error(exc: sqlite3.Error) -> tuple[int, str, dict[str, str]] | None:
    text = str(exc).lower()
    if "full" in text:
        return (507, ("the gateway's disk is full: nothing was stored; free space on the "
                     "gateway (docs/operations.md) and retry"), {"Retry-After": "30"})
    if "locked" in text or "busy" in text:
        return (503, ("the gateway's database is locked by another process (a backup or a "
                     "sqlite3 shell?): nothing was stored; retry shortly"), {"Retry-After": "5"})
    return None


def install(app: FastAPI) -> None:
    @app.exception_handler(OverflowError)
    async def _too_big(request: Request, exc: OverflowError) -> JSONResponse:
        # an integer past SQLite's 64 bits in a path or query (found by tests/gateway/test_fuzz.py on
        # POST /alerts/{id}/ack): the caller's error, not ours
        return JSONResponse(status_code=422, content={
            "detail": f"a number in {request.url.path} is out of range (max 2^63-1)"})

    @app.exception_handler(sqlite3.OperationalError)
    async def _storage(request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        mapped = storage_error(exc)
        if mapped is None:
            raise exc
        status, detail, headers = mapped
        log.error("storage refused %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(status_code=status, content={"detail": detail}, headers=headers)
