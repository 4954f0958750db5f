"""The locker bank app (firmware/edge/apps/locker.py) in the real MicroPython binary, compiled
with mpy-cross, on the real sim HAL against a real virtual rig.

No MQTT here: a tiny fake runtime prints each event as a JSON line and takes commands as JSON
lines on a rig UART named `ctl`. The test plays the world: spring-loaded doors that pop open
when their lock is powered (unless the test jams them), customers typing on the keypad UART,
parcels seen by the occupancy sensors.
"""
from __future__ import annotations

import json
import time
from itertools import pairwise

import pytest

from gateway.kinds.locker_bank.core import hash_code, key_id, mac_code, salt_id
from hil.sim.rig import VirtualRig
from tests.support.app_process import AppProcess

SALT = "bank-salt-1"
KEY = bytes(range(7, 39))  # the bank's code key (tools/provision.py: app.code_key)

FAKE_RUNTIME = r'''
import asyncio, json, sys, time
from edge.hal_sim import SimHal
from edge.runtime import Rejected, Failed
from edge.apps.locker import LockerBank

cfg = json.load(open(sys.argv[1]))

class FakeRuntime:
    def __init__(self, cfg):
        self.cfg = cfg
        self.gateway_online = cfg.get("online")
        self.clock = cfg.get("clock", True)  # False: no gateway clock yet (a bank just booted offline)
        self.n = 0
    def now(self):
        return int(time.time() * 1000) if self.clock else None
    def uptime_ms(self):
        return time.ticks_ms()
    def heartbeat(self):
        pass
    def emit(self, etype, body):
        self.n += 1
        print(json.dumps({"evt": etype, "n": self.n, "body": body}))
        return self.n

async def run_cmd(app, msg):
    status, reason, result = "done", None, None
    try:
        result = await app.commands.get(msg["name"])(msg.get("args") or {})
    except Rejected as r:
        status, reason = "rejected", r.reason
    except Failed as f:
        status, reason, result = "failed", f.reason, f.result
    print(json.dumps({"reply": msg["id"], "status": status, "reason": reason, "result": result}))

async def commands(hal, app):
    u = hal.uart("ctl")
    buf = b""
    while True:
        d = u.read()
        if d:
            buf += d
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                asyncio.create_task(run_cmd(app, json.loads(line)))
        await asyncio.sleep_ms(20)

async def main():
    hal = SimHal(cfg)
    app = LockerBank(FakeRuntime(cfg), hal, cfg["app"])
    print(json.dumps({"ready": 1}))
    asyncio.create_task(commands(hal, app))
    await app.run()

asyncio.run(main())
'''

APP = {
    "compartments": ["S", "M", {"id": 3, "size": "L"}],
    "occupancy": True,
    "salt": SALT,
    "code_key": KEY.hex(),
    "pulse_ms": 300,
    "verify_ms": 300,
    "retry_ms": 200,
    "gap_ms": 100,
    "door_poll_ms": 50,
    "ajar_s": 1,
    "lockout": {"after": 3, "window_s": 300, "lock_s": [2, 4, 6]},
}


class Bank(AppProcess):
    """One locker-bank process plus the world around it (doors, parcels, keypad)."""

    def __init__(self, rig: VirtualRig, workdir, dev: str, app: dict | None = None, clock: bool = True):
        super().__init__(workdir, dev, FAKE_RUNTIME, {
            "device_id": dev, "data_dir": str(workdir / dev / "flash"), "app": app or APP,
            "sim": {"host": "127.0.0.1", "port": rig.port}, "clock": clock})
        self.rig = rig
        self.sim = rig.device(dev)
        self.jammed: set[int] = set()
        self.cmd_n = 0
        self.sim.on_output.append(self._spring)

    def _spring(self, pin: str, value: int) -> None:
        # a powered lock releases the latch and the door springs open, unless jammed
        if value and pin.startswith("lock_"):
            n = int(pin[5:])
            if n not in self.jammed:
                self.sim.set_input(f"door_{n}", 1)

    # --- process -------------------------------------------------------------------------
    def start(self) -> Bank:
        self.started_at = self.rig.trace.now()
        self.launch()
        return self

    # --- reading ---------------------------------------------------------------------------
    def events(self, etype: str, start: int = 0) -> list[dict]:
        with self.cond:
            return [m["body"] for m in self.msgs[start:] if m.get("evt") == etype]

    def wait_event(self, etype: str, timeout: float = 5.0, start: int = 0, **match) -> dict:
        return self.wait(lambda m: m.get("evt") == etype and all(m["body"].get(k) == v for k, v in match.items()),
                         f"event {etype} {match}", timeout, start)["body"]

    # --- acting ----------------------------------------------------------------------------
    def send(self, name: str, **args) -> str:
        self.cmd_n += 1
        cid = f"c{self.cmd_n}"
        self.sim.uart_feed("ctl", json.dumps({"id": cid, "name": name, "args": args}).encode() + b"\n")
        return cid

    def reply(self, cid: str, timeout: float = 8.0) -> dict:
        return self.wait(lambda m: m.get("reply") == cid, f"reply to {cid}", timeout)

    def cmd(self, name: str, timeout: float = 8.0, **args) -> dict:
        return self.reply(self.send(name, **args), timeout)

    def set_order(self, n: int, order: str, code: str, exp: int | None = None, key: bytes = KEY) -> dict:
        r = self.cmd("set_order", compartment=n, order=order, mac=mac_code(code, key, SALT), exp=exp,
                     salt_id=salt_id(SALT), key_id=key_id(KEY))
        assert r["status"] == "done", r
        return r

    def type(self, keys: str) -> None:
        self.sim.uart_feed("keypad", keys.encode())

    def display(self) -> str:
        return bytes(self.sim.uart_from_fw.get("keypad", b"")).decode()

    def wait_display(self, text: str, timeout: float = 3.0) -> None:
        ok = self.sim.wait_for(lambda d: text in bytes(d.uart_from_fw.get("keypad", b"")).decode(), timeout)
        assert ok, f"display never showed {text!r}; it showed:\n{self.display()}"

    def pulses(self, n: int, since: float = 0.0) -> list[tuple[float, float]]:
        """(on, off) intervals of lock n, from the rig's trace."""
        out, on = [], None
        for t, v in self.sim.output_history(f"lock_{n}"):
            if t < since:
                continue
            if v and on is None:
                on = t
            elif not v and on is not None:
                out.append((on, t))
                on = None
        if on is not None:
            out.append((on, float("inf")))
        return out

    def all_pulses(self, since: float = 0.0) -> list[tuple[float, float, int]]:
        return sorted((a, b, n) for n in (1, 2, 3) for a, b in self.pulses(n, since))

    def close_door(self, n: int, parcel_inside: bool) -> None:
        self.sim.set_input(f"occ_{n}", 1 if parcel_inside else 0)
        self.sim.set_input(f"door_{n}", 0)


@pytest.fixture
def rig():
    with VirtualRig() as r:
        yield r


@pytest.fixture
def bank(rig, tmp_path):
    made: list[Bank] = []

    def make(dev: str = "locker-t1", app: dict | None = None, clock: bool = True, **world) -> Bank:
        b = Bank(rig, tmp_path, dev, app, clock)
        for n in (1, 2, 3):  # doors shut, compartments empty, before power-on
            b.sim.set_input(f"door_{n}", 0)
            b.sim.set_input(f"occ_{n}", 0)
        made.append(b)
        return b
    yield make
    for b in made:
        b.kill()


def no_overlap(pulses) -> bool:
    return all(b1 <= a2 for (_, b1, _), (a2, _, _) in pairwise(pulses))


def test_code_opens_exactly_its_door_and_an_empty_close_reports_collected(bank):
    b = bank().start()
    b.set_order(2, "ord-2", "482913")
    b.sim.set_input("occ_2", 1)  # the parcel is in
    t0 = b.rig.trace.now()
    b.type("48")
    b.type("2913#")
    opened = b.wait_event("door.opened", compartment=2)
    assert opened == {"compartment": 2, "why": "pickup", "order": "ord-2"}
    assert len(b.pulses(2, t0)) == 1 and not b.pulses(1, t0) and not b.pulses(3, t0)
    on, off = b.pulses(2, t0)[0]
    assert off - on < 0.3 + 0.15, "the pulse stops when the door opens, and never exceeds pulse_ms"
    b.wait_display("Door 2 is open - please take your parcel and close the door")
    ajar = b.wait_event("door.ajar", compartment=2, timeout=3)
    assert ajar["why"] == "pickup" and ajar["open_ms"] >= 1000
    b.close_door(2, parcel_inside=False)
    collected = b.wait_event("pickup.collected")
    assert collected == {"compartment": 2, "order": "ord-2", "occupied": 0}
    closed = b.events("door.closed")[0]
    assert closed["why"] == "pickup" and closed["occupied"] == 0 and closed["open_ms"] >= 1000
    st = b.cmd("status")["result"]
    assert [c[2] for c in st["compartments"]] == ["free", "free", "free"]


def test_a_code_opens_once_and_its_reuse_is_refused_and_reported(bank):
    b = bank().start()
    b.set_order(1, "ord-1", "730145")
    b.sim.set_input("occ_1", 1)
    b.type("730145#")
    b.wait_event("door.opened", compartment=1)
    b.close_door(1, parcel_inside=False)
    b.wait_event("pickup.collected", compartment=1)
    t1 = b.rig.trace.now()
    m = b.mark()
    b.type("730145#")
    reused = b.wait_event("code.reused", start=m)
    assert reused == {"compartment": 1, "order": "ord-1", "failures": 1}
    time.sleep(0.3)
    assert not b.all_pulses(t1), "a spent code powers no lock"
    b.wait_display("already been used")


def test_three_wrong_codes_lock_the_keypad_with_growing_lockouts(bank):
    b = bank().start()
    b.set_order(3, "ord-3", "615204")
    b.type("111112#")
    b.type("999990#")
    b.type("123450#")
    locked = b.wait_event("keypad.locked")
    assert locked == {"for_s": 2, "level": 1, "failures": 3}
    rejected = b.events("code.rejected")
    assert [r["reason"] for r in rejected] == ["unknown"] * 3 and [r["failures"] for r in rejected] == [1, 2, 3]
    b.wait_display("locked for 1 minute")
    b.kill()  # pulling the plug does not unlock the keypad
    b.start()
    t = b.rig.trace.now()
    b.type("615204#")  # the right code, but the keypad is locked
    b.wait_display("keypad is locked")
    time.sleep(0.3)
    assert not b.all_pulses(t) and not b.events("door.opened")
    time.sleep(2.0)
    m = b.mark()
    for code in ("000001", "000002", "000003"):
        b.type(code + "#")
    assert b.wait_event("keypad.locked", start=m) == {"for_s": 4, "level": 2, "failures": 3}


@pytest.mark.parametrize("clock", [True, False], ids=["clock", "no-clock"])
def test_wrong_codes_count_across_reboots(bank, clock):
    # the tester's attack: reboot the bank after every 2 wrong codes. Without the gateway's
    # clock the time the bank was off is unknown: the failures still count (as recent ones).
    b = bank(clock=clock).start()
    b.type("111112#")
    b.type("999990#")
    assert b.wait_event("code.rejected", failures=2)["reason"] == "unknown"
    b.kill()
    m = b.mark()
    b.start()
    b.type("123450#")
    assert b.wait_event("code.rejected", start=m)["failures"] == 3
    assert b.wait_event("keypad.locked", start=m) == {"for_s": 2, "level": 1, "failures": 3}
    b.wait_display("locked for 1 minute")


def test_a_wrong_code_is_on_flash_before_the_keypad_answers(bank):
    # the plug is pulled the moment the bank reports the wrong code (before or while the display
    # answers): each one still counts after power-on
    b = bank()
    b.start()
    for n in (1, 2):
        m = b.mark()
        b.type(f"{424240 + n:06d}#")
        assert b.wait_event("code.rejected", start=m)["failures"] == n
        b.kill()
        b.start()
    m = b.mark()
    b.type("424243#")
    assert b.wait_event("keypad.locked", start=m) == {"for_s": 2, "level": 1, "failures": 3}


def _state_file(b: Bank, lk: list, clk: int | None) -> None:
    flash = b.dir / "flash"
    flash.mkdir(parents=True)
    (flash / "locker.json").write_text(json.dumps(
        {"v": 2, "ids": [1, 2, 3], "used": [], "lk": lk, "clk": clk,
         "c": [["ord-1", hash_code("246810", SALT), None, 0, None, None, 0, None],
               [None, None, None, 0, None, None, 0, None], [None, None, None, 0, None, None, 0, None]]}))


def test_an_old_state_file_without_the_failures_loads_and_keeps_the_level(bank):
    # locker.json as the firmware before this change wrote it: "lk" is [level, ms left]
    b = bank()
    _state_file(b, [1, 0], None)
    b.sim.set_input("occ_1", 1)
    b.start()
    assert b.cmd("status")["result"]["keypad_locked_s"] == 0
    m = b.mark()
    b.type("111112#")
    assert b.wait_event("code.rejected", start=m)["failures"] == 1
    b.kill()
    saved = json.loads((b.dir / "flash" / "locker.json").read_text())
    assert saved["lk"][:2] == [1, 0], "an older firmware still reads level and lockout"
    m = b.mark()
    b.start()
    b.type("111113#")
    b.type("111114#")
    # the level of the old file (1) and the failure from before the reboot both count
    assert b.wait_event("keypad.locked", start=m) == {"for_s": 4, "level": 2, "failures": 3}


@pytest.mark.parametrize("clock", [True, False], ids=["clock", "no-clock"])
def test_time_off_is_credited_only_when_the_clock_proves_it(bank, clock):
    # saved 400 s ago by the gateway's clock: a 60 s lockout then running, two failures just
    # before it, the last failure 401 s ago (under reset_s: the level stays)
    b = bank(clock=clock)
    t = 100_000  # the ticks of the previous boot
    _state_file(b, [1, 60_000, t, t - 1000, [t - 1000, t - 500], int(time.time() * 1000) - 400_000],
                int(time.time() * 1000) - 400_000)
    b.sim.set_input("occ_1", 1)
    b.start()
    left = b.cmd("status")["result"]["keypad_locked_s"]
    if not clock:  # the time off is unknown: the lockout resumes where it was, failures stay
        assert 50 <= left <= 60
        b.type("246810#")
        b.wait_display("The keypad is locked - please try again in 1 minute")
        return
    assert left == 0, "the lockout ended while the bank was off"
    m = b.mark()
    b.type("111112#")
    assert b.wait_event("code.rejected", start=m)["failures"] == 1, "the old failures are out of the window"
    b.type("111113#")
    b.type("111114#")
    assert b.wait_event("keypad.locked", start=m) == {"for_s": 4, "level": 2, "failures": 3}


def test_lock_pulsed_but_door_never_opens_is_jammed_after_one_retry(bank):
    b = bank().start()
    b.set_order(1, "ord-1", "274610")
    b.sim.set_input("occ_1", 1)
    b.jammed.add(1)
    t0 = b.rig.trace.now()
    b.type("274610#")
    jam = b.wait_event("lock.jammed", timeout=5)
    assert jam == {"compartment": 1, "why": "pickup", "attempts": 2}
    pulses = b.pulses(1, t0)
    assert len(pulses) == 2 and all(0.25 <= off - on < 0.45 for on, off in pulses), pulses
    assert not b.events("door.opened") and not b.events("door.forced")
    b.wait_display("did not open")
    assert b.cmd("status")["result"]["compartments"][0][2] == "blocked"
    # staff free the latch and clear the block: the customer's code still works
    b.jammed.clear()
    assert b.cmd("clear", compartment=1)["status"] == "done"
    b.type("274610#")
    assert b.wait_event("door.opened", compartment=1)["why"] == "pickup"
    # a staff command on a jammed lock fails with the reason
    b.close_door(1, parcel_inside=False)
    b.wait_event("pickup.collected", compartment=1)
    b.jammed.add(2)
    r = b.cmd("open", compartment=2, reason="load")
    assert (r["status"], r["reason"], r["result"]) == ("failed", "jammed", {"compartment": 2, "attempts": 2})


def test_door_opened_without_unlock_is_forced_and_blocks_the_compartment(bank):
    b = bank().start()
    b.set_order(3, "ord-3", "508317")
    b.sim.set_input("door_3", 1)  # crowbar
    forced = b.wait_event("door.forced")
    assert forced == {"compartment": 3, "order": "ord-3"}
    assert b.cmd("status")["result"]["compartments"][2][2] == "blocked"
    b.type("508317#")
    assert b.wait_event("code.rejected", compartment=3)["reason"] == "blocked"
    r = b.cmd("clear", compartment=3)
    assert (r["status"], r["reason"]) == ("rejected", "door-open")
    b.sim.set_input("door_3", 0)
    assert b.wait_event("door.closed", compartment=3)["why"] == "forced"
    assert b.cmd("clear", compartment=3)["result"] == {"compartment": 3, "state": "loaded"}
    assert not b.all_pulses(), "nothing was ever unlocked"


def test_reboot_never_pulses_a_lock_restores_codes_and_resolves_the_pickup_by_the_sensor(bank):
    b = bank().start()
    b.set_order(1, "ord-1", "846201")
    b.set_order(2, "ord-2", "319574")
    b.set_order(3, "ord-3", "672058")
    for n in (1, 2, 3):
        b.sim.set_input(f"occ_{n}", 1)
    # power fails while lock 2 is powered; the latch had let go and the customer opens the door
    b.jammed.add(2)
    b.type("319574#")
    assert b.sim.wait_output("lock_2", 1, 3)
    b.kill()
    b.sim.set_input("door_2", 1)
    b.jammed.clear()
    m = b.mark()
    b.start()
    opened = b.wait_event("door.opened", compartment=2, start=m)
    assert opened == {"compartment": 2, "why": "pickup", "order": "ord-2", "boot": True}
    b.close_door(2, parcel_inside=False)
    b.wait_event("pickup.collected", compartment=2)
    assert not any(v for t, v in b.sim.output_history("lock_2") if t > b.started_at)
    # power fails again mid-unlock, and this time the door stays shut
    b.jammed.add(3)
    b.type("672058#")
    assert b.sim.wait_output("lock_3", 1, 3)
    b.kill()
    m = b.mark()
    b.start()
    assert b.wait_event("pickup.interrupted", start=m) == {"compartment": 3, "order": "ord-3"}
    b.wait_display("Sorry, the locker restarted - please enter your code again")
    time.sleep(0.5)
    assert not b.all_pulses(b.started_at), "no lock is powered at boot"
    assert b.events("door.forced") == []
    # codes survived both reboots: 1 still works, 3 got its code back, 2 is spent
    b.jammed.clear()
    b.type("846201#")
    b.wait_event("door.opened", compartment=1, start=m)
    b.type("672058#")
    b.wait_event("door.opened", compartment=3, start=m)
    b.type("319574#")
    b.wait_event("code.reused", compartment=2, start=m)


def test_unlocks_are_serialised_one_lock_at_a_time(bank):
    b = bank().start()
    b.set_order(3, "ord-3", "902746")
    t0 = b.rig.trace.now()
    c1 = b.send("open", compartment=1, reason="load")
    c2 = b.send("open", compartment=2, reason="service")
    b.type("902746#")  # a customer at the same moment
    r1, r2 = b.reply(c1), b.reply(c2)
    assert r1["status"] == r2["status"] == "done"
    b.wait_event("door.opened", compartment=3)
    pulses = b.all_pulses(t0)
    assert sorted(n for _, _, n in pulses) == [1, 2, 3]
    assert no_overlap(pulses), pulses
    # staff: open all for service, strictly one after the other
    m = b.mark()
    for n in (1, 2, 3):
        b.sim.set_input(f"door_{n}", 0)
    b.wait(lambda _: len(b.events("door.closed", m)) == 3, "three doors closed")
    t1 = b.rig.trace.now()
    r = b.cmd("open_all", reason="service")
    assert r["result"] == {"opened": [1, 2, 3], "jammed": [], "skipped": []}
    pulses = b.all_pulses(t1)
    assert [n for _, _, n in pulses] == [1, 2, 3] and no_overlap(pulses)


def test_commands_are_refused_when_the_compartment_state_does_not_allow_them(bank):
    b = bank().start()
    # load flow: staff opens a free compartment, closes it with the parcel in
    assert b.cmd("open", compartment=1, reason="load")["status"] == "done"
    b.close_door(1, parcel_inside=True)
    assert b.wait_event("order.loaded", compartment=1) == {"compartment": 1, "occupied": 1}
    # ... or closes it empty: not loaded
    assert b.cmd("open", compartment=2, reason="load")["status"] == "done"
    b.close_door(2, parcel_inside=False)
    assert b.wait_event("load.empty") == {"compartment": 2}
    b.set_order(1, "ord-1", "385120")

    def refused(name, **args):
        r = b.cmd(name, **args)
        assert r["status"] == "rejected", r
        return r["reason"]

    assert refused("open", compartment=1, reason="load") == "occupied"
    assert refused("open", compartment=2, reason="retrieve") == "empty"
    assert refused("open", compartment=9, reason="service") == "no-compartment"
    assert refused("open", compartment=1, reason="pickup") == "bad-args"
    assert refused("set_order", compartment=1, order="other", mac=mac_code("111", KEY, SALT)) == "occupied"
    assert refused("set_order", compartment=2, order="ord-2", mac=mac_code("385120", KEY, SALT)) == "code-in-use"
    assert refused("set_order", compartment=2, order="ord-2", mac="00" * 32, salt_id="deadbeef") == "salt-mismatch"
    assert refused("set_order", compartment=2, order="ord-2", mac="00" * 32, key_id="deadbeef") == "key-mismatch"
    # an unkeyed hash is not a verifier any more
    assert refused("set_order", compartment=2, order="ord-2", hash=hash_code("385121", SALT)) == "bad-args"
    assert refused("set_order", compartment=2, order="ord-2", mac="00" * 32,
                   exp=int(time.time() * 1000) - 1000) == "expired"
    assert refused("revoke", compartment=2) == "empty"
    assert refused("revoke", compartment=1, order="nope") == "wrong-order"
    assert refused("set_out_of_order", compartment=1) == "occupied"
    assert refused("clear", compartment=1) == "not-blocked"
    assert b.cmd("set_out_of_order", compartment=2)["result"]["state"] == "out_of_order"
    assert refused("open", compartment=2, reason="load") == "out-of-order"
    assert refused("set_order", compartment=2, order="ord-2", mac="11" * 32) == "out-of-order"
    # revoke: the code stops working, the parcel stays until staff retrieve it
    assert b.cmd("revoke", compartment=1, order="ord-1")["result"]["state"] == "held"
    b.type("385120#")
    assert b.wait_event("code.rejected", compartment=1)["reason"] == "revoked"
    assert b.cmd("open", compartment=1, reason="retrieve")["status"] == "done"
    b.close_door(1, parcel_inside=False)
    assert b.wait_event("order.retrieved") == {"compartment": 1, "order": "ord-1", "occupied": 0}
    # load_codes: several at once, each refused on its own
    r = b.cmd("load_codes", salt_id=salt_id(SALT), orders=[
        {"compartment": 1, "order": "a", "mac": mac_code("104729", KEY, SALT)},
        {"compartment": 2, "order": "b", "mac": mac_code("130363", KEY, SALT)},
        {"compartment": 3, "order": "c", "mac": mac_code("104729", KEY, SALT)}])["result"]
    assert r == {"set": [1], "refused": [[2, "out-of-order"], [3, "code-in-use"]]}


def test_the_display_says_what_happened_and_what_to_do_next(bank):
    """Every keypad outcome not shown by the other tests (and the HIL scenarios) has its text."""
    b = bank(app={**APP, "entry_timeout_s": 1}).start()
    idle = "Enter your pickup code, then #"
    b.wait_display(idle)

    def shows(text: str, times: int = 1) -> None:
        ok = b.sim.wait_for(lambda d: bytes(d.uart_from_fw.get("keypad", b"")).decode().count(text) >= times, 3)
        assert ok, f"display never showed {text!r} {times}x; it showed:\n{b.display()}"

    b.type("12#")
    shows("Please enter all 6 digits of your code, then #")
    b.type("12*")
    shows("Cleared - " + idle)
    b.type("12")  # the customer walks away: the entry times out and the bank greets the next one
    shows(idle, 3)

    b.set_order(1, "ord-1", "530917")
    b.sim.set_input("occ_1", 1)
    b.jammed.add(1)
    b.type("530917#")
    shows("Code OK - door 1 is opening")
    b.type("530917#")  # impatient: the same code again while the lock works
    shows("Door 1 is opening - please wait")
    shows("Sorry, door 1 did not open. Staff have been told - please ask at the store counter, "
          "your parcel is safe")
    assert b.events("code.reused") == [], "the same code twice in a row is not a reuse"

    b.set_order(2, "ord-2", "264081")
    b.sim.set_input("occ_2", 1)
    assert b.cmd("open", compartment=2, reason="service")["status"] == "done"
    b.type("264081#")
    shows("Door 2 is open right now - please ask at the store counter")
    b.close_door(2, parcel_inside=True)


def test_helper_modules_use_the_locker_record_layout():
    # edge.apps.locker_boot / locker_staff (loaded on use, then dropped) cannot import the
    # locker's hidden const() fields: they restate them and must agree
    import ast
    import re

    from hil.sim.firmware import FIRMWARE
    src = (FIRMWARE / "edge/apps/locker.py").read_text()
    fields = {m[0]: int(m[1]) for m in re.findall(r"^(_[A-Z]+) = const\((\d+)\)", src, re.MULTILINE)}
    assert len(fields) == 9
    for helper in ("locker_boot.py", "locker_staff.py"):
        tree = ast.parse((FIRMWARE / "edge/apps" / helper).read_text())
        unpack = next(n for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Tuple))
        names = [t.id for t in unpack.targets[0].elts]
        assert {n: i for i, n in enumerate(names)} == fields, helper


def test_a_bank_upgraded_in_the_field_keeps_its_orders_from_the_hex_state_file(bank):
    # locker.json exactly as the firmware before raw (32-byte) hashes in RAM wrote it: hashes as
    # 64 hex digits. Compartment 1 loaded; 3 loaded with a pickup cut short by a power failure
    # (door shut, parcel in: the code is given back); 2 held with an unreadable hash; a spent code.
    b = bank()
    flash = b.dir / "flash"
    flash.mkdir(parents=True)
    spent = hash_code("555123", SALT)
    old = {"v": 2, "ids": [1, 2, 3], "used": [[spent[:16], 2, "ord-old", "u"]], "lk": [0, 0], "clk": None,
           "c": [["ord-1", hash_code("246810", SALT), None, 0, None, None, 0, None],
                 ["ord-2", "zz" * 32, None, 0, None, None, 0, None],
                 ["ord-3", None, None, 0, None, "pickup", 1, hash_code("135791", SALT)]]}
    (flash / "locker.json").write_text(json.dumps(old))
    for n in (1, 3):
        b.sim.set_input(f"occ_{n}", 1)
    b.start()
    assert b.wait_event("pickup.interrupted") == {"compartment": 3, "order": "ord-3"}
    st = b.cmd("status")["result"]
    assert [c[2] for c in st["compartments"]] == ["loaded", "held", "loaded"]
    # saved again in the same hex format: the new hashes are readable by the old firmware too
    saved = json.loads((flash / "locker.json").read_text())
    assert saved["v"] == 2 and saved["ids"] == [1, 2, 3]
    assert [s[1] for s in saved["c"]] == [hash_code("246810", SALT), None, hash_code("135791", SALT)]
    assert saved["used"] == old["used"]
    m = b.mark()
    b.type("555123#")
    assert b.wait_event("code.reused", start=m) == {"compartment": 2, "order": "ord-old", "failures": 1}
    b.type("246810#")
    assert b.wait_event("door.opened", compartment=1, start=m)["order"] == "ord-1"
    b.close_door(1, parcel_inside=False)
    b.wait_event("pickup.collected", compartment=1, start=m)
    b.type("135791#")
    assert b.wait_event("door.opened", compartment=3, start=m)["order"] == "ord-3"
    # a spent raw hash is remembered under the same 16 hex digits as before
    saved = json.loads((flash / "locker.json").read_text())
    assert [hash_code("246810", SALT)[:16], 1, "ord-1", "u"] in saved["used"]
    assert saved["c"][2][1] is None and saved["c"][2][7] == hash_code("135791", SALT)


def test_a_code_opens_with_the_keyed_verifier_and_a_mac_under_another_key_never_does(bank):
    b = bank().start()
    assert b.cmd("status")["result"]["key_id"] == key_id(KEY)
    b.set_order(1, "ord-1", "482913", key=bytes(32))  # another bank's key: the bank cannot tell
    b.set_order(2, "ord-2", "530917")
    for n in (1, 2):
        b.sim.set_input(f"occ_{n}", 1)
    m = b.mark()
    b.type("482913#")
    assert b.wait_event("code.rejected", start=m)["reason"] == "unknown"
    t0 = b.rig.trace.now()
    b.type("530917#")
    assert b.wait_event("door.opened", start=m)["compartment"] == 2
    assert not b.pulses(1, t0)
    # what the bank keeps on flash is the MAC, never the unkeyed hash
    saved = (b.dir / "flash" / "locker.json").read_text()
    assert hash_code("482913", SALT) not in saved and "530917" not in saved
    assert "m" + mac_code("482913", bytes(32), SALT) in saved


def test_a_bank_without_a_code_key_takes_no_codes(bank):
    b = bank("locker-t2", app={k: v for k, v in APP.items() if k != "code_key"}).start()
    assert b.cmd("status")["result"]["key_id"] is None
    r = b.cmd("set_order", compartment=1, order="ord-1", mac=mac_code("482913", KEY, SALT))
    assert (r["status"], r["reason"]) == ("rejected", "no-key")


def test_a_legacy_bank_verifies_its_old_hashes_until_the_gateway_replaces_them_with_macs(bank):
    # the flash of a bank before keyed codes: three live SHA-256 hashes
    b = bank()
    flash = b.dir / "flash"
    flash.mkdir(parents=True)
    codes = {1: "246810", 2: "135791", 3: "975310"}
    old = {"v": 2, "ids": [1, 2, 3], "used": [], "lk": [0, 0], "clk": None,
           "c": [[f"ord-{n}", hash_code(codes[n], SALT), None, 0, None, None, 0, None] for n in (1, 2, 3)]}
    (flash / "locker.json").write_text(json.dumps(old))
    for n in (1, 2, 3):
        b.sim.set_input(f"occ_{n}", 1)
    b.start()
    # the gateway's upgrade: only where the same order still holds a live code
    r = b.cmd("load_codes", replace=True, salt_id=salt_id(SALT), key_id=key_id(KEY), orders=[
        {"compartment": 1, "order": "ord-1", "mac": mac_code(codes[1], KEY, SALT)},
        {"compartment": 2, "order": "ord-other", "mac": mac_code(codes[2], KEY, SALT)}])
    assert r["result"] == {"set": [1], "refused": [[2, "not-live"]]}
    saved = json.loads((flash / "locker.json").read_text())
    assert [s[1] for s in saved["c"]] == ["m" + mac_code(codes[1], KEY, SALT), hash_code(codes[2], SALT),
                                          hash_code(codes[3], SALT)]
    assert saved["used"] == [], "a replaced verifier is the same code, not a revoked one"
    # after a reboot: the MAC read back from flash opens 1, the legacy hash still opens 2
    b.kill()
    b.start()
    m = b.mark()
    b.type(codes[1] + "#")
    assert b.wait_event("door.opened", compartment=1, start=m)["order"] == "ord-1"
    b.type(codes[2] + "#")
    assert b.wait_event("door.opened", compartment=2, start=m)["order"] == "ord-2"
    b.close_door(2, parcel_inside=False)
    b.wait_event("pickup.collected", compartment=2, start=m)
    b.type(codes[2] + "#")  # a spent legacy code still says so
    assert b.wait_event("code.reused", start=m)["compartment"] == 2
    saved = json.loads((flash / "locker.json").read_text())
    assert saved["c"][2][1] == hash_code(codes[3], SALT)  # untouched until replaced


def _lines(texts) -> str:
    from gateway.http.screen_texts import locker_lines
    return locker_lines(texts.for_page("locker-t1"))


def test_the_display_says_the_stores_words_in_french_and_keeps_them_offline_across_a_reboot(bank):
    """[screens] locker_* as the gateway sends them (`texts`, docs/lockers.md "Texts"): the store's
    own French words, a resting bank that says where to go instead, kept on flash for a reboot
    with no gateway at all (this fake runtime never connects)."""
    from gateway.http.screen_texts import ScreenTexts
    fr = ScreenTexts({"fr": {"locker_resting": "Ces casiers se reposent - demandez a la caisse, merci"}}, "fr")
    b = bank(app={**APP, "entry_timeout_s": 1}).start()
    b.wait_display("Enter your pickup code, then #")  # built in, before the gateway says anything
    assert b.cmd("texts", rev=7, t=_lines(fr))["result"] == {"rev": 7}
    b.wait_display("Tapez votre code de retrait, puis #")
    b.type("12#")
    b.wait_display("Tapez les 6 chiffres de votre code, puis #")
    b.type("000000#")
    b.wait_display("Code inconnu - verifiez-le et reessayez")
    for n in (1, 2, 3):  # staff take every compartment out of order: the bank rests, kindly
        assert b.cmd("set_out_of_order", compartment=n)["status"] == "done"
    b.wait_display("Ces casiers se reposent - demandez a la caisse, merci")
    # a bad line (another placeholder than the built-in one) is refused; the French words stay
    bad = _lines(fr).replace("Code bon - la porte %d s'ouvre", "Code bon - la porte %s s'ouvre")
    r = b.cmd("texts", rev=8, t=bad)
    assert (r["status"], r["reason"]) == ("rejected", "bad-texts")
    b.kill()
    b.start()  # no gateway: what it shows comes from its flash
    ok = b.sim.wait_for(lambda d: bytes(d.uart_from_fw.get("keypad", b"")).decode().count(
        "Ces casiers se reposent - demandez a la caisse, merci") >= 2, 5)
    assert ok, f"the resting text did not come back after the reboot:\n{b.display()}"
    b.type("12#")
    ok = b.sim.wait_for(lambda d: bytes(d.uart_from_fw.get("keypad", b"")).decode().count(
        "Tapez les 6 chiffres de votre code, puis #") >= 2, 5)
    assert ok, f"the French words did not survive the reboot:\n{b.display()}"
    assert "Please enter all" not in b.display()
    assert b.cmd("texts", rev=7, t=_lines(fr))["result"] == {"rev": 7}  # the same: kept as is
    # the store goes back to the built-in words: rev 0, nothing left on flash
    assert b.cmd("texts", rev=0, t="")["result"] == {"rev": 0}
    assert not (b.dir / "flash" / "texts.txt").exists()
    b.type("12#")
    b.wait_display("Please enter all 6 digits of your code, then #")


def test_the_firmware_built_in_texts_are_the_gateway_english_defaults():
    """edge/apps/locker.py TX (what a bank shows before the gateway sends its texts) and
    [screens]' built-in English locker_* texts are the same lines in the same order."""
    import ast
    import re

    from gateway.http.screen_texts import DEFAULTS, LOCKER_KEYS
    from hil.sim.firmware import FIRMWARE
    tree = ast.parse((FIRMWARE / "edge/apps/locker.py").read_text())
    tx = next(n.value for n in tree.body if isinstance(n, ast.Assign)
              and getattr(n.targets[0], "id", None) == "TX")
    lines = ast.literal_eval(tx).decode().split("\n")
    assert lines[0] == "0" and lines[-1] == ""
    assert lines[1:-1] == [DEFAULTS["en"][k] for k in LOCKER_KEYS]
    src = (FIRMWARE / "edge/apps/locker.py").read_text()
    idx = dict(re.findall(r"^_T_([A-Z0-9]+) = const\((\d+)\)", src, re.MULTILINE))
    assert [f"locker_{k.lower()}" for k, _ in sorted(idx.items(), key=lambda kv: int(kv[1]))] \
        == list(LOCKER_KEYS)
    # locker_boot cannot import the const: it restates _T_RESTARTED
    assert f"b.boot_msg = {idx['RESTARTED']}  #" in (FIRMWARE / "edge/apps/locker_boot.py").read_text()
