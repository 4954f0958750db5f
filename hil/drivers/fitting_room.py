"""The fitting room (`kind: fitting-room`, docs/fitting-rooms.md): a reader that holds several
tags (garments on the hook: `Rig.add_tag` / `take_tag`), the door/curtain `occupancy` sensor,
the call `button` and its `call_led`. On the virtual rig the reader is an emulated MFRC522 on
SPI ``rfid``; `FittingRoomHandle` is the virtual store's handle."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from hil.drivers.base import DeviceDriver
from hil.sim.firmware import FirmwareProcess
from hil.sim.mfrc522 import MFRC522Emulator
from hil.sim.rig import SimDevice

if TYPE_CHECKING:
    from hil.sim.store import VirtualStore


class FittingRoom(DeviceDriver):
    kind = "fitting-room"
    reader = True

    def attach_sim(self, store: VirtualStore) -> None:
        store.add_fitting_room(self.dev, **self.wiring.app)  # MFRC522 that holds several tags

    @classmethod
    def add_to_store(cls, store: VirtualStore, dev: str, heap: str | None = None, **app) -> FittingRoomHandle:
        sim = store.rig.device(dev)
        reader = MFRC522Emulator()
        sim.attach_spi("rfid", reader)
        fw = FirmwareProcess(store._config(dev, cls.kind, app), store.workdir, heap or store.heap)
        store.devices[dev] = fw
        return FittingRoomHandle(fw, sim, reader)


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
