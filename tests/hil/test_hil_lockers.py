"""HIL scenarios for the locker bank, with the real gateway. The same code runs on every rig:

    pytest tests/hil/test_hil_lockers.py                                        # virtual rig (CI)
    pytest tests/hil/test_hil_lockers.py --rig pi:boards/rigs/bench-lockers.json  # the bench

The world acts through the rig only: doors (which spring open while their lock is powered,
unless `rig.jam`-med), parcels (occupancy sensors), a customer at the keypad/QR scanner (a
UART), power cuts, the broker going away. What must follow is checked on the lock outputs,
the bank's display, the protocol messages and the gateway's API and stream. The device's
compartments and timings come from the wiring file (`boards/rigs/virtual.json`, `lk-1`).
"""
from __future__ import annotations

import json
import time

import httpx
import pytest

from hil.harness import wait_for
from tests.support.e2e import settle, wait_events
from tests.support.lockers import Bank, wrong_code
from tools import lockers as lockers_cli

pytestmark = pytest.mark.rig_kinds("locker-bank")


def _sizes(bank: Bank) -> dict[int, str]:
    return {c["id"]: c["size"] for c in bank.view()["compartments"]}


# --- the flow -----------------------------------------------------------------------------------

def test_assign_load_code_pickup_then_double_use_is_refused(bank: Bank, tmp_path):
    view = bank.view()
    assert view["compartments"] and all(c["state"] == "free" for c in view["compartments"])
    sizes = _sizes(bank)
    assert bank.lk.display()[0] == "Enter your pickup code, then #"

    # assign: smallest fitting compartment; the same order again keeps its reservation
    m = min(n for n, s in sizes.items() if s == "M")
    assert bank.assign("ord-1", "M") == m
    assert bank.assign("ord-1", "M") == m
    bad = bank.post("/orders", order="ord-x", size="XL")
    assert bad.status_code == 422 and bad.json()["reason"] == "bad-size"
    assert httpx.get(f"{bank.gw.url}/lockers/nope", timeout=5).status_code == 404

    n, code = bank.load("ord-1")
    assert n == m
    assert bank.compartment(n)["state"] == "loaded"
    assert "code" not in bank.order("ord-1")

    # a wrong code opens nothing, and the display says what to do
    t1, start = bank.rig.trace.now(), bank.shown()
    bank.lk.type_code(wrong_code(code))
    bank.lk.wait_display(r"^Code not recognised - please check it and try again$", start=start)
    wait_events(bank.gw, bank.id, 1, "code.rejected")
    assert not any(bank.pulses(k, t1) for k in sizes)

    # the right code opens exactly its door, once
    t2 = bank.rig.trace.now()
    bank.collect(n, code)
    assert not any(bank.pulses(k, t2) for k in sizes if k != n)
    wait_for(lambda: bank.order("ord-1")["state"] == "collected", 15, what="order collected")
    assert bank.compartment(n)["state"] == "free"
    wait_for(lambda: bank.items("order.collected", order="ord-1"), 10, what="order.collected on the stream")

    # a second use, scanned as a QR code this time: refused, reported, nothing moves
    t3, start = bank.rig.trace.now(), bank.shown()
    bank.lk.scan(code)
    bank.lk.wait_display(r"^This code has already been used - if you did not get your parcel, "
                         r"please ask staff$", start=start)
    reused = wait_events(bank.gw, bank.id, 1, "code.reused")
    assert reused[0]["body"]["order"] == "ord-1" and reused[0]["body"]["compartment"] == n
    settle(0.5)
    assert not any(bank.pulses(k, t3) for k in sizes)
    assert len(bank.items("order.ready", order="ord-1")) == 1, "the code is emitted once"

    # the plain code is stored nowhere (database and WAL), and a replay after a restart has none
    raw = b"".join(p.read_bytes() for p in (tmp_path / "gw").glob("gateway.db*"))
    assert f'"code":"{code}"'.encode() not in raw and code.encode() not in raw
    bank.gw.stop()
    bank.gw.start()
    items = [m for m in _replay(bank.gw) if m.get("type") == "order.ready"]
    assert items and all(m["code"] is None for m in items)
    assert bank.order("ord-1")["state"] == "collected"


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


@pytest.mark.rig_own_broker
def test_pickup_while_the_broker_is_down_is_reported_once_on_reconnect(bank: Bank):
    n, code = bank.load("ord-9", "S")
    bank.rig.broker_down()
    bank.lk.wait_console(r"\boffline$", timeout=30)
    start = bank.shown()
    bank.lk.type_code(code[:1], enter=False)
    bank.lk.wait_display(r"^This locker is offline for new orders - your code still works$", start=start)
    bank.lk.type_code(code[1:])
    bank.lk.wait_display(rf"^Door {n} is open - please take your parcel", timeout=10, start=start)
    bank.lk.take_parcel(n)
    bank.lk.close_door(f"door_{n}")
    bank.lk.wait_display(r"^Thank you - enjoy your order$", timeout=10, start=start)
    assert bank.order("ord-9")["state"] == "ready", "nothing can have reached the gateway"

    bank.rig.broker_up()
    wait_events(bank.gw, bank.id, 1, "pickup.collected", timeout=60)
    wait_for(lambda: bank.order("ord-9")["state"] == "collected", 15, what="offline pickup reported")
    settle(1.5)
    assert len(bank.events("pickup.collected")) == 1
    assert len([e for e in bank.events("door.opened") if e["body"]["why"] == "pickup"]) == 1


# --- faults ---------------------------------------------------------------------------------------

def test_jammed_door_blocks_the_compartment_until_staff_clear_it_and_the_code_survives(bank: Bank):
    n, code = bank.load("ord-j", "L")
    bank.lk.jam(f"door_{n}")
    t0, start = bank.rig.trace.now(), bank.shown()
    bank.lk.type_code(code)
    bank.lk.wait_display(rf"^Sorry, door {n} did not open. Staff have been told - please ask at the store "
                         r"counter, your parcel is safe$", timeout=15, start=start)
    jam = bank.lk.wait_message("lock.jammed", kind="evt", timeout=10)
    assert jam["body"] == {"compartment": n, "why": "pickup", "attempts": 2}
    assert bank.pulses(n, t0) == 2, "one retry, then no more pulses into a stuck latch"
    wait_for(lambda: bank.compartment(n)["state"] == "blocked", 15, what="blocked in the gateway")
    wait_for(lambda: bank.items("compartment.blocked", compartment=n), 10, what="compartment.blocked item")

    # blocked: the code is refused while staff have not cleared it
    start = bank.shown()
    bank.lk.type_code(code)
    bank.lk.wait_display(rf"^Locker {n} needs staff attention - please ask at the store counter$", start=start)

    # staff free the latch and clear the alarm; the customer's code works again
    bank.lk.jam(f"door_{n}", False)
    key = "staff-clear-1"
    r = bank.post(f"/compartments/{n}/clear", idempotency_key=key)
    assert r.status_code == 200, r.text
    assert r.json()["state"]["state"] == "loaded"
    again = bank.post(f"/compartments/{n}/clear", idempotency_key=key)  # a retry: same outcome
    assert again.status_code == 200 and again.json()["command"]["id"] == r.json()["command"]["id"]
    assert len(bank.items("compartment.cleared", compartment=n)) <= 1
    wait_for(lambda: len(bank.items("compartment.cleared", compartment=n)) == 1, 10, what="one cleared item")
    # the staff alert raised by the jam is resolved by the clear
    def jam_alerts():
        return [a for a in bank.gw.get("/alerts", state="all") if a["key"] == f"lock.jammed:{bank.id}:{n}"]
    wait_for(lambda: jam_alerts() and jam_alerts()[0]["state"] == "resolved", 15, what="jam alert resolved")
    other = bank.post(f"/compartments/{n}/clear", idempotency_key="staff-clear-2")
    assert other.status_code == 409 and other.json()["reason"] == "not-blocked"
    bank.collect(n, code)
    wait_for(lambda: bank.order("ord-j")["state"] == "collected", 15, what="collected after the jam")


def test_forced_door_raises_an_alarm_and_blocks_the_compartment(bank: Bank):
    n, code = bank.load("ord-f", "S")
    bank.lk.open_door(f"door_{n}")  # pried open: no unlock was running
    forced = bank.lk.wait_message("door.forced", kind="evt", timeout=10)
    assert forced["body"] == {"compartment": n, "order": "ord-f"}
    wait_for(lambda: bank.compartment(n)["state"] == "blocked", 15, what="blocked in the gateway")
    assert bank.compartment(n)["blocked"] == "forced"
    # clearing needs the door shut
    r = bank.post(f"/compartments/{n}/clear", idempotency_key="clear-open")
    assert r.status_code == 409 and r.json()["reason"] == "door-open"
    bank.lk.close_door(f"door_{n}")
    t0, start = bank.rig.trace.now(), bank.shown()
    bank.lk.type_code(code)
    bank.lk.wait_display(rf"^Locker {n} needs staff attention - please ask at the store counter$", start=start)
    rej = bank.lk.wait_message("code.rejected", kind="evt", where=lambda m: m["body"].get("reason") == "blocked")
    assert rej["body"]["compartment"] == n
    settle(0.3)
    assert bank.pulses(n, t0) == 0


def test_door_left_open_raises_door_ajar_and_asks_to_close_it(bank: Bank):
    n, code = bank.load("ord-a", "M")
    start = bank.shown()
    bank.lk.type_code(code)
    bank.lk.wait_display(rf"^Door {n} is open - please take your parcel", timeout=10, start=start)
    bank.lk.take_parcel(n)
    ajar_s = bank.rig.wiring.device(bank.id).app.get("ajar_s", 60)
    ajar = bank.lk.wait_message("door.ajar", kind="evt", timeout=ajar_s + 15)
    assert ajar["body"]["compartment"] == n and ajar["body"]["why"] == "pickup"
    assert ajar["body"]["open_ms"] >= ajar_s * 1000
    bank.lk.wait_display(rf"^Door {n} is still open - please close it$", start=start)
    settle(1.0)
    assert len(bank.lk.messages("door.ajar", kind="evt")) == 1, "once per opening"
    bank.lk.close_door(f"door_{n}")
    wait_for(lambda: bank.order("ord-a")["state"] == "collected", 15, what="collected once closed")


def test_brute_force_locks_the_keypad_then_the_right_code_works(bank: Bank):
    n, code = bank.load("ord-b", "S")
    app = bank.rig.wiring.device(bank.id).app.get("lockout", {})
    after, lock_s = app.get("after", 3), app.get("lock_s", [600])[0]
    t0, start = bank.rig.trace.now(), bank.shown()
    for k in range(after):
        bank.lk.type_code(wrong_code(code, k + 1))
        time.sleep(0.2)  # keys are read every key_poll_ms: let each entry be taken on its own
    bank.lk.wait_display(r"^Too many wrong codes - the keypad is locked for \d+ minutes?$", start=start)
    locked = bank.lk.wait_message("keypad.locked", kind="evt", timeout=10)
    assert locked["body"]["level"] == 1 and locked["body"]["for_s"] == lock_s
    assert locked["body"]["failures"] == after
    # even the right code does nothing while the keypad is locked
    start = bank.shown()
    bank.lk.type_code(code)
    bank.lk.wait_display(r"^The keypad is locked - please try again in \d+ minutes?$", start=start)
    settle(0.3)
    assert bank.pulses(n, t0) == 0
    wait_for(lambda: bank.events("keypad.locked"), 15, what="keypad.locked at the gateway")
    wait_for(lambda: bank.view()["keypad_locked_until"], 15, what="keypad_locked_until in the bank's view")
    if lock_s > 60:
        pytest.skip(f"the rig's lockout is {lock_s} s: not waited out here")
    time.sleep(lock_s + 0.5)
    bank.collect(n, code)


def test_reboot_mid_pickup_is_resolved_by_the_door_sensor(bank: Bank):
    # 1) power lost while the lock is pulsing and the door is still shut: the code stays live
    n, code = bank.load("ord-r", "M")
    bank.lk.jam(f"door_{n}")  # the latch is slow: the door has not moved when the power goes
    bank.lk.type_code(code)
    bank.lk.expect_output(f"lock_{n}", 1, timeout=10)
    bank.lk.power_cut()
    bank.lk.jam(f"door_{n}", False)
    t0 = bank.rig.trace.now()
    bank.lk.power_on()
    bank.lk.wait_console(r"online session", timeout=30, start=0)
    interrupted = bank.lk.wait_message("pickup.interrupted", kind="evt", timeout=15)
    assert interrupted["body"] == {"compartment": n, "order": "ord-r"}
    assert bank.pulses(n, t0) == 0, "nothing is powered at boot"
    bank.collect(n, code)  # the same code opens the door now
    wait_for(lambda: bank.order("ord-r")["state"] == "collected", 15, what="collected after the reboot")

    # 2) power lost with the door open; the customer takes the parcel and closes the door while
    #    the bank is off: at boot the sensors say it was collected
    m, code2 = bank.load("ord-r2", "S")
    start = bank.shown()
    bank.lk.type_code(code2)
    bank.lk.wait_display(rf"^Door {m} is open - please take your parcel", timeout=10, start=start)
    bank.lk.wait_message("door.opened", kind="evt", where=lambda e: e["body"].get("order") == "ord-r2")
    bank.lk.power_cut()
    bank.lk.take_parcel(m)
    bank.lk.close_door(f"door_{m}")
    t1 = bank.rig.trace.now()
    bank.lk.power_on()
    wait_for(lambda: bank.order("ord-r2")["state"] == "collected", 30, what="collected, resolved at boot")
    assert bank.pulses(m, t1) == 0
    collected = [e for e in bank.events("pickup.collected") if e["body"]["order"] == "ord-r2"]
    assert len(collected) == 1


# --- staff and the order system ----------------------------------------------------------------

def test_staff_and_order_system_operations_check_state_and_are_idempotent(bank: Bank, capsys):
    sizes = _sizes(bank)
    big = max(sizes, key=lambda k: ("SML".index(sizes[k]), k))

    # cancel a reservation that was never loaded; a retry with the key answers the same
    n = bank.assign("ord-c", "M")
    r = bank.post("/orders/ord-c/cancel", idempotency_key="cancel-c")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert bank.post("/orders/ord-c/cancel", idempotency_key="cancel-c").json() == r.json()
    again = bank.op("/orders/ord-c/cancel")
    assert again.status_code == 409 and again.json()["reason"] == "order-state"
    assert bank.compartment(n)["state"] == "free"
    assert len(bank.items("order.cancelled", order="ord-c")) == 1

    # reissue: a new code; the old one stops working on the bank
    s, old = bank.load("ord-s", "S")
    r = bank.post("/orders/ord-s/reissue", idempotency_key="re-1")
    assert r.status_code == 200, r.text
    new = r.json()["code"]
    assert new and new != old and len(new) == 6
    assert bank.post("/orders/ord-s/reissue", idempotency_key="re-1").json() == r.json(), "no second code"
    clash = bank.post("/orders/ord-s/reissue", idempotency_key="cancel-c")  # a key of another operation
    assert clash.status_code == 409 and clash.json()["reason"] == "idempotency-conflict"
    assert len(wait_for(lambda: bank.items("order.code", order="ord-s"), 10, what="order.code")) == 1
    wait_for(lambda: (bank.order("ord-s").get("code_sync") or {}).get("status") == "done", 20,
             what="the new code on the bank")
    t0, start = bank.rig.trace.now(), bank.shown()
    bank.lk.type_code(old)
    bank.lk.wait_display(r"^This code is no longer valid - please contact the store$", start=start)
    rej = bank.lk.wait_message("code.rejected", kind="evt", where=lambda m: m["body"].get("reason") == "revoked")
    assert rej["body"]["compartment"] == s
    assert bank.pulses(s, t0) == 0
    bad = bank.op("/orders/ord-nope/reissue")
    assert bad.status_code == 404 and bad.json()["reason"] == "unknown-order"

    # out of order: refused while an order is inside, then on and off for a free compartment
    r = bank.op(f"/compartments/{s}/out-of-order", on=True)
    assert r.status_code == 409 and r.json()["reason"] == "occupied"
    r = bank.post(f"/compartments/{big}/out-of-order", on=True, idempotency_key="ooo-1")
    assert r.status_code == 200, r.text
    assert r.json()["state"]["state"] == "out_of_order"
    assert bank.post(f"/compartments/{big}/out-of-order", on=True, idempotency_key="ooo-1").json() == r.json()
    refused = bank.post("/orders", order="ord-l", size="L")
    assert refused.status_code == 422 and refused.json()["reason"] == "no-size"
    # back in service through the staff command line (tools/lockers.py → the same API)
    assert lockers_cli.main(["--url", bank.gw.url, "out-of-order", bank.id, str(big), "--off",
                             "--key", "ooo-2"]) == 0
    assert json.loads(capsys.readouterr().out)["state"]["state"] == "free"
    assert lockers_cli.main(["--url", bank.gw.url, "cancel", bank.id, "ord-nope"]) == 1
    assert "unknown-order" in capsys.readouterr().out
    wait_for(lambda: bank.items("compartment.out_of_order", compartment=big)
             and bank.items("compartment.in_service", compartment=big), 10, what="compartment items")
    assert bank.op("/compartments/99/open").status_code == 404

    # open one for service: the door opens (whatever the state), staff close it
    r = bank.post(f"/compartments/{big}/open", idempotency_key="svc-1")
    assert r.status_code == 200 and r.json()["command"]["result"]["attempts"] == 1
    t1 = bank.rig.trace.now()
    assert bank.post(f"/compartments/{big}/open", idempotency_key="svc-1").json()["command"]["id"] == \
        r.json()["command"]["id"]
    bank.lk.wait_message("door.opened", kind="evt", where=lambda m: m["body"]["why"] == "service")
    busy = bank.op(f"/compartments/{big}/open")
    assert busy.status_code == 409 and busy.json()["reason"] == "door-open"
    bank.lk.close_door(f"door_{big}")
    assert bank.pulses(big, t1) == 0, "the retry did not pulse the lock again"

    # retrieve: the parcel comes back out, the order is returned, the compartment free
    bank.retrieve("ord-s", s)
    r = bank.op("/orders/ord-s/retrieve")
    assert r.status_code == 409 and r.json()["reason"] == "order-state"

    # open all: every door, one after the other
    t2 = bank.rig.trace.now()
    r = bank.op("/open-all")
    assert r.status_code == 200, r.text
    assert sorted(r.json()["command"]["result"]["opened"]) == sorted(sizes)
    assert all(bank.pulses(k, t2) == 1 for k in sizes)
    for k in sizes:
        bank.lk.close_door(f"door_{k}")


@pytest.mark.parametrize("gateway_args", [["--locker-pickup-window", "4"]])
def test_expired_order_code_is_dead_on_the_bank_and_staff_retrieve_it(bank: Bank):
    n, code = bank.load("ord-e", "M")
    wait_for(lambda: bank.order("ord-e")["state"] == "expired", 20, what="order expired")
    assert bank.compartment(n)["state"] == "expired"
    wait_for(lambda: bank.items("order.expired", order="ord-e"), 10, what="order.expired on the stream")
    # the gateway revokes the code on the bank; it would refuse it by its expiry anyway
    t0, start = bank.rig.trace.now(), bank.shown()
    wait_for(lambda: any(m["body"].get("result") == {"compartment": n, "state": "held"}  # revoke's answer
                         for m in bank.lk.messages("reply")), 20, what="revoke done on the bank")
    bank.lk.type_code(code)
    bank.lk.wait_display(r"^This code (is no longer valid|has expired) - please contact the store$", start=start)
    assert bank.pulses(n, t0) == 0
    bank.retrieve("ord-e", n)
