"""The locker bank (`kind: locker-bank`, docs/lockers.md): compartments with a lock output
`lock_<n>`, a door reed switch `door_<n>` (springs open while its lock is powered: the wiring's
`springs`, `jam` stops it) and an occupancy sensor `occ_<n>`; a keypad / keyboard-mode QR
scanner and a display on the UART ``keypad``.

`LockerBank` drives it on any rig; `LockerHandle` is the virtual store's handle (no wiring
file: it plays the springs itself). On the virtual store each bank gets its pickup-code key
(`firmware_app`)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from hil.drivers.base import DeviceDriver
from hil.sim.firmware import FirmwareProcess
from hil.sim.rig import SimDevice

if TYPE_CHECKING:
    from hil.sim.store import VirtualStore


class LockerBank(DeviceDriver):
    kind = "locker-bank"
    display_uart = "keypad"
    ACTIONS = ("type_code", "scan", "place_parcel", "take_parcel")

    def type_code(self, code: str, uart: str = "keypad", enter: bool = True) -> None:
        """A customer types `code` on the keypad, then `#` (unless `enter=False`)."""
        self.rig.trace.step(f"{self.dev}: type {len(code)} keys" + (" and #" if enter else ""))
        self.rig.uart_feed(self.dev, uart, (code + ("#" if enter else "")).encode())

    def scan(self, payload: str, uart: str = "keypad") -> None:
        """A QR code shown to the scanner: a keyboard-mode scanner sends its text and CR."""
        self.rig.trace.step(f"{self.dev}: scan a QR code")
        self.rig.uart_feed(self.dev, uart, payload.encode() + b"\r")

    def place_parcel(self, compartment: int) -> None:
        self.rig.trace.step(f"{self.dev}: parcel into compartment {compartment}")
        self.rig.set_input(self.dev, f"occ_{compartment}", 1)

    def take_parcel(self, compartment: int) -> None:
        self.rig.trace.step(f"{self.dev}: parcel out of compartment {compartment}")
        self.rig.set_input(self.dev, f"occ_{compartment}", 0)

    # --- the virtual store --------------------------------------------------------------------
    @classmethod
    def firmware_app(cls, store: VirtualStore, dev: str, app: dict) -> dict:
        """Each bank gets its pickup-code key in the store's locker keys file (give the gateway
        that file: --locker-keys), unless its app config has one."""
        if "code_key" in app:
            return app
        from gateway.kinds.locker_bank.keys import ensure_key

        return {**app, "code_key": ensure_key(store.locker_keys, dev)}

    @classmethod
    def add_to_store(cls, store: VirtualStore, dev: str, compartments: list | None = None,
                     heap: str = "192k", **app) -> LockerHandle:
        """`compartments` as in its app config (sizes, or objects with `id`/`size`/`occ`). The
        locker app needs a bigger heap on the unix port than a board's ~96 KB: 12 compartments
        need ~97 KB (bench/fw_heap.py --app locker-bank; 96 KB passes 1 run in 3; 99-101 KB
        before the second heap pass, docs/benchmarks.md; 103-108 KB before the compact command
        log/journal and the locker modules dropped after use)."""
        compartments = compartments or ["S", "M", "L"]
        ids = [c.get("id", i + 1) if isinstance(c, dict) else i + 1 for i, c in enumerate(compartments)]
        sim = store.rig.device(dev)
        fw = FirmwareProcess(store._config(dev, cls.kind, {"compartments": compartments, **app}),
                             store.workdir, heap)
        store.devices[dev] = fw
        return LockerHandle(fw, sim, ids)


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
