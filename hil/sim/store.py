"""A virtual store: the virtual rig plus real firmware processes, one per device.

Used by the end-to-end tests, the HIL scenarios on the virtual rig, the demo and the
benchmarks. The gateway and the broker are not part of it: point it at any broker.
"""
from __future__ import annotations

from pathlib import Path

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


class VirtualStore:
    def __init__(self, workdir: Path, broker_host: str = "127.0.0.1", broker_port: int = 1883,
                 heap: str = "96k", keepalive: int = 10):
        self.workdir = Path(workdir)
        self.broker = (broker_host, broker_port)
        self.heap = heap
        self.keepalive = keepalive
        self.rig = VirtualRig().start()
        self.devices: dict[str, FirmwareProcess] = {}
        self.pads: dict[str, PadHandle] = {}

    def _config(self, dev: str, kind: str, app: dict) -> dict:
        return {"device_id": dev, "kind": kind, "board": "sim",
                "mqtt": {"host": self.broker[0], "port": self.broker[1], "keepalive": self.keepalive},
                "sim": {"host": self.rig.host, "port": self.rig.port}, "app": app}

    def add_pad(self, dev: str, **app) -> PadHandle:
        sim = self.rig.device(dev)
        reader = MFRC522Emulator()
        sim.attach_spi("rfid", reader)
        fw = FirmwareProcess(self._config(dev, "sample-pad", app), self.workdir, self.heap)
        self.devices[dev] = fw
        self.pads[dev] = PadHandle(fw, sim, reader)
        return self.pads[dev]

    def start(self) -> "VirtualStore":
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
        self.rig.stop()

    def __enter__(self) -> "VirtualStore":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
