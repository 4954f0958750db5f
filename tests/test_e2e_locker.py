"""Pickup lockers end to end: real Mosquitto + gateway subprocess + the real locker firmware in
`micropython` on the virtual rig (spring-loaded doors, occupancy sensors, keypad UART)."""
import json
import time

import httpx

from hil.sim.store import VirtualStore
from tests.e2e import GatewayProcess, StreamReader, settle, wait_events
from tests.support import wait_for

BANK = "lk-e1"
APP = {"occupancy": True, "pulse_ms": 300, "verify_ms": 300, "retry_ms": 200, "gap_ms": 100,
       "door_poll_ms": 50, "lockout": {"after": 5, "window_s": 300, "lock_s": [5]}}


def post(gw, path, **body):
    return httpx.post(gw.url + path, json=body or None, timeout=30)


def bank_ready(gw, bank):
    r = httpx.get(f"{gw.url}/lockers/{bank}", timeout=5)
    return r.json() if r.status_code == 200 else None


def ready_messages(stream, bank, order):
    return [m for m in stream.messages
            if m.get("_event") == "locker" and m.get("bank") == bank and m.get("order") == order
            and m.get("type") == "order.ready"]


def load_parcel(gw, locker, stream, order, cid):
    """Staff opens the reserved compartment through the API, loads it and closes the door;
    returns the pickup code from `order.ready`."""
    t0 = locker.now()
    r = post(gw, f"/lockers/{BANK}/orders/{order}/load")
    assert r.status_code == 200, r.text
    assert r.json()["compartment"] == cid and r.json()["command"]["status"] == "done"
    assert locker.pulses(cid, t0) >= 1 and locker.door(cid) == 1, "the load door sprang open"
    wait_events(gw, BANK, 1, "door.opened")
    locker.set_occupied(cid, True)
    locker.close_door(cid)
    ready = wait_for(lambda: ready_messages(stream, BANK, order), 15, what=f"order.ready for {order}")
    assert len(ready) == 1
    code = ready[0]["code"]
    assert isinstance(code, str) and len(code) == 6 and code.isdigit()
    # the code is live on the bank once its set_order is done
    def code_on_bank():
        o = gw.get(f"/lockers/{BANK}/orders/{order}")
        return o["state"] == "ready" and (o["code_sync"] or {}).get("status") == "done"
    wait_for(code_on_bank, 15, what="set_order done on the bank")
    return code


def test_assign_load_code_pickup_and_double_use(tmp_path, broker):
    gw = GatewayProcess(tmp_path / "gw", broker.port).start()
    store = VirtualStore(tmp_path / "store", broker_port=broker.port, keepalive=5)
    try:
        locker = store.add_locker(BANK, ["S", "M", "L"], **APP)
        store.start()
        view = wait_for(lambda: bank_ready(gw, BANK), 20, what="locker bank created from its status")
        assert [(c["id"], c["size"], c["state"]) for c in view["compartments"]] == \
            [(1, "S", "free"), (2, "M", "free"), (3, "L", "free")]

        with StreamReader(gw.url) as stream:
            # assign: smallest fitting compartment; refusals carry a reason
            r = post(gw, f"/lockers/{BANK}/orders", order="ord-1", size="M")
            assert r.status_code == 201, r.text
            assert r.json()["compartment"] == 2 and r.json()["state"] == "assigned"
            assert post(gw, f"/lockers/{BANK}/orders", order="ord-1", size="M").json()["compartment"] == 2
            assert post(gw, f"/lockers/{BANK}/orders", order="ord-2", size="M").json()["compartment"] == 3
            full = post(gw, f"/lockers/{BANK}/orders", order="ord-3", size="L")
            assert full.status_code == 409 and full.json()["reason"] == "bank-full"
            bad = post(gw, f"/lockers/{BANK}/orders", order="ord-4", size="XL")
            assert bad.status_code == 422 and bad.json()["reason"] == "bad-size"
            assert httpx.get(f"{gw.url}/lockers/nope", timeout=5).status_code == 404

            code = load_parcel(gw, locker, stream, "ord-1", 2)
            order = gw.get(f"/lockers/{BANK}/orders/ord-1")
            assert order["state"] == "ready" and "code" not in order and "code_hash" not in order
            assert gw.get(f"/lockers/{BANK}")["compartments"][1]["state"] == "loaded"

            # a wrong code opens nothing
            t1 = locker.now()
            wrong = str((int(code) + 1) % 10**6).zfill(6)
            locker.type_code(wrong)
            wait_events(gw, BANK, 1, "code.rejected")
            assert not any(locker.pulses(n, t1) for n in (1, 2, 3))

            # the right code opens exactly its door, once
            t2 = locker.now()
            locker.type_code(code)
            opened = wait_for(lambda: [e for e in gw.events(BANK, "door.opened")
                                       if e["body"]["why"] == "pickup"], 10, what="pickup door.opened")
            assert opened[0]["body"] == {"compartment": 2, "why": "pickup", "order": "ord-1"}
            assert locker.pulses(2, t2) == 1 and not locker.pulses(1, t2) and not locker.pulses(3, t2)
            locker.set_occupied(2, False)
            locker.close_door(2)
            wait_events(gw, BANK, 1, "pickup.collected")
            wait_for(lambda: gw.get(f"/lockers/{BANK}/orders/ord-1")["state"] == "collected", 10,
                     what="order collected in the API")
            assert gw.get(f"/lockers/{BANK}")["compartments"][1]["state"] == "free"
            wait_for(lambda: [m for m in stream.messages if m.get("type") == "order.collected"], 5,
                     what="order.collected on the stream")

            # a second use of the code opens nothing and is reported
            t3 = locker.now()
            locker.type_code(code)
            reused = wait_events(gw, BANK, 1, "code.reused")
            assert reused[0]["body"]["order"] == "ord-1"
            settle(0.5)
            assert not any(locker.pulses(n, t3) for n in (1, 2, 3))
            assert len(ready_messages(stream, BANK, "ord-1")) == 1, "the code is emitted once"

        # the plain code is stored nowhere: not in the stream table, not in the bank state
        raw = (tmp_path / "gw" / "gateway.db").read_bytes()
        for suffix in ("-wal",):
            wal = tmp_path / "gw" / ("gateway.db" + suffix)
            if wal.exists():
                raw += wal.read_bytes()
        assert f'"code":"{code}"'.encode() not in raw
        # the live code lives only in the gateway's memory: replayed after a restart, the
        # item has no code (the order system asks for a reissue)
        gw.stop()
        gw.start()
        items = [m for m in _replay(gw) if m.get("type") == "order.ready"]
        assert items and all(m["code"] is None for m in items)
        assert gw.get(f"/lockers/{BANK}/orders/ord-1")["state"] == "collected"
    finally:
        store.stop()
        gw.stop()


def _replay(gw) -> list[dict]:
    """`locker` items of the stream from its start, up to the `order.collected`."""
    out: list[dict] = []
    with httpx.stream("GET", gw.url + "/stream", params={"after": 0}, timeout=10) as r:
        kind = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:") and kind == "locker":
                out.append(json.loads(line[5:]))
                if out[-1].get("type") == "order.collected":
                    break
    return out


def test_pickup_while_the_broker_is_down_is_reported_once_after_restart(tmp_path, own_broker):
    gw = GatewayProcess(tmp_path / "gw", own_broker.port).start()
    store = VirtualStore(tmp_path / "store", broker_port=own_broker.port, keepalive=2)
    try:
        locker = store.add_locker(BANK, ["S", "M"], **APP)
        store.start()
        wait_for(lambda: bank_ready(gw, BANK), 20, what="locker bank created")
        with StreamReader(gw.url) as stream:
            assert post(gw, f"/lockers/{BANK}/orders", order="ord-9", size="S").json()["compartment"] == 1
            code = load_parcel(gw, locker, stream, "ord-9", 1)

        own_broker.stop()
        t0 = locker.now()
        locker.type_code(code)
        assert wait_for(lambda: locker.door(1) == 1, 5, what="door 1 opened offline")
        assert locker.pulses(1, t0) == 1 and not locker.pulses(2, t0)
        time.sleep(0.3)
        locker.set_occupied(1, False)
        locker.close_door(1)
        time.sleep(0.5)
        assert gw.get(f"/lockers/{BANK}/orders/ord-9")["state"] == "ready", "nothing reached the gateway"
        own_broker.start()

        wait_events(gw, BANK, 1, "pickup.collected", timeout=40)
        wait_for(lambda: gw.get(f"/lockers/{BANK}/orders/ord-9")["state"] == "collected", 10,
                 what="offline pickup reported")
        settle(1.5)
        assert len(gw.events(BANK, "pickup.collected")) == 1
        assert len([e for e in gw.events(BANK, "door.opened") if e["body"]["why"] == "pickup"]) == 1
    finally:
        store.stop()
        gw.stop()
