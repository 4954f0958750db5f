"""API security: bearer tokens with scopes, one policy table, rate limits, the audit log.

Every HTTP request goes through `AuthMiddleware` (one pure ASGI middleware, so SSE streams
are not buffered). It finds the scope a request needs in `POLICY` — (method, path pattern)
→ scopes, first match wins, `*` matches one path segment, a pattern matches that path and
everything below it — and when no row matches it applies the DEFAULT: GET/HEAD need `read`,
anything else needs `admin`. So a route someone adds later is protected until it is given
a row here. `admin` satisfies every scope. Nothing actuates anonymously.

Tokens: `pe_<id>_<secret>`; the database keeps the id, name, scopes and SHA-256 of the
secret (the secret is 32 random bytes: a slow hash buys nothing), never the token.
Create them with `phygital token create --db var/gw.db --name kiosk-1 --role kiosk`.
`PHYGITAL_ADMIN_TOKEN` in the gateway's environment installs a bootstrap admin token (first
start of a store, test harnesses). `?access_token=` works where a header cannot be set
(EventSource in a browser).

Rate limits (token buckets): per token on everything; per client IP on failed
authentications (token guessing); and a much tighter one on code entry, per token and per
IP, for any path with a `code`/`pickup` segment; and per token on the requests of `LIMITED`
(a customer's endless-aisle request). A refusal is 429 with Retry-After.
`Limits` also holds the caps on open live streams (per token and in total), which
`gateway.http.stream.Broadcaster` enforces for `GET /stream`.

Audit: every request that is not a GET/HEAD (any actuation or change, allowed or refused) is
a row of `audit` — when, who (token name or `anonymous`), client IP, method, path, HTTP
status and the outcome the response reported (`status`/`reason` of its JSON). `GET /audit`
(admin) reads it.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from fastapi import FastAPI, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from gateway.aisle import AUTH as AISLE_AUTH
from gateway.aisle import ROLES as AISLE_ROLES
from gateway.aisle import SCOPES as AISLE_SCOPES
from gateway.analytics import AUTH as ANALYTICS_AUTH
from gateway.http.paths import match as _match
from gateway.kinds import registry
from gateway.kinds.registry import auth_rows
from gateway.storage.store import Store

if TYPE_CHECKING:
    from gateway.storage.db import Database

log = logging.getLogger("gateway.auth")

SCOPES = ("read", "requests", "lockers", "operations", "admin", *AISLE_SCOPES,
          *registry.scopes())  # + the kinds' own
ROLES: dict[str, tuple[str, ...]] = {
    "kiosk": ("read", "requests", "aisle"),    # aisle: the endless aisle's step (gateway/aisle/)
    "mirror": ("read", "requests", "aisle"),
    "orders": ("read", "lockers"),
    "staff": ("read", "operations"),
    "admin": ("admin",),
    **AISLE_ROLES,       # customer: the endless aisle and nothing else
    **registry.roles(),  # the kinds' own (gateway/kinds/<kind>/__init__.py)
}
PUBLIC = ()  # no scope needed

#: (method, path pattern, scopes that may). First match wins; see the module docstring. The
#: device kinds' rows (their routes) come from each kind (gateway/kinds/<kind>/__init__.py).
POLICY: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("GET", "/health", PUBLIC),
    ("GET", "/docs", PUBLIC),               # Swagger UI, its assets (/docs/static), OAuth2 redirect
    ("GET", "/openapi.json", PUBLIC),
    ("GET", "/dashboard", PUBLIC),          # static pages: their data calls need tokens
    ("GET", "/web/auth.js", PUBLIC),
    ("GET", "/web/screen.js", PUBLIC),      # customer screens' "out of service" script
    ("GET", "/web/aisle.js", PUBLIC),       # ... and their endless-aisle step (its calls need tokens)
    ("GET", "/audit", ("admin",)),
    ("GET", "/webhooks", ("admin",)),   # receivers' URLs (may hold credentials), payloads
    ("GET", "/storage", ("read",)),     # disk and queue sizes: subscription ids, no URL
    ("GET", "/events/hours", ("read",)),  # events counted per hour (gateway/http/hours.py)
    ("POST", "/alerts/*/ack", ("operations",)),
    ("POST", "/devices/*/commands", ("operations",)),
    ("GET", "/firmware", ("read",)),      # bundles and rollouts (gateway/http/firmware.py)
    ("POST", "/firmware", ("admin",)),    # upload, roll out, halt: new firmware opens every door
    *auth_rows(),
    *ANALYTICS_AUTH,                    # /purchases, /analytics (gateway/analytics/__init__.py)
    *AISLE_AUTH,                        # /aisle/... (gateway/aisle/__init__.py)
)

CODE_SEGMENTS = ("code", "codes", "pickup")
#: requests with a tighter per-token bucket of their own (`Limits.<name>`), on top of `per_token`
LIMITED: tuple[tuple[str, str, str], ...] = (
    ("POST", "/aisle/requests", "aisle_requests"),   # a customer asks: a person, not a script
)


class AuthError(Exception):
    pass


@dataclass(frozen=True)
class Principal:
    id: str
    name: str
    scopes: frozenset[str]

    def may(self, needed: Iterable[str]) -> bool:
        needed = tuple(needed)
        return not needed or "admin" in self.scopes or any(s in self.scopes for s in needed)


ANONYMOUS = Principal("", "anonymous", frozenset())


def required_scopes(method: str, path: str) -> tuple[str, ...]:
    """What a request needs: the first matching POLICY row, else the default."""
    m = "GET" if method == "HEAD" else method
    for meth, pattern, scopes in POLICY:
        if meth == m and _match(pattern, path):
            return scopes
    return ("read",) if m == "GET" else ("admin",)


def _limited(method: str, path: str) -> str:
    """The name of the tighter bucket a request also takes from ("" for none)."""
    return next((name for m, pattern, name in LIMITED if m == method and _match(pattern, path)), "")


def is_code_entry(path: str) -> bool:
    return any(seg in CODE_SEGMENTS for seg in path.strip("/").split("/"))


# -- storage ---------------------------------------------------------------------------------

def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str]:
    parts = token.split("_", 2)  # the secret may contain "_" (urlsafe base64)
    if len(parts) != 3 or parts[0] != "pe" or not parts[1] or not parts[2]:
        raise AuthError("malformed token: expected pe_<id>_<secret>")
    return parts[1], parts[2]


def resolve_scopes(role: str | None, scopes: Iterable[str] = ()) -> list[str]:
    if role and role not in ROLES:
        raise AuthError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    out = list(ROLES[role]) if role else []
    for s in scopes:
        if s not in SCOPES:
            raise AuthError(f"unknown scope {s!r}: one of {', '.join(SCOPES)}")
        if s not in out:
            out.append(s)
    if not out:
        raise AuthError("a token needs a role or at least one scope")
    return out


def create_token(conn: sqlite3.Connection, name: str, scopes: Iterable[str], *,
                 token: str | None = None, now: int | None = None) -> str:
    """Store a new token (hashed) and return it; the only time it is ever shown."""
    if not name or len(name) > 64:
        raise AuthError("name must be 1-64 characters")
    if token is None:
        token = f"pe_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    tid, secret = parse_token(token)
    conn.execute("INSERT OR REPLACE INTO api_tokens (id, name, scopes, hash, created, revoked) "
                 "VALUES (?, ?, ?, ?, ?, NULL)",
                 (tid, name, " ".join(scopes), _digest(secret),
                  now if now is not None else int(time.time() * 1000)))
    return token


def revoke_token(conn: sqlite3.Connection, ident: str) -> int:
    return conn.execute("UPDATE api_tokens SET revoked = ? WHERE (id = ? OR name = ?) "
                        "AND revoked IS NULL", (int(time.time() * 1000), ident, ident)).rowcount


def list_tokens(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [dict(r) | {"scopes": r["scopes"].split()} for r in conn.execute(
        "SELECT id, name, scopes, created, revoked FROM api_tokens ORDER BY created")]


def lookup(store: Store, token: str) -> Principal | None:
    try:
        tid, secret = parse_token(token)
    except AuthError:
        return None
    row = store.conn.execute("SELECT name, scopes, hash, revoked FROM api_tokens WHERE id = ?",
                             (tid,)).fetchone()
    if row is None or row["revoked"] is not None:
        return None
    if not secrets.compare_digest(row["hash"], _digest(secret)):
        return None
    return Principal(tid, row["name"], frozenset(row["scopes"].split()))


def _write_audit(store: Store, rows: list[tuple[Any, ...]]) -> None:
    with store.transaction():
        store.conn.executemany("INSERT INTO audit (t, who, token, ip, method, path, status, "
                               "outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


def read_audit(store: Store, after: int, limit: int, who: str | None) -> list[dict[str, Any]]:
    q = "SELECT * FROM audit WHERE id > ?"
    args: list[Any] = [after]
    if who:
        q += " AND who = ?"
        args.append(who)
    return [dict(r) for r in store.conn.execute(q + " ORDER BY id LIMIT ?", (*args, limit))]


# -- rate limits -------------------------------------------------------------------------------

class Bucket:
    """Token bucket: `rate` per second, `burst` deep. Bounded: idle keys are forgotten."""

    def __init__(self, rate: float, burst: float, max_keys: int = 10_000) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._b: dict[str, tuple[float, float]] = {}

    def take(self, key: str, now: float | None = None) -> float:
        """0.0 if allowed, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        level, last = self._b.get(key, (self.burst, now))
        level = min(self.burst, level + (now - last) * self.rate)
        if level < 1:
            self._b[key] = (level, now)
            return (1 - level) / self.rate
        if key not in self._b and len(self._b) >= self.max_keys:
            self._b.pop(next(iter(self._b)))
        self._b[key] = (level - 1, now)
        return 0.0


@dataclass(frozen=True)
class Limits:
    per_token: tuple[float, float] = (50.0, 200.0)       # requests/s, burst
    auth_fail_per_ip: tuple[float, float] = (0.2, 10.0)  # failed authentications
    code_entry: tuple[float, float] = (1 / 60, 5.0)      # code attempts per token and per IP
    aisle_requests: tuple[float, float] = (0.1, 10.0)    # endless-aisle requests per token
    # open `GET /stream` connections (a count, not a rate): each is a queue the event loop
    # feeds on every commit. A screen needs one or two; 16 covers a dashboard in a few tabs.
    streams_per_token: int = 16
    streams_total: int = 256

    @classmethod
    def from_env(cls) -> Limits:
        """`PHYGITAL_RATE_LIMITS='per_token=5/10,code_entry=0.1/3,streams_per_token=4'`
        overrides (rate/burst; the `streams_*` caps are plain counts)."""
        spec = os.environ.get("PHYGITAL_RATE_LIMITS", "")
        kw: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key, _, val = part.partition("=")
            if key not in cls.__dataclass_fields__:
                raise ValueError(f"PHYGITAL_RATE_LIMITS: unknown limit {key!r}")
            if key.startswith("streams_"):
                if not val.strip().isdigit() or int(val) < 1:
                    raise ValueError(f"PHYGITAL_RATE_LIMITS: {key} must be a whole number >= 1 "
                                     f"(open streams), got {val!r}")
                kw[key] = int(val)
                continue
            rate, _, burst = val.partition("/")
            kw[key] = (float(rate), float(burst))
        return cls(**kw)


# -- the middleware -----------------------------------------------------------------------------

Send = Callable[[dict[str, Any]], Awaitable[None]]


class AuthMiddleware:
    def __init__(self, app: Any, db: Database, limits: Limits | None = None) -> None:
        self.app = app
        self.db = db
        self.limits = limits or Limits.from_env()
        self.token_bucket = Bucket(*self.limits.per_token)
        self.fail_bucket = Bucket(*self.limits.auth_fail_per_ip)
        self.code_bucket = Bucket(*self.limits.code_entry)
        self.limited = {name: Bucket(*getattr(self.limits, name)) for _, _, name in LIMITED}
        self._ready = False
        self._lock = asyncio.Lock()
        self._cache: dict[str, tuple[Principal | None, float]] = {}
        self.counters = {"unauthorized": 0, "forbidden": 0, "rate_limited": 0}

    async def _ensure(self) -> None:
        if self._ready:
            return
        async with self._lock:
            if not self._ready:
                try:
                    await self.db.write(_setup, os.environ.get("PHYGITAL_ADMIN_TOKEN"))
                except sqlite3.OperationalError as exc:  # disk full/locked: tokens may exist
                    log.error("auth setup could not write (%s); retrying on the next request",
                              exc)
                    return
                self._ready = True

    async def _principal(self, token: str) -> Principal | None:
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is not None and hit[1] > now:
            return hit[0]
        p = await self.db.read(lookup, token)
        if len(self._cache) > 1000:
            self._cache.clear()
        self._cache[token] = (p, now + 5.0)  # a revocation takes effect within 5 s
        return p

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        await self._ensure()
        method, path = scope["method"], scope["path"]
        ip = (scope.get("client") or ("?", 0))[0]
        needed = required_scopes(method, path)
        token = _bearer(scope)
        principal = ANONYMOUS
        if token:
            principal = await self._principal(token) or ANONYMOUS
        status, detail, headers = 0, "", {}
        if needed and principal is ANONYMOUS:
            wait = self.fail_bucket.take(ip)
            if wait:
                status, detail = 429, "too many failed authentications from this address"
                headers = {"Retry-After": str(int(wait) + 1)}
            else:
                status = 401
                detail = ("invalid or revoked token" if token else
                          "authentication required: send `Authorization: Bearer <token>` "
                          "(phygital token create)")
                headers = {"WWW-Authenticate": 'Bearer realm="phygital"'}
        elif needed and not principal.may(needed):
            status = 403
            detail = (f"token {principal.name!r} lacks the scope for {method} {path}: needs "
                      f"{' or '.join(needed)}, has {' '.join(sorted(principal.scopes))}")
        else:
            wait = self.token_bucket.take(principal.id or "ip:" + ip) if needed else 0.0
            if not wait and is_code_entry(path) and method != "GET":
                wait = max(self.code_bucket.take("ip:" + ip),
                           self.code_bucket.take("tok:" + principal.id) if principal.id else 0)
            limited = "" if wait else _limited(method, path)
            if limited:
                wait = self.limited[limited].take(principal.id or "ip:" + ip)
            if wait:
                status, detail = 429, "rate limit exceeded: slow down"
                if limited:
                    detail = (f"too many requests of this kind for this token ({limited}): try "
                              f"again in {int(wait) + 1} s")
                headers = {"Retry-After": str(int(wait) + 1)}
        audit = method not in ("GET", "HEAD")
        if status:
            self.counters[{401: "unauthorized", 403: "forbidden", 429: "rate_limited"}[status]] += 1
            body = json.dumps({"detail": detail}).encode()
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()),
                                    *((k.lower().encode(), v.encode()) for k, v in headers.items())]})
            await send({"type": "http.response.body", "body": body})
            if audit or status != 401:
                log.warning("api refused status=%d who=%s ip=%s %s %s", status, principal.name,
                            ip, method, path)
            if audit and status != 429:  # a flood of throttled requests must not fill the disk
                await self._audit(principal, ip, method, path, status, detail)
            return
        scope.setdefault("state", {})["principal"] = principal
        if not audit:
            return await self.app(scope, receive, send)
        seen: dict[str, Any] = {"status": 500, "body": b""}

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body" and len(seen["body"]) < 4096:
                seen["body"] += message.get("body", b"")[:4096]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            await self._audit(principal, ip, method, path, seen["status"],
                              _outcome(seen["body"]))

    async def _audit(self, p: Principal, ip: str, method: str, path: str, status: int,
                     outcome: str) -> None:
        row = (int(time.time() * 1000), p.name, p.id or None, ip, method, path[:512], status,
               outcome[:500])
        try:  # shares the next commit (the response is already sent): no fsync of its own
            await self.db.write_grouped(_write_audit, [row])
        except Exception:  # the action happened; say so loudly in the log
            log.exception("audit write failed row=%r", row)


def _outcome(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    inner = data.get("command")
    cmd: dict[str, Any] = inner if isinstance(inner, dict) else data
    parts = [str(cmd[k]) for k in ("status", "reason") if cmd.get(k)]
    if not parts and data.get("detail"):
        parts = [str(data["detail"])]
    return " ".join(parts)


def _bearer(scope: dict[str, Any]) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == b"authorization":
            scheme, _, value = v.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                return value.strip()
            return None
    qs = scope.get("query_string", b"").decode("latin-1")
    for part in qs.split("&"):
        if part.startswith("access_token="):
            return unquote(part[len("access_token="):]) or None
    return None


def bearer_headers(token: str | None = None) -> dict[str, str]:
    """For the gateway's own clients (demo, CLIs): `token`, else $PHYGITAL_TOKEN, else the
    bootstrap $PHYGITAL_ADMIN_TOKEN; {} when there is none."""
    token = token or os.environ.get("PHYGITAL_TOKEN") or os.environ.get("PHYGITAL_ADMIN_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _setup(store: Store, bootstrap: str | None) -> None:
    if bootstrap:
        create_token(store.conn, "bootstrap-admin", ["admin"], token=bootstrap)


class AuditRowOut(BaseModel):
    id: int
    t: int = Field(description="unix ms")
    who: str = Field(description="token name, or `anonymous`")
    token: str | None = Field(description="token id (never the secret)")
    ip: str | None
    method: str
    path: str
    status: int = Field(description="HTTP status of the answer")
    outcome: str | None = Field(description="`status`/`reason` of the answer's JSON")


class AuditPageOut(BaseModel):
    audit: list[AuditRowOut]
    next_after: int = Field(description="pass as `after` for the next page")


def install(app: FastAPI, db: Database, limits: Limits | None = None) -> None:
    """Protect every route of `app` and add `GET /audit`."""
    @app.get("/audit", tags=["security"], response_model=AuditPageOut)
    async def audit(after: int = Query(0, ge=0, le=2**62, description="audit id to page after"),
                    limit: int = Query(100, ge=1, le=1000),
                    who: str | None = Query(None, max_length=64)) -> dict[str, Any]:
        """Every actuation and change: `t` (ms), `who` (token name), `ip`, `method`, `path`,
        HTTP `status` and `outcome` (the command's status/reason or the refusal)."""
        rows = await db.read(read_audit, after, limit, who)
        return {"audit": rows, "next_after": rows[-1]["id"] if rows else after}

    @app.get("/web/auth.js", include_in_schema=False)
    async def auth_js() -> FileResponse:
        return FileResponse(Path(__file__).with_name("web") / "auth.js",
                            media_type="text/javascript")

    app.add_middleware(AuthMiddleware, db=db, limits=limits)
    from gateway.http import body_limit
    body_limit.install(app)


def cli(argv: list[str] | None = None) -> int:
    """`phygital token create|list|revoke --db var/gw.db ...` (works while the gateway runs)."""
    import argparse
    import sys

    from gateway.storage.store import connect, migrate

    ap = argparse.ArgumentParser(prog="phygital token", description="API tokens (docs/security.md)")
    ap.add_argument("--db", default="var/gw.db", help="the gateway's SQLite file")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create", help="create a token and print it (shown once)")
    c.add_argument("--name", required=True, help="who holds it, e.g. kiosk-1 (the audit's who)")
    c.add_argument("--role", choices=sorted(ROLES), help="kiosk/mirror: read+requests+aisle, "
                   "orders: lockers, staff: operations, customer: the endless aisle only, "
                   "admin: everything")
    c.add_argument("--scope", action="append", default=[], choices=SCOPES,
                   help="extra scope (repeatable)")
    sub.add_parser("list", help="tokens (never the secret)")
    r = sub.add_parser("revoke", help="revoke by id or name (effective within 5 s)")
    r.add_argument("ident")
    args = ap.parse_args(argv)
    conn = connect(args.db)
    try:
        migrate(conn)  # tables of a gateway that never ran on this file (store.MIGRATIONS)
        if args.cmd == "create":
            print(create_token(conn, args.name, resolve_scopes(args.role, args.scope)))
        elif args.cmd == "list":
            for t in list_tokens(conn):
                print(f"{t['id']}  {t['name']:<24} {' '.join(t['scopes']):<28} "
                      f"{'revoked' if t['revoked'] else 'active'}")
        elif not revoke_token(conn, args.ident):
            print(f"no active token {args.ident!r}", file=sys.stderr)
            return 1
    except AuthError as exc:
        print(f"phygital token: {exc}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    return 0
