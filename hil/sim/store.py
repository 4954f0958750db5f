"""A virtual store: the virtual rig plus real firmware processes, one per device.

Used by the end-to-end tests, the HIL scenarios on the virtual rig, the demo and the
benchmarks. The gateway and the broker are not part of it: point it at any broker.

What each kind gets (its emulated hardware, its app config, its handle: `PadHandle`,
`LockerHandle`, ...) is in the kind's driver module, hil/drivers/<kind>.py, found through
the registry (`hil.drivers.DRIVERS`); `add(kind, dev, ...)` adds any registered kind.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Self

from hil.drivers import driver_class
from hil.sim.firmware import FirmwareProcess
from hil.sim.rig import VirtualRig


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
        self.handles: dict[str, dict[str, Any]] = {}  # kind -> device -> its handle
        self.tubes: list[Any] = []

    def _config(self, dev: str, kind: str, app: dict) -> dict:
        cfg = {"device_id": dev, "kind": kind, "board": "sim", "transport": self.transport,
               "mqtt": {"host": self.broker[0], "port": self.broker[1], "keepalive": self.keepalive},
               "sim": {"host": self.rig.host, "port": self.rig.port}, "app": app}
        if self.provisioned is not None and self.transport == "mqtt":
            cfg["mqtt"].update(self._credentials(dev, kind))
        if self.transport == "coap" and self.coap_keys is not None:
            from gateway.transport.coap_auth import add_key
            cfg["mqtt"]["key"] = add_key(self.coap_keys, dev, rotate=True)
        cfg["app"] = driver_class(kind).firmware_app(self, dev, app)  # e.g. a locker bank's code key
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

    def add(self, kind: str, dev: str, **kw: Any) -> Any:
        """A device of a registered kind, with its emulated hardware (its driver's
        `add_to_store`); returns its handle, also in `handles[kind][dev]`."""
        cls = driver_class(kind)
        if not hasattr(cls, "add_to_store"):
            raise LookupError(f"the virtual store has no model for kind {kind!r} alone "
                              "(a tube line: add_tube(network))")
        handle = cls.add_to_store(self, dev, **kw)
        self.handles.setdefault(kind, {})[dev] = handle
        return handle

    # the names callers use (the demo, benches, tests): the kinds' own code is in hil/drivers/
    def add_pad(self, dev: str, **app) -> Any:  # a PadHandle (hil/drivers/sample_pad.py)
        return self.add("sample-pad", dev, **app)

    def add_fitting_room(self, dev: str, heap: str | None = None, **app) -> Any:
        """A fitting room (`kind: fitting-room`) with an emulated MFRC522 on SPI "rfid"."""
        return self.add("fitting-room", dev, heap=heap, **app)

    def add_locker(self, dev: str, compartments: list | None = None, heap: str = "192k",
                   **app) -> Any:
        """A locker bank (`kind: locker-bank`): hil.drivers.locker_bank.LockerBank.add_to_store."""
        return self.add("locker-bank", dev, compartments=compartments, heap=heap, **app)

    def add_tube(self, network: dict | Path, heap: str | None = None, **kw: Any) -> Any:
        """A tube line from a network file (the one the gateway loads, `--tube-network`):
        hil.drivers.tube.TubeStation.add_line (`poll_ms`, `pass_ms`, `dt` there)."""
        handle = driver_class("tube-station").add_line(self, network, heap, **kw)
        self.tubes.append(handle)
        return handle

    @property
    def pads(self) -> dict[str, Any]:
        return self.handles.get("sample-pad", {})

    @property
    def rooms(self) -> dict[str, Any]:
        return self.handles.get("fitting-room", {})

    @property
    def lockers(self) -> dict[str, Any]:
        return self.handles.get("locker-bank", {})

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
            tube.stop()
        self.rig.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
