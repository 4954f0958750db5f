"""Rig drivers, one module per device kind: how the world drives a kind's device.

In labgrid's words (docs/hil.md, "The rig abstraction"):

* **resources** are what a rig has: the wiring file (`hil.pi.wiring`: pins, tags, UARTs,
  serial ports, levels) and the links to the boards (Pi GPIO and serial, or the virtual rig's
  sim link, `hil.sim.rig`);
* **drivers** (this package) say how to drive a kind's device through them: the locker bank's
  keypad and parcels, the tube station's carriers and e-stop, the readers of the pad and the
  fitting room, and, on the virtual rig, which emulated hardware the board gets;
* **strategies** bring a rig to a state: `Rig.start`, `power_cut`/`power_on`, `reset_world`
  (hil/rig.py, implemented by the backends `VirtualRigBackend` and `hil.pi.rig.PiRig`).

`DRIVERS` is the registry, keyed by the kind string (the kinds of the gateway's registry,
gateway/kinds/registry.py, which the wiring loader accepts: tests/hil/test_rig_drivers.py
checks that every one has its driver). A new kind is a module here (a `DeviceDriver`
subclass) plus one line below. The module is imported on first use.
"""
from __future__ import annotations

import functools
import importlib
from typing import Any

# kind -> "module:class"
DRIVERS: dict[str, str] = {
    "sample-pad": "hil.drivers.sample_pad:SamplePad",
    "fitting-room": "hil.drivers.fitting_room:FittingRoom",
    "locker-bank": "hil.drivers.locker_bank:LockerBank",
    "tube-station": "hil.drivers.tube:TubeStation",
    "tube-line": "hil.drivers.tube:TubeLine",
    "door-counter": "hil.drivers.door_counter:DoorCounter",
}
KINDS = tuple(DRIVERS)


def driver_class(kind: str) -> Any:
    """The `DeviceDriver` subclass of `kind` (LookupError names the known kinds)."""
    try:
        module, _, name = DRIVERS[kind].partition(":")
    except KeyError:
        raise LookupError(f"no rig driver for kind {kind!r} (known: {', '.join(KINDS)}): add "
                          "hil/drivers/<kind>.py and its line in hil.drivers.DRIVERS") from None
    return getattr(importlib.import_module(module), name)


@functools.cache
def actions() -> dict[str, tuple[str, ...]]:
    """World actions of the registered drivers: name -> the kinds that have it. `Rig` forwards
    these (``rig.type_code(dev, code)`` = ``rig.device(dev).type_code(code)``)."""
    out: dict[str, list[str]] = {}
    for kind in KINDS:
        for name in driver_class(kind).actions():
            out.setdefault(name, []).append(kind)
    return {name: tuple(kinds) for name, kinds in out.items()}
