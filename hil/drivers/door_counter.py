"""The door counter (`kind: door-counter`, docs/door-counter.md): two IR break beams across
the entrance, `beam_a` (street side) and `beam_b` (store side), inputs that read the wiring's
`eye_blocked` level (default 1) while something is in the beam.

The world actions play people and things in the doorway with real time between the beam
edges (the firmware samples every 5 ms and debounces 30 ms): `walk_in`, `walk_out`,
`back_to_back`, `stop_in_beam`, `turn_back`, `bag_swing` and `block_beam` (something left in
the beam). `DoorHandle` is the virtual store's handle."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from hil.drivers.base import DeviceDriver
from hil.pi.wiring import DEFAULT_LEVELS, DeviceWiring
from hil.sim.firmware import FirmwareProcess
from hil.sim.rig import SimDevice

if TYPE_CHECKING:
    from hil.sim.store import VirtualStore

BEAMS = {"A": "beam_a", "B": "beam_b"}
STEP_MS = 200  # each phase of a crossing (A, A+B, B): a slow walker, well above the debounce


def _crossing(direction: str, hold_ms: int, step_ms: int) -> list[tuple[int, int, int]]:
    """(A, B, ms) phases of one person crossing; `hold_ms`: how long they stand in both beams."""
    if direction not in ("in", "out"):
        raise ValueError(f"direction must be 'in' or 'out', got {direction!r}")
    seq = [(1, 0, step_ms), (1, 1, hold_ms), (0, 1, step_ms)]
    return seq if direction == "in" else [(b, a, ms) for a, b, ms in seq]


class _Doorway:
    """The world actions, over a `set(pin, blocked)` and a trace note."""

    def _set(self, beam: str, blocked: bool) -> None:
        raise NotImplementedError

    def _note(self, text: str) -> None:
        raise NotImplementedError

    def _play(self, phases: list[tuple[int, int, int]], end_clear_ms: int = STEP_MS) -> None:
        for a, b, ms in phases:
            self._set("A", bool(a))
            self._set("B", bool(b))
            time.sleep(ms / 1000)
        self._set("A", False)
        self._set("B", False)
        time.sleep(end_clear_ms / 1000)

    def walk_in(self, step_ms: int = STEP_MS) -> None:
        """One person walks in: A, then A and B, then B."""
        self._note("walk in")
        self._play(_crossing("in", step_ms, step_ms))

    def walk_out(self, step_ms: int = STEP_MS) -> None:
        self._note("walk out")
        self._play(_crossing("out", step_ms, step_ms))

    def back_to_back(self, n: int = 2, direction: str = "in", gap_ms: int = 10,
                     step_ms: int = STEP_MS) -> None:
        """`n` people one right behind the other: the next breaks the first beam `gap_ms`
        after the one before cleared the second."""
        self._note(f"{n} walk {direction} back to back, {gap_ms} ms apart")
        phases: list[tuple[int, int, int]] = []
        for i in range(n):
            phases += _crossing(direction, step_ms, step_ms)
            if i < n - 1:
                phases.append((0, 0, gap_ms))
        self._play(phases)

    def stop_in_beam(self, seconds: float = 2.0, direction: str = "in", step_ms: int = STEP_MS) -> None:
        """Someone stops in the doorway (both beams) for `seconds`, then walks on."""
        self._note(f"stop in the beams for {seconds} s, then walk {direction}")
        self._play(_crossing(direction, int(seconds * 1000), step_ms))

    def turn_back(self, step_ms: int = STEP_MS) -> None:
        """Someone comes in as far as both beams and goes back out."""
        self._note("step into both beams and turn back")
        self._play([(1, 0, step_ms), (1, 1, step_ms), (1, 0, step_ms)])

    def bag_swing(self, times: int = 4, ms: int = 10, beam: str = "A") -> None:
        """A bag swings through one beam `times` times for `ms` each (shorter than the debounce)."""
        self._note(f"bag swings through beam {beam} {times} times, {ms} ms each")
        for _ in range(times):
            self._set(beam, True)
            time.sleep(ms / 1000)
            self._set(beam, False)
            time.sleep(0.06)

    def block_beam(self, beam: str = "A", blocked: bool = True) -> None:
        """Something left in the beam (a box, a door wedge), or taken away."""
        if beam not in BEAMS:
            raise ValueError(f"beam must be 'A' or 'B', got {beam!r}")
        self._note(f"beam {beam} {'blocked' if blocked else 'clear again'}")
        self._set(beam, blocked)


class DoorCounter(_Doorway, DeviceDriver):
    kind = "door-counter"
    ACTIONS = ("walk_in", "walk_out", "back_to_back", "stop_in_beam", "turn_back", "bag_swing",
               "block_beam")

    def _set(self, beam: str, blocked: bool) -> None:
        lvl = self.level("eye_blocked")
        self.rig.set_input(self.dev, BEAMS[beam], lvl if blocked else 1 - lvl)

    def _note(self, text: str) -> None:
        self.rig.trace.step(f"{self.dev}: {text}")

    @classmethod
    def idle_level(cls, w: DeviceWiring, pin: str) -> int:
        if pin in BEAMS.values():  # nothing in the beam
            return 1 - w.levels.get("eye_blocked", DEFAULT_LEVELS["eye_blocked"])
        return super().idle_level(w, pin)

    @classmethod
    def add_to_store(cls, store: VirtualStore, dev: str, heap: str | None = None, **app) -> DoorHandle:
        sim = store.rig.device(dev)
        fw = FirmwareProcess(store._config(dev, cls.kind, app), store.workdir, heap or store.heap)
        store.devices[dev] = fw
        return DoorHandle(fw, sim)


class DoorHandle(_Doorway):
    """The doorway of a door counter on the virtual store (beams read 1 when blocked)."""

    def __init__(self, fw: FirmwareProcess, sim: SimDevice):
        self.fw, self.sim = fw, sim
        for pin in BEAMS.values():
            sim.set_input(pin, 0)

    @property
    def dev(self) -> str:
        return self.fw.dev

    def _set(self, beam: str, blocked: bool) -> None:
        self.sim.set_input(BEAMS[beam], 1 if blocked else 0)

    def _note(self, text: str) -> None:
        self.sim.trace.note(self.dev, text)
