"""`DeviceDriver`: a rig's device with its name bound, what scenario code holds.

    lk = rig.device_of_kind("locker-bank")   # a hil.drivers.locker_bank.LockerBank
    lk.start()                               # the rig's common methods, device bound
    lk.type_code("482913")                   # the kind's own world actions
    lk.wait_display(r"^Code OK")

The base class has what any board with inputs has: doors (reed switches) and buttons mapped to
levels through the wiring's `levels`, door `springs` with `jam`, a display UART. A kind's
module adds its world actions (listed in `ACTIONS`: the rig forwards them, so
``rig.type_code(dev, code)`` works too) and overrides the hooks the rig calls: `idle_level`
(reset_world, the Pi's initial levels), `output_changed` (world physics on every output edge),
`firmware_app` and `attach_sim` (virtual rig: the app config and the emulated hardware).
"""
from __future__ import annotations

import functools
import re
import time
from typing import TYPE_CHECKING, Any

from hil.pi.wiring import DEFAULT_LEVELS, DeviceWiring

if TYPE_CHECKING:
    from hil.rig import Rig
    from hil.sim.store import VirtualStore

# the rig's common methods a driver offers with its device bound (`pad.start()`)
BOUND = frozenset({
    "start", "power_cut", "power_on", "place_tag", "remove_tag", "add_tag", "take_tag", "tag_spec",
    "set_input", "uart_feed", "uart_output", "output", "wait_output", "expect_output",
    "output_history", "rises", "console", "wait_console", "messages", "wait_message"})


class DeviceDriver:
    kind = ""  # the kind string (hil.drivers.DRIVERS)
    display_uart = "display"  # the UART the board writes its display lines on
    reader = False  # has a tag reader (`Rig.place_tag`): `reset_world` takes its tags away
    ACTIONS: tuple[str, ...] = ("open_door", "close_door", "press", "jam", "display", "wait_display")

    def __init__(self, rig: Rig, dev: str):
        self.rig, self.dev = rig, dev
        self.jammed: set[str] = set()  # doors whose spring is stuck (`jam`)

    @classmethod
    def actions(cls) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for c in reversed(cls.__mro__):
            seen.update(dict.fromkeys(getattr(c, "ACTIONS", ())))
        return tuple(seen)

    @property
    def wiring(self) -> DeviceWiring:
        return self.rig.wiring.device(self.dev)

    def __getattr__(self, name: str) -> Any:
        if name in BOUND:
            return functools.partial(getattr(self.rig, name), self.dev)
        if name.startswith("_") or name in ("rig", "dev"):
            raise AttributeError(name)
        from hil.drivers import actions

        kinds = actions().get(name)
        where = f" (that is a world action of {', '.join(kinds)})" if kinds else ""
        raise AttributeError(f"{self.dev} is a {self.kind}: it has no {name!r}{where}")

    def __repr__(self) -> str:
        return f"<{self.kind} {self.dev} on {self.rig.backend} rig {self.rig.name}>"

    def level(self, what: str) -> int:
        """The logical level of a world state at the board (wiring `levels`, else the default)."""
        return self.wiring.levels.get(what, DEFAULT_LEVELS[what])

    # --- world actions any board may have -----------------------------------------------------
    def open_door(self, door: str = "door") -> None:
        self.rig.trace.step(f"{self.dev}: open {door}")
        self.rig.set_input(self.dev, door, self.level("door_open"))

    def close_door(self, door: str = "door") -> None:
        self.rig.trace.step(f"{self.dev}: close {door}")
        self.rig.set_input(self.dev, door, 1 - self.level("door_open"))

    def press(self, button: str = "button", ms: int = 150) -> None:
        """Hold a button for `ms` milliseconds (longer than the firmware's ~50 ms debounce)."""
        self.rig.trace.step(f"{self.dev}: press {button} for {ms} ms")
        lvl = self.level("button_pressed")
        self.rig.set_input(self.dev, button, lvl)
        time.sleep(ms / 1000)
        self.rig.set_input(self.dev, button, 1 - lvl)

    def jam(self, door: str, jammed: bool = True) -> None:
        """A door whose latch sticks: its lock pulses but the door stays shut (see `springs`)."""
        self.rig.trace.step(f"{self.dev}: {door} {'jammed' if jammed else 'free again'}")
        (self.jammed.add if jammed else self.jammed.discard)(door)

    def display(self, uart: str | None = None) -> list[str]:
        """The lines the board showed on its display (one message per line)."""
        raw = self.rig.uart_output(self.dev, uart or self.display_uart)
        return raw.decode(errors="replace").splitlines()

    def wait_display(self, pattern: str, timeout: float = 5.0, start: int = 0,
                     uart: str | None = None) -> str:
        """Wait for a display line matching regex `pattern` (from line `start`)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            lines = self.display(uart)
            for line in lines[start:]:
                if rx.search(line):
                    return line
            if time.monotonic() >= deadline:
                raise AssertionError(f"{self.dev}: the display never showed /{pattern}/ in {timeout}s; "
                                     f"it showed:\n" + "\n".join(lines[-10:]))
            time.sleep(0.02)

    # --- hooks the rig calls ------------------------------------------------------------------
    @classmethod
    def idle_level(cls, w: DeviceWiring, pin: str) -> int:
        """The level of input `pin` when nobody acts: doors shut, buttons released, else 0."""
        low = pin.lower()
        if "door" in low:
            return 1 - w.levels.get("door_open", DEFAULT_LEVELS["door_open"])
        if "button" in low or "btn" in low:
            return 1 - w.levels.get("button_pressed", DEFAULT_LEVELS["button_pressed"])
        return 0

    def reset(self) -> None:
        """The world around the device back to idle (`Rig.reset_world`; inputs and tags are
        the rig's): every spring free again."""
        self.jammed.clear()

    def output_changed(self, pin: str, value: int) -> None:
        """On every output edge (both backends): the wiring's door `springs` pop a door open
        while its lock is powered, unless jammed."""
        door = self.wiring.springs.get(pin)
        if door and value and door not in self.jammed:
            self.rig._set_input(self.dev, door, self.level("door_open"))

    # --- the virtual rig --------------------------------------------------------------------------
    @classmethod
    def firmware_app(cls, store: VirtualStore, dev: str, app: dict) -> dict:
        """The app config the device's firmware gets on the virtual store (`VirtualStore._config`)."""
        return app

    def attach_sim(self, store: VirtualStore) -> None:
        """Virtual rig: give the device its emulated hardware and its firmware process (not
        started) in `store.devices`. Default: a bare board, pins and UARTs only, with the
        world physics of `output_changed`."""
        from hil.sim.firmware import FirmwareProcess

        w = self.wiring
        store.rig.device(self.dev).on_output.append(lambda pin, v: self.rig._output_changed(self.dev, pin, v))
        store.devices[self.dev] = FirmwareProcess(store._config(self.dev, self.kind, w.app), store.workdir,
                                                  w.heap or store.heap)
