"""API security (gateway/http/auth.py) on a real gateway process: 401/403/429, the default policy for
routes not in the table, the audit log, tokens and pickup codes stored hashed."""
from __future__ import annotations

import httpx

from gateway.http import auth
from gateway.storage.store import connect
from hil.fakes import FakeDevice
from hil.harness import GatewayProcess, wait_for
from hil.sim.firmware import ROOT
from tests.support.auth import bearer, token

NO_AUTH = {"Authorization": ""}  # the rig's clients carry an admin token unless told otherwise


def test_policy_table_and_default():
    assert auth.required_scopes("GET", "/health") == ()
    assert auth.required_scopes("POST", "/devices/pad-1/commands") == ("operations",)
    assert auth.required_scopes("POST", "/lockers/b/orders") == ("lockers",)
    assert auth.required_scopes("POST", "/lockers/b/orders/o/load") == ("operations", "lockers")
    # routes nobody put in the table: GET needs read, anything else admin
    assert auth.required_scopes("GET", "/tube/lines") == ("read",)
    assert auth.required_scopes("HEAD", "/tube/lines") == ("read",)
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert auth.required_scopes(method, "/tube/send") == ("admin",)
    assert auth.Principal("x", "k", frozenset({"read", "requests"})).may(("read",))
    assert not auth.Principal("x", "k", frozenset({"read"})).may(("admin",))
    assert auth.Principal("x", "a", frozenset({"admin"})).may(("operations",))


def test_anonymous_and_bad_tokens_get_401(gw):
    assert httpx.get(gw.url + "/health", headers=NO_AUTH).status_code == 200
    for path in ("/devices", "/events", "/stats", "/lockers/x", "/audit"):
        r = httpx.get(gw.url + path, headers=NO_AUTH)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in r.json()["detail"]
    body = {"name": "blink", "idempotency_key": "anon-1"}
    r = httpx.post(gw.url + "/devices/pad-1/commands", json=body, headers=NO_AUTH)
    assert r.status_code == 401  # no anonymous actuation
    for bad in ("nonsense", "pe_nope_nope", auth.create_token.__name__):
        r = httpx.get(gw.url + "/devices", headers=bearer(bad))
        assert r.status_code == 401 and r.json()["detail"] == "invalid or revoked token"


def test_scopes_403_and_audit_of_every_actuation(gw, broker):
    dev = FakeDevice("pad-sec1", broker.port).connect()
    try:
        kiosk, staff = token(gw, "kiosk-1", "kiosk"), token(gw, "staff-1", "staff")
        wait_for(lambda: gw.get("/devices/pad-sec1"), 10, what="device registered")
        assert httpx.get(gw.url + "/devices", headers=bearer(kiosk)).status_code == 200
        cmd = {"name": "blink", "args": {"times": 1}, "idempotency_key": "sec-1"}
        r = httpx.post(gw.url + "/devices/pad-sec1/commands", json=cmd, headers=bearer(kiosk))
        assert r.status_code == 403 and "needs operations" in r.json()["detail"]
        assert not dev.actuations  # nothing reached the device
        # a route added by someone else later is admin-only by default (403, not 404)
        r = httpx.post(gw.url + "/some/new/route", json={}, headers=bearer(kiosk))
        assert r.status_code == 403
        r = httpx.put(gw.url + "/samples/s1", json={"title": "x"}, headers=bearer(staff))
        assert r.status_code == 403
        r = httpx.post(gw.url + "/devices/pad-sec1/commands", json=cmd, headers=bearer(staff),
                       timeout=30)
        assert r.status_code == 200 and r.json()["status"] == "done", r.text
        assert sum(dev.actuations.values()) == 1
        assert httpx.get(gw.url + "/audit", headers=bearer(staff)).status_code == 403
        rows = httpx.get(gw.url + "/audit").json()["audit"]  # the rig's admin token
        seen = [(a["who"], a["method"], a["path"], a["status"], a["outcome"]) for a in rows]
        assert ("kiosk-1", "POST", "/devices/pad-sec1/commands", 403) in [s[:4] for s in seen]
        assert ("staff-1", "POST", "/devices/pad-sec1/commands", 200, "done") in seen
        assert ("kiosk-1", "POST", "/some/new/route", 403) in [s[:4] for s in seen]
        assert all(a["t"] > 0 and a["ip"] == "127.0.0.1" for a in rows)
        # revocation
        kid = kiosk.split("_")[1]
        with connect(gw.db) as conn:
            assert auth.revoke_token(conn, "kiosk-1") == 1
        wait_for(lambda: httpx.get(gw.url + "/devices", headers=bearer(kiosk)).status_code == 401,
                 15, what="revoked token refused")
        with connect(gw.db) as conn:
            stored = conn.execute("SELECT hash FROM api_tokens WHERE id = ?", (kid,)).fetchone()[0]
        assert stored != kiosk.split("_", 2)[2] and kiosk not in gw.db.read_bytes().decode(
            "latin-1")
    finally:
        dev.close()


def test_rate_limits_429(tmp_path, broker, monkeypatch):
    monkeypatch.setenv("PHYGITAL_RATE_LIMITS",
                       "per_token=0.01/3,auth_fail_per_ip=0.01/2,code_entry=0.01/2")
    g = GatewayProcess(tmp_path / "gw", broker.port).start()
    try:
        staff = token(g, "staff-rl", "staff")
        codes = [httpx.get(g.url + "/devices", headers=bearer(staff)).status_code
                 for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429], codes
        r = httpx.get(g.url + "/devices", headers=bearer(staff))
        assert int(r.headers["retry-after"]) >= 1
        # guessing tokens: 401 until the per-IP failure budget is gone, then 429
        codes = [httpx.get(g.url + "/devices", headers=bearer(f"pe_x_{i}")).status_code
                 for i in range(4)]
        assert codes == [401, 401, 429, 429], codes
        # code entry (any path with a code/pickup segment) has its own, tighter budget
        admin = token(g, "admin-rl", "admin")
        codes = [httpx.post(g.url + "/lockers/b/pickup", json={"code": "123456"},
                            headers=bearer(admin)).status_code for _ in range(3)]
        assert codes[2] == 429 and 429 not in codes[:2], codes
    finally:
        g.stop()



def test_every_actuating_route_of_the_app_is_covered():
    """Every non-GET route the app has today needs a scope (none is public), and the ones staff
    and store systems use are in the table (not left to the admin-only default)."""
    from gateway.app import Gateway, GatewayConfig
    gw = Gateway(GatewayConfig(db_path=ROOT / "var" / "never-opened.db"))
    # from the spec: FastAPI keeps an included router's routes inside it, not in app.routes
    routes = [(m.upper(), path) for path, ops in gw.app.openapi()["paths"].items()
              for m in ops if m.upper() not in ("GET", "HEAD")]
    assert len(routes) >= 20
    sample = {"alert_id": "1", "bank": "b", "order": "o", "compartment": "1", "room": "r",
              "rid": "1", "job": "j", "target": "t", "device": "d", "sub_id": "s",
              "sample_id": "s", "rollout_id": "ro-1"}
    for method, path in routes:
        concrete = path.format(**sample)
        assert auth.required_scopes(method, concrete), (method, path)
    for method, path in (("POST", "/tube/dispatches"), ("POST", "/tube/jams/t/clear"),
                         ("POST", "/lockers/b/compartments/1/open"),
                         ("POST", "/lockers/b/orders/o/cancel")):
        assert auth.required_scopes(method, path) != ("admin",), path


def test_an_audit_row_shares_the_commit_of_the_writes_queued_with_it(tmp_path):
    """Issue 18, session 7: the audit row of an actuation is written after its response went
    out, so it needs no fsync of its own: it joins the group commit of the writes queued with
    it (an ingest batch) instead of a transaction of its own between them."""
    import asyncio
    import threading

    from gateway.storage.db import Database

    async def main():
        async with Database(tmp_path / "gw.db") as db:
            mw = auth.AuthMiddleware(None, db)
            started, gate = threading.Event(), threading.Event()

            def batch(store):  # an ingest batch at the writer
                started.set()
                gate.wait(60)

            busy = asyncio.ensure_future(db.write_grouped(batch))
            assert await asyncio.to_thread(started.wait, 30)
            audit = asyncio.ensure_future(mw._audit(auth.ANONYMOUS, "127.0.0.1", "POST",
                                                    "/devices/pad-1/commands", 200, "done"))
            after = asyncio.ensure_future(db.write_grouped(lambda store: None))
            while len(db._queue) < 2:  # both queued behind the batch
                await asyncio.sleep(0.01)
            gate.set()
            await asyncio.gather(busy, audit, after)
            assert (db.groups, db.grouped_writes) == (1, 3)  # one transaction for the three
            rows = await db.read(auth.read_audit, 0, 10, None)
            assert [(r["method"], r["path"], r["outcome"]) for r in rows] == [
                ("POST", "/devices/pad-1/commands", "done")]

    asyncio.run(main())
