"""The endless aisle (gateway/aisle/, docs/endless-aisle.md) through the HTTP API of an
in-process gateway on the session broker: the customer role and its limits, the stockroom path
(a tube dispatch), the other-store path (an order, a locker reserved, the pickup code by the
outbox), idempotency, and the code nowhere but in the one message."""
from __future__ import annotations

import asyncio
import json
from typing import Any

from gateway.http import auth
from gateway.storage.store import Store
from tests.support.aisle import BANK, CHINO, OAK_NATURAL, OAK_SMOKED, AisleStore, until
from tests.support.lockers import KEY

PHONE = "+33612345678"


def app_routes(routes) -> list[Any]:
    """Every route of the app: FastAPI keeps an included router's routes inside it."""
    out = []
    for r in routes:
        if hasattr(r, "path"):
            out.append(r)
        elif hasattr(r, "original_router"):
            out += app_routes(r.original_router.routes)
    return out


def run(coro) -> None:
    asyncio.run(coro)


def test_customer_role_is_refused_on_every_other_route(tmp_path, broker):
    """Every route of the app, every method: a customer token gets 403 except the aisle's own
    two routes and the public pages (which need no token at all)."""
    async def main() -> None:
        async with AisleStore(tmp_path, broker.port) as s:
            allowed, refused, public = [], [], []
            routes = app_routes(s.gw.app.routes)
            spec = {(m.upper(), p) for p, ops in s.gw.app.openapi()["paths"].items() for m in ops}
            assert spec <= {(m, r.path) for r in routes for m in getattr(r, "methods", None) or ()}
            for route in routes:
                for method in sorted(getattr(route, "methods", None) or ()):
                    if method == "HEAD":
                        continue
                    path = route.path.replace("{", "").replace("}", "")  # {bank} -> bank
                    path = "/".join("x" if seg.endswith(":path") else seg for seg in path.split("/"))
                    if auth.required_scopes(method, path) == ():
                        public.append(path)
                        continue
                    r = await s.http.request(method, path, headers=s.h("customer"),
                                             **({} if method == "GET" else {"json": {}}))
                    (allowed if r.status_code != 403 else refused).append((method, route.path))
            assert sorted(allowed) == [("GET", "/aisle/requests/{rid}"), ("POST", "/aisle/requests")]
            assert len(refused) > 60, "the app's routes were not all tried"
            assert ("GET", "/lockers/{bank}") in refused and ("GET", "/stream") in refused
            assert ("GET", "/aisle/orders") in refused and ("GET", "/aisle/outbox") in refused
            assert set(public) <= {"/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/dashboard",
                                   "/dashboard/analytics", "/web/auth.js", "/web/screen.js", "/web/aisle.js",
                                   "/kiosk/pad", "/mirror/room", "/docs/static/x"}, public
    run(main())


def test_rate_limit_per_customer_token_is_a_clear_429(tmp_path, broker):
    async def main() -> None:
        async with AisleStore(tmp_path, broker.port) as s:
            codes = [(await s.http.post("/aisle/requests", headers=s.h("customer"), json={
                "idempotency_key": f"r-{i}", "origin": "pad-1", "gtin": CHINO})) for i in range(12)]
            assert [r.status_code for r in codes[:10]] == [201] * 10
            last = codes[-1]
            assert last.status_code == 429 and int(last.headers["retry-after"]) >= 1
            assert "aisle_requests" in last.json()["detail"] and "try again in" in last.json()["detail"]
            # another token is not held back by this one's bucket
            r = await s.http.post("/aisle/requests", headers=s.h("kiosk"), json={
                "idempotency_key": "k-1", "origin": "pad-1", "gtin": CHINO})
            assert r.status_code == 201 and r.json()["route"] == "floor"
    run(main())


def test_stockroom_path_sends_one_tube_job_to_the_nearest_station(tmp_path, broker):
    async def main() -> None:
        async with AisleStore(tmp_path, broker.port) as s:
            a = await s.ask("customer", "t-1", OAK_NATURAL, expect=201)
            assert a["route"] == "tube" and a["station"] == "floor-womens" and a["tube"]["state"] == "queued"
            b = await s.ask("customer", "t-1", OAK_NATURAL, expect=200)   # the same request again
            assert b["id"] == a["id"]
            jobs = [j for j in s.gw.tube.jobs() if j["job"].startswith("aisle:")]
            assert [(j["job"], j["from"], j["to"]) for j in jobs] == [(f"aisle:{a['id']}", "stockroom",
                                                                       "floor-womens")]
            assert "Oak plank" in jobs[0]["item"]
            # a mirror: the fitting rooms' station
            m = await s.ask("customer", "t-2", OAK_NATURAL, origin="room-1", origin_kind="fitting-room")
            assert m["route"] == "tube" and m["station"] == "fitting-rooms"
            # a screen with no station configured: an associate brings it, no dispatch
            z = await s.ask("customer", "t-3", OAK_NATURAL, origin="pad-9")
            assert z["route"] == "staff" and z["tube"] is None
            assert len([j for j in s.gw.tube.jobs() if j["job"].startswith("aisle:")]) == 2
    run(main())


def test_other_store_path_one_order_one_locker_one_message_and_no_code_anywhere(tmp_path, broker, caplog):
    caplog.set_level("DEBUG")

    async def main() -> None:
        async with AisleStore(tmp_path, broker.port) as s:
            sender = s.gw.aisle.sender
            # refusals: no contact, a bad one, a product the store does not know
            r = await s.ask("customer", "o-0", OAK_SMOKED, expect=422)
            assert r["reason"] == "contact-needed"
            r = await s.ask("customer", "o-0", OAK_SMOKED, expect=422, contact={"channel": "sms", "to": "06 12"})
            assert r["reason"] == "bad-contact" and "+33612345678" in r["detail"]
            r = await s.ask("customer", "o-0", "09506000999995", expect=404)
            assert r["reason"] == "unknown-product"

            sender.fail_next(2)  # the SMS gateway fails twice: the outbox retries
            body = {"contact": {"channel": "sms", "to": PHONE}}
            a = await s.ask("customer", "o-1", OAK_SMOKED, expect=201, **body)
            b = await s.ask("customer", "o-1", OAK_SMOKED, expect=200, **body)
            assert a["id"] == b["id"] and a["route"] == "order" and a["bank"] == BANK
            assert a["contact"] == "+33•••••••78" and a["locker"]["state"] == "assigned"
            r = await s.ask("customer", "o-1", OAK_NATURAL, expect=409, **body)  # same key, other request
            assert r["reason"] == "idempotency-conflict"
            bank = (await s.http.get(f"/lockers/{BANK}", headers=s.h("staff"))).json()
            assert [(o["order"], o["state"]) for o in bank["orders"]] == [(a["order"], "assigned")]
            # the order system: its poll, and the stream's `ordered` item (webhook aisle.ordered)
            orders = (await s.http.get("/aisle/orders", headers=s.h("orders"))).json()
            assert [(o["order_id"], o["bank"], o["gtin"], o["source"]) for o in orders] == \
                [(a["order"], BANK, OAK_SMOKED, "store:store-c")]
            items = await s.gw.db.read(Store.stream_after, 0, 10_000)
            assert [i.data["type"] for i in items if i.kind == "aisle"] == ["requested", "ordered"]

            # the parcel arrives; staff load it (the locker flow): ready, a code, the message
            cid = a["locker"]["compartment"]
            await s.load(cid)
            await until(lambda: sender.inbox, "the pickup-code message")
            # the sender has it; the outbox records it right after (a sent message is never lost
            # from the log: wait for the commit, not for a moment)
            await until(lambda: _outbox_state(s, "delivered"), "the delivery recorded")
            ready = [i.data for i in await s.gw.db.read(Store.stream_after, 0, 10_000)
                     if i.kind == "locker" and i.data["type"] == "order.ready"]
            code = s.gw.lockers.render(ready[0])["code"]
            assert code and len(code) == 6
            assert len(sender.inbox) == 1 and sender.inbox[0]["to"] == PHONE
            assert code in sender.inbox[0]["text"] and f"door {cid}" in sender.inbox[0]["text"]
            assert sender.attempts == 3

            # asked again after all that: still one order, one message
            again = await s.ask("customer", "o-1", OAK_SMOKED, expect=200, **body)
            assert again["message"] == {"state": "delivered", "attempts": 3}
            assert again["locker"]["state"] == "ready"
            await s.gw.aisle.step()
            assert len(sender.inbox) == 1

            # the delivery log: three attempts, two failures, no code, no number
            outbox = (await s.http.get("/aisle/outbox", headers=s.h("staff"))).json()
            assert len(outbox) == 1 and outbox[0]["state"] == "delivered"
            assert [d["ok"] for d in outbox[0]["deliveries"]] == [False, False, True]
            assert "unreachable" in outbox[0]["deliveries"][0]["error"]
            row = await s.gw.db.read(lambda st: dict(st.conn.execute("SELECT * FROM aisle_outbox").fetchone()))
            assert row["recipient"] is None and row["ready_id"] is None  # gone after delivery

            # the code: in the one message, nowhere else the customer, staff, the order system,
            # the audit or the logs can read
            seen = [json.dumps(again), json.dumps(outbox), caplog.text]
            for role, path in [("customer", f"/aisle/requests/{a['id']}"), ("kiosk", f"/lockers/{BANK}"),
                               ("staff", "/aisle/outbox"), ("orders", "/aisle/orders"),
                               ("admin", "/audit?limit=1000"), ("admin", "/events?limit=1000"),
                               ("kiosk", f"/lockers/{BANK}/orders/{a['order']}")]:
                r = await s.http.get(path, headers=s.h(role))
                assert r.status_code == 200, (role, path, r.text)
                seen.append(r.text)
            assert all(code not in text for text in seen)
            assert all(PHONE not in text for text in seen)  # masked everywhere but the message
            audit = (await s.http.get("/audit?who=aisle&limit=1000", headers=s.h("admin"))).json()["audit"]
            steps = [x["outcome"] for x in audit if x["path"] == f"/aisle/requests/{a['id']}"]
            assert any("locker lk-u1 reserved" in o for o in steps)
            assert any("attempt 1 failed" in o for o in steps) and any("delivered" in o for o in steps)
            customer = (await s.http.get("/audit?who=customer-1&limit=1000", headers=s.h("admin"))).json()
            assert ("POST", "/aisle/requests", 201) in [(x["method"], x["path"], x["status"])
                                                       for x in customer["audit"]]
            # the order system cancels another aisle order before its parcel came: the request
            # is closed (no longer followed, audited)
            b = await s.ask("customer", "o-2", OAK_SMOKED, expect=201, **body)
            r = await s.http.post(f"/lockers/{BANK}/orders/{b['order']}/cancel", headers=s.h("orders"),
                                  json={"idempotency_key": "os-cancel-1"})
            assert r.status_code == 200, r.text
            await until(lambda: _request_state(s, b["id"], "closed"), "the cancelled order's request closed")
            assert b["order"] not in s.gw.aisle._orders
        raw = b"".join(p.read_bytes() for p in (tmp_path / "gw").iterdir() if p.name.startswith("gw.db"))
        assert code.encode() not in raw and f'"code":"{code}"'.encode() not in raw
    run(main())


def test_outbox_after_a_restart_sends_a_reissued_code_once_and_gives_up_after_max_attempts(tmp_path, broker):
    """The code lives only in the locker service's memory: a gateway restarted before the message
    went out asks for a new code (the bank gets it, the old one stops working) and sends that,
    once. A message that never goes out is `failed` after `max_attempts`, the number dropped."""
    from gateway.kinds.locker_bank.core import mac_code

    async def main() -> None:
        async with AisleStore(tmp_path, broker.port, aisle_max_attempts=10_000) as s:
            s.gw.aisle.sender.fail_next(10**9)  # the SMS gateway is down until the restart
            body = {"contact": {"channel": "sms", "to": PHONE}}
            a = await s.ask("customer", "r-1", OAK_SMOKED, expect=201, **body)
            await s.load(a["locker"]["compartment"])
            await until(lambda: s.gw.aisle.sender.attempts >= 2, "two failed attempts")
            ready = [i.data for i in await s.gw.db.read(Store.stream_after, 0, 10_000)
                     if i.kind == "locker" and i.data["type"] == "order.ready"]
            old = s.gw.lockers.render(ready[0])["code"]
            assert old

            await s.restart()
            assert s.gw.lockers.render(ready[0])["code"] is None  # forgotten with the process
            sent = await until(lambda: list(s.gw.aisle.sender.inbox), "the SMS after the restart")
            await until(lambda: _outbox_state(s, "delivered"), "the delivery recorded")
            code = sent[0]["text"].split("code ")[1][:6]
            assert code != old and len(sent) == 1
            cmds = await s.gw.db.read(lambda st: [st.get_command(r[0]) for r in st.conn.execute(
                "SELECT id FROM commands WHERE name = 'set_order' ORDER BY created, id")])
            assert [mac_code(code, KEY, BANK) == c["args"]["mac"] for c in cmds] == [False, True]
            view = await s.ask("customer", "r-1", OAK_SMOKED, expect=200, **body)
            assert view["message"]["state"] == "delivered" and view["locker"]["state"] == "ready"
            await s.gw.aisle.step()
            assert len(s.gw.aisle.sender.inbox) == 1

    async def give_up() -> None:
        async with AisleStore(tmp_path / "b", broker.port, aisle_max_attempts=3) as s:
            s.gw.aisle.sender.fail_next(10**9)
            a = await s.ask("customer", "f-1", OAK_SMOKED, expect=201,
                            contact={"channel": "email", "to": "Ann@Example.org"})
            assert a["contact"] == "a•••@example.org"
            await s.load(a["locker"]["compartment"])
            await until(lambda: _outbox_state(s, "failed"), "the message given up")
            row = await s.gw.db.read(lambda st: dict(st.conn.execute("SELECT * FROM aisle_outbox").fetchone()))
            assert row["attempts"] == 3 and row["recipient"] is None and s.gw.aisle.sender.attempts == 3
            items = [i.data for i in await s.gw.db.read(Store.stream_after, 0, 10_000) if i.kind == "aisle"]
            assert items[-1]["type"] == "message.failed" and items[-1]["to"] == "a•••@example.org"
            audit = (await s.http.get("/audit?who=aisle", headers=s.h("admin"))).json()["audit"]
            assert any(x["status"] == 502 and "failed for good" in x["outcome"] for x in audit)

    run(main())
    (tmp_path / "b").mkdir()
    run(give_up())


async def _request_state(s: AisleStore, rid: str, state: str) -> bool:
    got = await s.gw.db.read(lambda st: st.conn.execute("SELECT state FROM aisle_requests WHERE id = ?",
                                                        (rid,)).fetchone())
    return got is not None and got[0] == state


async def _outbox_state(s: AisleStore, state: str) -> bool:
    got = await s.gw.db.read(lambda st: st.conn.execute("SELECT state FROM aisle_outbox").fetchone())
    return got is not None and got[0] == state
