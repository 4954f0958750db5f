"""The pneumatic tube (docs/tube.md): `tube-station` boards (send `chamber` and receive `bin`
photo-eyes, the station `door`, the `send` button, the `estop` loop, the blower `air`, the
send `gate`, a display UART) and `tube-line` boards (diverters, segment photo-eyes, e-stop).

On the virtual rig the line between the boards is `hil.sim.tube.TubeLineModel`: `TubeStation.line_model`
builds it for a rig from the wiring file's `tube` network file, `TubeStation.add_line` for a virtual store
from a network file (the one the gateway loads); `TubeHandle` is the store's handle."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hil.drivers.base import DeviceDriver
from hil.pi.wiring import DEFAULT_LEVELS, DeviceWiring
from hil.sim.firmware import FirmwareProcess
from hil.sim.rig import SimDevice, VirtualRig

if TYPE_CHECKING:
    from hil.rig import VirtualRigBackend
    from hil.sim.store import VirtualStore


class _TubeBoard(DeviceDriver):
    """What stations and line controllers share: photo-eyes and the e-stop loop."""

    ACTIONS = ("insert_carrier", "remove_carrier", "estop")

    def insert_carrier(self, eye: str = "eye", pass_ms: int | None = None) -> None:
        """A carrier at a photo-eye: it stays (blocks the beam) until `remove_carrier`, or,
        with `pass_ms`, passes through the beam in that time."""
        blocked = self.level("eye_blocked")
        self.rig.trace.step(f"{self.dev}: carrier at {eye}" + (f" passing in {pass_ms} ms" if pass_ms else ""))
        self.rig.set_input(self.dev, eye, blocked)
        if pass_ms is not None:
            time.sleep(pass_ms / 1000)
            self.rig.set_input(self.dev, eye, 1 - blocked)

    def remove_carrier(self, eye: str = "eye") -> None:
        self.rig.trace.step(f"{self.dev}: carrier taken from {eye}")
        self.rig.set_input(self.dev, eye, 1 - self.level("eye_blocked"))

    def estop(self, pressed: bool = True) -> None:
        """Press (or release) the emergency stop wired to the board's `estop` input."""
        self.rig.trace.step(f"{self.dev}: e-stop {'pressed' if pressed else 'released'}")
        lvl = self.level("estop_active")
        self.rig.set_input(self.dev, "estop", lvl if pressed else 1 - lvl)

    @classmethod
    def idle_level(cls, w: DeviceWiring, pin: str) -> int:
        """Beams clear (photo-eyes, the chamber and bin eyes), SEND released, e-stop released."""
        low = pin.lower()
        if "door" not in low:
            if "eye" in low or low in ("chamber", "bin"):
                return 1 - w.levels.get("eye_blocked", DEFAULT_LEVELS["eye_blocked"])
            if low == "send":
                return 1 - w.levels.get("button_pressed", DEFAULT_LEVELS["button_pressed"])
            if low == "estop":
                return 1 - w.levels.get("estop_active", DEFAULT_LEVELS["estop_active"])
        return super().idle_level(w, pin)


class TubeStation(_TubeBoard):
    kind = "tube-station"
    ACTIONS = ("load_carrier", "take_carrier", "press_send")

    def load_carrier(self) -> None:
        """Staff put a carrier in the station's send chamber."""
        self.insert_carrier("chamber")

    def take_carrier(self) -> None:
        """Someone takes the carrier out of the station's receive bin."""
        self.remove_carrier("bin")

    def press_send(self) -> None:
        self.press("send")

    # --- the virtual rig and store: the line between the boards -----------------------------
    @classmethod
    def line_model(cls, rig: VirtualRigBackend) -> Any:
        """The tube line model between a virtual rig's tube devices, from the wiring file's `tube`
        network file (create it before the tube firmware starts: it sets the idle world)."""
        from hil.rig import ROOT, RigError
        from hil.sim.tube import TubeLineModel

        if rig.wiring.tube is None:
            raise RigError(f"rig {rig.name!r} has no tube network: add \"tube\": \"boards/tube/<file>.json\"")
        path = rig.wiring.tube if rig.wiring.tube.is_absolute() else ROOT / rig.wiring.tube
        return TubeLineModel(rig.store.rig, path).start()

    @classmethod
    def add_line(cls, store: VirtualStore, network: dict | Path, heap: str | None = None, *,
                 poll_ms: int | None = None, pass_ms: int = 120, dt: float = 0.005) -> TubeHandle:
        """A tube line on a virtual store (`VirtualStore.add_tube`): one `tube-station` board per
        station and a `tube-line` board per device that drives diverters, as the network's
        `devices` map says (eyes on the board they are mapped to), and the virtual line between
        them, running from now on (it sets the idle world before the firmware starts)."""
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
            apps[dev] = (cls.kind, {"station": st["id"], "eyes": eyes_on.get(dev, []), **extra})
        for d in net.get("diverters", []):
            dev = devices[d["id"]]
            app = apps.setdefault(dev, (TubeLine.kind, {"diverters": [], "eyes": eyes_on.get(dev, []),
                                                        **extra}))[1]
            app["diverters"].append({"id": d["id"], "positions": list(d["positions"]),
                                     "travel_ms": int(float(d["travel_time_s"]) * 1000)})
        model = TubeLineModel(store.rig, net, pass_ms=pass_ms, dt=dt)  # before power-on
        for dev, (kind, app) in apps.items():
            store.devices[dev] = FirmwareProcess(store._config(dev, kind, app), store.workdir,
                                                 heap or store.heap)
        return TubeHandle(store.rig, model.start(), {s["id"]: devices[s["id"]] for s in net["stations"]})


class TubeLine(_TubeBoard):
    kind = "tube-line"


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

    def stop(self) -> None:
        self.model.stop()


