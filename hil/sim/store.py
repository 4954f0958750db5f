"""A virtual store: the virtual rig plus real firmware processes, one per device.

Used by the end-to-end tests, the HIL scenarios on the virtual rig, the demo and the
benchmarks. The gateway and the broker are not part of it: point it at any broker.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Self

from hil.sim.firmware import FirmwareProcess
from hil.sim.mfrc522 import MFRC522Emulator
from hil.sim.rig import SimDevice, VirtualRig


class PadHandle:
    """What the world does to a sample pad and what it sees of it."""

    def __init__(self, fw: FirmwareProcess, sim: SimDevice, reader: MFRC522Emulator):
        self.fw, self.sim, self.reader = fw, sim, reader

    @property
    def dev(self) -> str:
        return self.fw.dev

    def place(self, tag) -> None:
        self.sim.trace.note(self.dev, f"place tag {tag.uid.hex()}")
        self.reader.place(tag)

    def remove(self) -> None:
        self.sim.trace.note(self.dev, "remove tag")
        self.reader.remove()

    @property
    def led(self) -> int:
        return self.sim.output("led")


class LockerHandle:
    """The world around a locker bank: spring-loaded doors that pop open while their lock is
    powered (unless jammed), parcels seen by occupancy sensors, a customer at the keypad."""

    def __init__(self, fw: FirmwareProcess, sim: SimDevice, compartments: list[int]):
        self.fw, self.sim, self.compartments = fw, sim, compartments
        self.jammed: set[int] = set()
        for n in compartments:  # doors shut, compartments empty, before power-on
            sim.set_input(f"door_{n}", 0)
            sim.set_input(f"occ_{n}", 0)
        sim.on_output.append(self._spring)

    @property
    def dev(self) -> str:
        return self.fw.dev

    def _spring(self, pin: str, value: int) -> None:
        if value and pin.startswith("lock_"):
            n = int(pin[5:])
            if n not in self.jammed:
                self.sim.set_input(f"door_{n}", 1)

    def open_door(self, n: int) -> None:
        """The door opens (by hand: without an unlock the firmware calls it forced)."""
        self.sim.set_input(f"door_{n}", 1)

    def close_door(self, n: int) -> None:
        self.sim.set_input(f"door_{n}", 0)

    def set_occupied(self, n: int, value: bool) -> None:
        self.sim.set_input(f"occ_{n}", 1 if value else 0)

    def door(self, n: int) -> int:
        return self.sim.inputs.get(f"door_{n}", 0)

    def type_code(self, code: str, enter: bool = True) -> None:
        """Keys typed on the keypad (`#` enters the code)."""
        self.sim.trace.note(self.dev, "keypad entry")
        self.sim.uart_feed("keypad", (code + ("#" if enter else "")).encode())

    def lock(self, n: int) -> int:
        """Lock n's solenoid output right now (1 = powered)."""
        return self.sim.output(f"lock_{n}")

    def pulses(self, n: int, since: float = 0.0) -> int:
        """How many times lock n was powered since trace time `since`."""
        return sum(1 for t, v in self.sim.output_history(f"lock_{n}") if v and t >= since)

    def display(self) -> str:
        return bytes(self.sim.uart_from_fw.get("keypad", b"")).decode(errors="replace")

    def now(self) -> float:
        return self.sim.trace.now()


class FittingRoomHandle:
    """The world of a fitting room: garments on the hook (several tags in the reader's
    field), the door/curtain occupancy sensor, the call button and its LED."""

    def __init__(self, fw: FirmwareProcess, sim: SimDevice, reader: MFRC522Emulator):
        self.fw, self.sim, self.reader = fw, sim, reader
        sim.set_input("occupancy", 0)
        sim.set_input("button", 0)

    @property
    def dev(self) -> str:
        return self.fw.dev

    def hang(self, tag) -> None:
        self.sim.trace.note(self.dev, f"garment in {tag.uid.hex()}")
        self.reader.add(tag)

    def take(self, tag) -> None:
        self.sim.trace.note(self.dev, f"garment out {tag.uid.hex()}")
        self.reader.remove(tag)

    def occupy(self, value: bool = True) -> None:
        self.sim.set_input("occupancy", 1 if value else 0)

    def press(self, ms: int = 150) -> None:
        self.sim.set_input("button", 1)
        time.sleep(ms / 1000)
        self.sim.set_input("button", 0)

    @property
    def call_led(self) -> int:
        return self.sim.output("call_led")


class TubeHandle:
    """The world around a tube line (docs/tube.md): staff at the stations load carriers into
    send chambers, press SEND and take carriers out of the bins; `model` is the virtual line
    between the boards (hil/sim/tube.py), `devices` maps each station to its board."""

    def __init__(self, rig: VirtualRig, model, devices: dict[str, str]):
        self.rig, self.model, self.devices = rig, model, devices

    def _sim(self, station: str) -> SimDevice:
        return self.rig.device(self.devices[station])

    def display(self, station: str) -> str:
        """The station display's last line."""
        raw = bytes(self._sim(station).uart_from_fw.get("display", b"")[-400:])
        return raw.decode(errors="replace").rstrip("\n").rsplit("\n", 1)[-1]

    def load(self, station: str) -> None:
        """Open the station door, put a carrier in the send chamber, close the door."""
        sim = self._sim(station)
        sim.trace.note(sim.name, "staff load a carrier")
        sim.set_input("door", 1)
        sim.set_input("chamber", 1)
        sim.set_input("door", 0)

    def press_send(self, station: str, ms: int = 150) -> None:
        """Hold the station's SEND button for `ms` (longer than the firmware's debounce)."""
        sim = self._sim(station)
        sim.set_input("send", 1)
        time.sleep(ms / 1000)
        sim.set_input("send", 0)

    def take(self, station: str) -> None:
        """Someone takes the carrier out of the station's bin."""
        self._sim(station).set_input("bin", 0)

    def in_bin(self, station: str) -> bool:
        return bool(self.model.held_at("bin", station))

    def in_chamber(self, station: str) -> bool:
        return bool(self.model.held_at("chamber", station))


class VirtualStore:
    def __init__(self, workdir: Path, broker_host: str = "127.0.0.1", broker_port: int = 1883,
                 heap: str = "96k", keepalive: int = 10, transport: str = "mqtt",
                 coap_keys: Path | None = None, provisioned: Path | None = None,
                 locker_keys: Path | None = None):
        self.workdir = Path(workdir)
        self.broker = (broker_host, broker_port)
        self.heap = heap
        self.keepalive = keepalive
        self.transport = transport  # "coap": broker_port is the gateway's CoAP port
        self.coap_keys = coap_keys  # "coap": each device gets a key in the gateway's keys file
        # a store directory from tools/provision.py: each device logs in with its credentials
        # as provisioned there (provisioned now if it has none: then make the broker re-read
        # its password file, Mosquitto.reload), with TLS (the store CA) when `broker_port` is
        # the store's TLS listener, without on its loopback listener (`--local-port`)
        self.provisioned = provisioned
        # each locker bank gets a pickup-code key here (give the gateway this file: --locker-keys);
        # a provisioned store keeps them in its own locker-keys.json, as tools/provision.py does
        if locker_keys is None and provisioned is not None:
            from gateway.provision import LOCKER_KEYS
            locker_keys = Path(provisioned) / LOCKER_KEYS
        self.locker_keys = Path(locker_keys) if locker_keys else self.workdir / "locker-keys.json"
        self.rig = VirtualRig().start()
        self.devices: dict[str, FirmwareProcess] = {}
        self.pads: dict[str, PadHandle] = {}
        self.lockers: dict[str, LockerHandle] = {}
        self.rooms: dict[str, FittingRoomHandle] = {}
        self.tubes: list[TubeHandle] = []

    def _config(self, dev: str, kind: str, app: dict) -> dict:
        cfg = {"device_id": dev, "kind": kind, "board": "sim", "transport": self.transport,
               "mqtt": {"host": self.broker[0], "port": self.broker[1], "keepalive": self.keepalive},
               "sim": {"host": self.rig.host, "port": self.rig.port}, "app": app}
        if self.provisioned is not None and self.transport == "mqtt":
            cfg["mqtt"].update(self._credentials(dev, kind))
        if self.transport == "coap" and self.coap_keys is not None:
            from gateway.transport.coap_auth import add_key
            cfg["mqtt"]["key"] = add_key(self.coap_keys, dev, rotate=True)
        if kind == "locker-bank" and "code_key" not in app:
            from gateway.kinds.locker_bank.keys import ensure_key
            cfg["app"] = {**app, "code_key": ensure_key(self.locker_keys, dev)}
        return cfg

    def _credentials(self, dev: str, kind: str) -> dict:
        from gateway import provision

        path = Path(self.provisioned) / "devices" / f"{dev}.config.json"
        if path.exists():
            mq = json.loads(path.read_text())["mqtt"]
        else:
            mq = provision.add_device(self.provisioned, dev, kind, host=self.broker[0],
                                      port=self.broker[1])["mqtt"]
        tls = self.broker[1] == json.loads((Path(self.provisioned) / "store.json").read_text())["port"]
        return {k: mq[k] for k in ("user", "password", "tls") if k != "tls" or tls}

    def add_pad(self, dev: str, **app) -> PadHandle:
        sim = self.rig.device(dev)
        reader = MFRC522Emulator()
        sim.attach_spi("rfid", reader)
        fw = FirmwareProcess(self._config(dev, "sample-pad", app), self.workdir, self.heap)
        self.devices[dev] = fw
        self.pads[dev] = PadHandle(fw, sim, reader)
        return self.pads[dev]

    def add_fitting_room(self, dev: str, heap: str | None = None, **app) -> FittingRoomHandle:
        """A fitting room (`kind: fitting-room`) with an emulated MFRC522 on SPI "rfid"."""
        sim = self.rig.device(dev)
        reader = MFRC522Emulator()
        sim.attach_spi("rfid", reader)
        fw = FirmwareProcess(self._config(dev, "fitting-room", app), self.workdir, heap or self.heap)
        self.devices[dev] = fw
        self.rooms[dev] = FittingRoomHandle(fw, sim, reader)
        return self.rooms[dev]

    def add_locker(self, dev: str, compartments: list | None = None, heap: str = "192k",
                   **app) -> LockerHandle:
        """A locker bank (`kind: locker-bank`); `compartments` as in its app config (sizes, or
        objects with `id`/`size`/`occ`). The locker app needs a bigger heap on the unix port
        than a board's ~96 KB: 12 compartments need ~97 KB (bench/fw_heap.py --app locker-bank;
        96 KB passes 1 run in 3; 99-101 KB before the second heap pass, docs/benchmarks.md;
        103-108 KB before the compact command log/journal and the locker modules dropped after use)."""
        compartments = compartments or ["S", "M", "L"]
        ids = [c.get("id", i + 1) if isinstance(c, dict) else i + 1 for i, c in enumerate(compartments)]
        sim = self.rig.device(dev)
        fw = FirmwareProcess(self._config(dev, "locker-bank", {"compartments": compartments, **app}),
                             self.workdir, heap)
        handle = LockerHandle(fw, sim, ids)
        self.devices[dev] = fw
        self.lockers[dev] = handle
        return handle

    def add_tube(self, network: dict | Path, heap: str | None = None, *, poll_ms: int | None = None,
                 pass_ms: int = 120, dt: float = 0.005) -> TubeHandle:
        """A tube line from a network file (the one the gateway loads, `--tube-network`): one
        `tube-station` board per station and a `tube-line` board per device that drives
        diverters, as its `devices` map says (eyes on the board they are mapped to), and the
        virtual line between them (hil/sim/tube.py), running from now on (it sets the idle
        world before the firmware starts). `poll_ms`: the boards' input polling (default
        10 ms; each poll of a pin is a round trip to the rig); `pass_ms`: how long a passing
        carrier blocks an eye (longer than two polls)."""
        from hil.sim.tube import TubeLineModel

        net = network if isinstance(network, dict) else json.loads(Path(network).read_text())
        devices: dict[str, str] = net["devices"]
        extra = {} if poll_ms is None else {"poll_ms": poll_ms}
        eyes_on: dict[str, list[str]] = {}
        for seg in net["segments"]:
            eyes_on.setdefault(devices.get(seg["eye"], ""), []).append(seg["eye"])
        apps: dict[str, tuple[str, dict]] = {}
        for st in net["stations"]:
            dev = devices[st["id"]]
            apps[dev] = ("tube-station", {"station": st["id"], "eyes": eyes_on.get(dev, []), **extra})
        for d in net.get("diverters", []):
            dev = devices[d["id"]]
            app = apps.setdefault(dev, ("tube-line", {"diverters": [], "eyes": eyes_on.get(dev, []),
                                                      **extra}))[1]
            app["diverters"].append({"id": d["id"], "positions": list(d["positions"]),
                                     "travel_ms": int(float(d["travel_time_s"]) * 1000)})
        model = TubeLineModel(self.rig, net, pass_ms=pass_ms, dt=dt)  # before power-on
        for dev, (kind, app) in apps.items():
            self.devices[dev] = FirmwareProcess(self._config(dev, kind, app), self.workdir,
                                                heap or self.heap)
        handle = TubeHandle(self.rig, model.start(), {s["id"]: devices[s["id"]] for s in net["stations"]})
        self.tubes.append(handle)
        return handle

    def start(self) -> VirtualStore:
        for fw in self.devices.values():
            if not fw.alive():
                fw.start()
        return self

    def wait_online(self, timeout: float = 15.0) -> None:
        for fw in self.devices.values():
            fw.wait_line(r"online session", timeout)

    def stop(self) -> None:
        for fw in self.devices.values():
            fw.stop()
        for tube in self.tubes:
            tube.model.stop()
        self.rig.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
