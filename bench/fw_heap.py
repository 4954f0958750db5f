"""Smallest MicroPython heap each device app runs its scenario in, and tag-to-publish latency.

    .venv/bin/python bench/fw_heap.py            # full search, 8 KB..256 KB
    .venv/bin/python bench/fw_heap.py --quick    # CI smoke: two heap sizes only
    .venv/bin/python bench/fw_heap.py --app fitting-room   # the fitting room's scenario
    .venv/bin/python bench/fw_heap.py --app locker-bank [--compartments 24]   # the locker bank
    .venv/bin/python bench/fw_heap.py --transport coap [--app tube-line]   # over CoAP (keys on)
    .venv/bin/python bench/fw_heap.py --tls [--app locker-bank]   # production: MQTT over TLS

`--tls` runs the production transport: a store provisioned by tools/provision.py (store CA,
broker certificate, per-device credentials, ACL), its Mosquitto config run as written
(ProvisionedMosquitto), the gateway and every device over TLS with the store CA (edge/tls.py).
On the unix port mbedTLS allocates its contexts and record buffers with the C allocator, outside
the MicroPython heap (on rp2 it allocates from the MicroPython heap): see docs/benchmarks.md.

Runs the real firmware in `micropython -X heapsize=N` against the virtual rig, a real Mosquitto
and the gateway, and plays the device's scenario (sample pad: boot, online, tag placed,
event persisted and acknowledged, tag removed, `blink` command done). A heap passes if the
whole scenario completes and the process is still alive. Binary search for the smallest.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from hil.fakes import SseReader
from hil.harness import GatewayProcess, Mosquitto, ProvisionedMosquitto, wait_for
from hil.sim.mfrc522 import NtagTag
from hil.sim.store import VirtualStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tube_heap

# Kinds whose heap scenario is a module of its own in bench/ (one line per kind): it has
# PREFIX (device id prefix), WHAT (what its latency measures), add(store, dev) and
# scenario(store, gw, dev) -> latencies (ms).
SCENARIO_MODULES = {"door-counter": "door_counter_heap"}


def pad_scenario(store: VirtualStore, gw: GatewayProcess, dev: str, rounds: int = 3) -> list[float]:
    """Returns tag-placed → event-published latencies (ms), measured by an MQTT subscriber."""
    import paho.mqtt.client as mqtt

    pad = store.pads[dev]
    fw = store.devices[dev]
    fw.wait_line(r"online session", 20)
    published: list[float] = []
    got = threading.Event()

    def on_message(client, userdata, msg):
        if json.loads(msg.payload).get("type") == "tag.placed":
            published.append(time.monotonic())
            got.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{dev}")
    sub.on_message = on_message
    if store.provisioned is None:
        sub.connect("127.0.0.1", gw.broker_port)
        sub.subscribe(f"pe/1/{dev}/evt", 1)
        sub.loop_start()
        time.sleep(0.3)
    latencies = []
    try:
        for i in range(rounds):
            got.clear()
            t0 = time.monotonic()
            pad.place(NtagTag.with_text(bytes([4, 1, 2, 3, 4, 5, i + 1]), "S-1001"))
            # CoAP: no broker in between; TLS: the provisioned broker admits no bench subscriber
            # (no anonymous clients, client id = user name): tag -> persisted instead
            if store.transport == "coap" or store.provisioned is not None:
                wait_for(lambda i=i: len(gw.events(dev, "tag.placed")) >= i + 1, 10,
                         what="tag.placed persisted")
                published.append(time.monotonic())
            elif not got.wait(5):
                raise TimeoutError("tag.placed not published")
            latencies.append((published[-1] - t0) * 1000)
            pad.remove()
            wait_for(lambda i=i: len(gw.events(dev, "tag.removed")) >= i + 1, 10, what="tag.removed persisted")
        r = httpx.post(f"{gw.url}/devices/{dev}/commands", timeout=15,
                       json={"name": "blink", "args": {"times": 1}, "idempotency_key": f"bench-{time.time()}"})
        if r.json().get("status") != "done":
            raise RuntimeError(f"blink not done: {r.text}")
        if not fw.alive():
            raise RuntimeError("firmware died")
    finally:
        if store.provisioned is None:
            sub.loop_stop()
            sub.disconnect()
    return latencies


def fitting_scenario(store: VirtualStore, gw: GatewayProcess, dev: str, rounds: int = 2) -> list[float]:
    """Fitting room: occupied, four garments in at once (collisions), two out, call button,
    `call_ack` done, free. Returns garments-in -> last garment.in persisted (ms)."""
    from gateway.kinds.sample_pad import tags

    room = store.rooms[dev]
    fw = store.devices[dev]
    fw.wait_line(r"online session", 20)
    latencies = []
    for r in range(rounds):
        cards = [NtagTag(bytes([4, 0x60, r, 0, 0, 0, i + 1]), pages=tags.ntag_pages_for_garment(
            "9506000134352", f"B{r}-{i}")) for i in range(4)]
        room.occupy(True)
        t0 = time.monotonic()
        for c in cards:
            room.hang(c)
        wait_for(lambda r=r: len(gw.events(dev, "garment.in")) >= 4 * (r + 1), 20, what="4 garments in")
        latencies.append((time.monotonic() - t0) * 1000)
        for c in cards[:2]:
            room.take(c)
        wait_for(lambda r=r: len(gw.events(dev, "garment.out")) >= 2 * (r + 1), 20, what="2 garments out")
        room.press()
        wait_for(lambda r=r: len(gw.events(dev, "call.pressed")) >= r + 1, 10, what="call.pressed")
        cmd = httpx.post(f"{gw.url}/devices/{dev}/commands", timeout=15,
                         json={"name": "call_ack", "idempotency_key": f"bench-{time.time()}"}).json()
        if cmd.get("status") != "done":
            raise RuntimeError(f"call_ack not done: {cmd}")
        for c in cards[2:]:
            room.take(c)
        room.occupy(False)
        wait_for(lambda r=r: len(gw.events(dev, "room.free")) >= r + 1, 10, what="room.free")
    if not fw.alive():
        raise RuntimeError("firmware died")
    return latencies


def locker_scenario(store: VirtualStore, gw: GatewayProcess, dev: str, wrong: int = 40) -> list[float]:
    """Locker bank: online, the gateway builds the bank from `status`, every compartment
    assigned and loaded (a code each on the bank), `wrong` rejected codes (journal, used list,
    lockout), one pickup collected. Returns code entered -> `door.opened` persisted by the
    gateway (ms)."""
    lk = store.lockers[dev]
    store.devices[dev].wait_line(r"online session", 20)
    wait_for(lambda: httpx.get(f"{gw.url}/lockers/{dev}", timeout=5).status_code == 200, 20,
             what="bank created")
    sizes = {c["id"]: c["size"] for c in httpx.get(f"{gw.url}/lockers/{dev}", timeout=5).json()["compartments"]}
    codes: dict[int, str] = {}
    with SseReader(gw.url) as stream:
        for n, size in sizes.items():
            order = f"{dev}-o{n}"
            r = httpx.post(f"{gw.url}/lockers/{dev}/orders", json={"order": order, "size": size}, timeout=15)
            r.raise_for_status()
            n = r.json()["compartment"]
            r = httpx.post(f"{gw.url}/lockers/{dev}/orders/{order}/load", timeout=30)
            if r.status_code != 200:
                raise RuntimeError(f"load {order}: {r.text}")
            wait_for(lambda: len(gw.events(dev, "door.opened")) >= len(codes) + 1, 10, what="load door open")
            lk.set_occupied(n, True)
            lk.close_door(n)
            ready = wait_for(lambda order=order: [m for m in stream.messages if m.get("type") == "order.ready"
                                      and m.get("order") == order], 20, what=f"{order} ready")
            codes[n] = ready[0]["code"]
        for n in codes:
            order = f"{dev}-o{n}"
            wait_for(lambda order=order: (gw.get(f"/lockers/{dev}/orders/{order}")["code_sync"] or {})
                     .get("status") == "done",
                     30, what=f"code of {order} on the bank")
    for i in range(wrong):
        lk.type_code(str(100000 + i * 7919 % 900000))
        time.sleep(0.06)
    wait_for(lambda: len(gw.events(dev, "code.rejected")) + len(gw.events(dev, "keypad.locked")) >= 1, 20,
             what="rejections reported")
    time.sleep(1.5)  # the last lockout (1 s in the bench config) runs out
    n, code = next(iter(codes.items()))
    t0 = time.monotonic()
    lk.type_code(code)
    wait_for(lambda: [e for e in gw.events(dev, "door.opened") if e["body"]["why"] == "pickup"], 20,
             what="pickup door.opened persisted")
    opened = (time.monotonic() - t0) * 1000
    lk.set_occupied(n, False)
    lk.close_door(n)
    wait_for(lambda: gw.events(dev, "pickup.collected"), 20, what="pickup.collected persisted")
    if not store.devices[dev].alive():
        raise RuntimeError("firmware died")
    return [opened]


LOCKER_APP = {"occupancy": True, "pulse_ms": 300, "verify_ms": 300, "retry_ms": 200, "gap_ms": 50,
              "door_poll_ms": 50, "lockout": {"after": 5, "window_s": 300, "lock_s": [1]}}


def run_at(heap_kb: int, broker: Mosquitto, gw: GatewayProcess, workdir: Path, n: int,
           app: str = "sample-pad", compartments: int = 12,
           transport: str = "mqtt", provisioned: Path | None = None) -> tuple[bool, list[float], str]:
    mod = __import__(SCENARIO_MODULES[app]) if app in SCENARIO_MODULES else None
    prefix = mod.PREFIX if mod else \
        {"fitting-room": "room", "locker-bank": "lk", "tube-station": "tube", "tube-line": "tube"}.get(app, "pad")
    dev = f"{prefix}-h{n}"
    if transport == "coap":  # the device talks to the gateway's CoAP edge, with its key
        store = VirtualStore(workdir / f"h{n}", broker_port=gw.coap_port, heap=f"{heap_kb}k",
                             transport="coap", coap_keys=gw.coap_keys)
    else:  # provisioned: each device gets credentials there, and TLS on the broker's TLS port
        store = VirtualStore(workdir / f"h{n}", broker_port=broker.port, heap=f"{heap_kb}k",
                             locker_keys=gw.locker_keys, provisioned=provisioned)
    if app == "fitting-room":
        store.add_fitting_room(dev)
    elif app == "locker-bank":
        store.add_locker(dev, ["SML"[i % 3] for i in range(compartments)], heap=f"{heap_kb}k", **LOCKER_APP)
    elif mod:
        mod.add(store, dev)
    elif app.startswith("tube"):  # bench/tube_heap.py
        tube_heap.add(store, dev, app)
    else:
        store.add_pad(dev)
    if provisioned is not None:
        broker.reload()  # mosquitto re-reads its password file: the new device's credentials
    store.start()
    try:
        scenario = {"fitting-room": fitting_scenario, "locker-bank": locker_scenario,
                    "tube-station": tube_heap.station_scenario,
                    "tube-line": tube_heap.line_scenario}.get(app, mod.scenario if mod else pad_scenario)
        lat = scenario(store, gw, dev)
        return True, lat, ""
    except Exception as e:  # noqa: BLE001 - any failure means this heap is too small
        tail = "\n".join(store.devices[dev].lines[-3:])
        return False, [], f"{type(e).__name__}: {e} | {tail}"
    finally:
        store.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI smoke: try 96 KB and 12 KB only")
    ap.add_argument("--low", type=int, default=8)
    ap.add_argument("--high", type=int, default=256)
    ap.add_argument("--app", choices=["sample-pad", "fitting-room", "locker-bank", "tube-station", "tube-line",
                                      *SCENARIO_MODULES],
                    default="sample-pad")
    ap.add_argument("--compartments", type=int, default=12, help="locker bank size (default 12)")
    ap.add_argument("--transport", choices=["mqtt", "coap"], default="mqtt")
    ap.add_argument("--tls", action="store_true",
                    help="MQTT over TLS with the store CA, credentials and ACL (tools/provision.py)")
    args = ap.parse_args()
    if args.tls and args.transport != "mqtt":
        ap.error("--tls is MQTT over TLS: leave out --transport coap")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        provisioned = None
        if args.tls:
            from hil.harness import free_port
            from tools import provision
            provisioned = work / "store"
            provision.init_store(provisioned, store="bench", port=free_port(), bind="127.0.0.1")
            broker: Mosquitto = ProvisionedMosquitto(provisioned).start()
            gw = GatewayProcess(work / "gw", broker.port, client_id="gateway",
                                extra_args=["--mqtt-auth", str(provisioned / "gateway.json")],
                                locker_keys=provisioned / provision.LOCKER_KEYS).start()
        else:
            broker = Mosquitto(work / "mosq").start()
            gw = GatewayProcess(work / "gw", broker.port,
                                coap_heartbeat_s=5 if args.transport == "coap" else None).start()
        n = 0
        results: dict[int, bool] = {}
        latencies: list[float] = []
        try:
            def probe(kb: int) -> bool:
                nonlocal n
                n += 1
                ok, lat, why = run_at(kb, broker, gw, work, n, args.app, args.compartments,
                                      args.transport, provisioned)
                results[kb] = ok
                latencies.extend(lat)
                print(f"  heap {kb:4d} KB: {'ok' if ok else 'FAIL'} {why[-300:]}", flush=True)
                return ok

            if args.quick:
                probe(96)
                probe(12)
            else:
                lo, hi = args.low, args.high  # invariant: hi passes (checked), lo fails or untested
                if not probe(hi):
                    print("the scenario fails even at the high bound")
                    return 1
                while hi - lo > 2:
                    mid = (lo + hi) // 2
                    if probe(mid):
                        hi = mid
                    else:
                        lo = mid
        finally:
            gw.stop()
            broker.stop()
    passing = sorted(k for k, ok in results.items() if ok)
    print("\nfirmware heap benchmark (MicroPython unix port, 64-bit)")
    what = {"fitting-room": "4 in->persisted", "locker-bank": "code->opened", "tube-station": "input->persisted",
            "tube-line": "move->done"}.get(args.app, "tag->publish")
    if args.app in SCENARIO_MODULES:
        what = __import__(SCENARIO_MODULES[args.app]).WHAT
    print(f"{'app':<14}{'min heap (KB)':>14}{'goal (KB)':>11}{what + ' p50 (ms)':>25}{'p99 (ms)':>10}")
    p50 = statistics.median(latencies) if latencies else float("nan")
    p99 = max(latencies) if latencies else float("nan")  # few samples: the max is the honest p99
    smallest = passing[0] if passing else None
    name = args.app + (" coap" if args.transport == "coap" else "") + (" tls" if args.tls else "")
    print(f"{name:<14}{str(smallest) if smallest else '-':>14}{96:>11}{p50:>25.1f}{p99:>10.1f}")
    return 0 if passing else 1


if __name__ == "__main__":
    sys.exit(main())
