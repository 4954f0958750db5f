"""The sample pad (`kind: sample-pad`, docs/protocol.md): an RFID reader and an LED.

On a rig the world puts tags on the reader (`Rig.place_tag`, common to every kind with a
reader) and reads the LED output; on the virtual rig the reader is an emulated MFRC522 on SPI
``rfid``. `PadHandle` is the virtual store's handle (no wiring file: the end-to-end tests, the
demo, the fault suite)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from hil.drivers.base import DeviceDriver
from hil.sim.firmware import FirmwareProcess
from hil.sim.mfrc522 import MFRC522Emulator
from hil.sim.rig import SimDevice

if TYPE_CHECKING:
    from hil.sim.store import VirtualStore


class SamplePad(DeviceDriver):
    kind = "sample-pad"
    reader = True

    def attach_sim(self, store: VirtualStore) -> None:
        store.add_pad(self.dev, **self.wiring.app)  # with its emulated MFRC522 on SPI "rfid"

    @classmethod
    def add_to_store(cls, store: VirtualStore, dev: str, **app) -> PadHandle:
        sim = store.rig.device(dev)
        reader = MFRC522Emulator()
        sim.attach_spi("rfid", reader)
        fw = FirmwareProcess(store._config(dev, cls.kind, app), store.workdir, store.heap)
        store.devices[dev] = fw
        return PadHandle(fw, sim, reader)


class PadHandle:
    """What the world does to a sample pad and what it sees of it (virtual store)."""

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
