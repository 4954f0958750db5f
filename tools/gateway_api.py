"""What the operator CLIs (`phygital lockers`, `phygital firmware`) share when they call the
gateway's HTTP API: the request with the token, and how an answer is shown (the JSON on stdout,
a refusal's `detail` on stderr). Exit codes: 0 done, 1 refused, 3 gateway unreachable (the
callers add their own, e.g. 2 for "waits for the device")."""
from __future__ import annotations

import json
import sys
from typing import Any

import httpx

from gateway.http.auth import bearer_headers

UNREACHABLE = 3


def call(url: str, method: str, path: str, token: str | None, timeout: float,
         **kw: Any) -> tuple[httpx.Response, dict[str, Any]] | None:
    """The answer and its body (a non-JSON body as `{"detail": text}`), printed; None when the
    gateway could not be reached (said on stderr)."""
    headers = {**kw.pop("headers", {}), **bearer_headers(token)}
    try:
        r = httpx.request(method, url.rstrip("/") + path, timeout=timeout, headers=headers, **kw)
    except httpx.HTTPError as exc:
        print(f"gateway {url} unreachable: {exc}", file=sys.stderr)
        return None
    try:
        data = r.json()
    except ValueError:
        data = {"detail": r.text}
    print(json.dumps(data, indent=2))
    return r, data


def refused(r: httpx.Response, data: dict[str, Any]) -> int:
    """1 (said on stderr) for a 4xx/5xx answer, else 0."""
    if r.status_code >= 400:
        print(f"refused ({r.status_code}): {data.get('detail')}", file=sys.stderr)
        return 1
    return 0
