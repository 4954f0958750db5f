"""The rig abstraction: what the world does to a device and what it sees of it.

A HIL scenario talks to a `Rig` only (ARCHITECTURE.md, decisions 6 and 7)::

    pad = rig.device_of_kind("sample-pad")       # the kind's driver, device bound
    pad.start()                                  # firmware up and online
    pad.place_tag("S-1001")                      # a tag from the rig's catalogue
    pad.expect_output("led", 1, timeout=2)

In labgrid's words: the *resources* are what a rig has: its wiring file (which devices, which
pins, which tags: `hil.pi.wiring`) and the links to the boards, moved by a backend —
`VirtualRigBackend` (the virtual rig, emulated hardware, firmware in the MicroPython unix port)
or `hil.pi.rig.PiRig` (a Raspberry Pi wired to real boards); the *drivers* say how to drive a
kind's device through them, one module per kind in `hil.drivers` (registered by kind string);
the *strategies* are `start`, `power_cut`/`power_on` and `reset_world`, which bring a device to
a known state.

`Rig` has what every kind shares (pins, tags, UARTs, console, protocol messages, the broker);
a kind's world actions are its driver's (`rig.device(dev).type_code(code)`), and the rig
forwards them by name: ``rig.type_code(dev, code)`` is the same call.

Every action is recorded in the rig's `Trace`: the inputs it drives and tag relays as signals,
the outputs it sees as signals, scenario steps, console lines and protocol messages as notes.

Input levels: `set_input(dev, pin, value)` sets the logical level the board's firmware reads
on `pin`. The helpers map world states to levels through the device's ``levels`` (wiring
file; defaults: door open = 1, button pressed = 1, photo-eye blocked = 1).
"""
from __future__ import annotations

import re
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Self

from hil.drivers import actions, driver_class
from hil.pi.wiring import DeviceWiring, TagSpec, Wiring, load_wiring
from hil.trace import Trace

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIRTUAL_WIRING = ROOT / "boards" / "rigs" / "virtual.json"


class RigError(RuntimeError):
    pass


class Rig(ABC):
    """One rig: a set of devices under test, the world around them and a trace."""

    backend = "abstract"

    def __init__(self, wiring: Wiring, trace: Trace | None = None):
        self.wiring = wiring
        self.name = wiring.name
        self.trace = trace or Trace(wiring.name)
        self._tap: BrokerTap | None = None
        self.broker_control = None  # an object with stop()/start() (virtual: the test's own broker)
        # one driver per device, by its kind (hil.drivers.DRIVERS): it holds the device's world state
        self._drivers: dict[str, Any] = {  # hil.drivers.base.DeviceDriver subclasses
            dev: driver_class(w.kind)(self, dev) for dev, w in wiring.devices.items()}

    # --- devices ---------------------------------------------------------------------------
    def devices(self) -> list[str]:
        return list(self.wiring.devices)

    def device(self, dev: str) -> Any:
        """The device's driver (hil.drivers.<kind>), bound to it: what scenario code holds."""
        self.wiring.device(dev)  # raises with the list of devices if unknown
        return self._drivers[dev]

    def device_of_kind(self, kind: str, index: int = 0) -> Any:
        found = [d for d, w in self.wiring.devices.items() if w.kind == kind]
        if len(found) <= index:
            raise LookupError(f"rig {self.name!r} has {len(found)} device(s) of kind {kind!r}; "
                              f"this scenario needs {index + 1} (add them to the wiring file)")
        return self._drivers[found[index]]

    def __getattr__(self, name: str) -> Any:
        """A kind's world action by name, device first: ``rig.open_door(dev, door)``."""
        if name.startswith("_") or name not in actions():
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return lambda dev, *a, **kw: getattr(self.device(dev), name)(*a, **kw)

    def has_kind(self, kind: str) -> bool:
        return any(w.kind == kind for w in self.wiring.devices.values())

    @property
    @abstractmethod
    def broker(self) -> tuple[str, int]:
        """The MQTT broker the rig's devices use (host, port); the gateway must use it too."""

    # --- strategies --------------------------------------------------------------------------
    @abstractmethod
    def start(self, dev: str, timeout: float = 20.0) -> None:
        """Bring `dev` up with its firmware running and wait until it says it is ready."""

    @abstractmethod
    def power_cut(self, dev: str) -> None:
        """Cut the device's power (no clean shutdown)."""

    @abstractmethod
    def power_on(self, dev: str) -> None:
        """Restore power after `power_cut` (the firmware boots again)."""

    def reset_world(self) -> None:
        """Every input back to its idle level, every tag off every reader."""
        for driver in self._drivers.values():
            driver.reset()
        for dev, w in self.wiring.devices.items():
            if self._drivers[dev].reader or w.tags:  # (a locker bank has no reader to empty)
                self.remove_tag(dev, quiet=True)
            for pin in w.inputs:
                self._set_input(dev, pin, self._idle_level(w, pin))

    def begin(self, title: str = "") -> Trace:
        """Start a fresh trace for the next scenario."""
        self.trace = Trace(title or self.name)
        self._retarget_trace()
        if self._tap is not None:
            self._tap.trace = self.trace
        return self.trace

    def _retarget_trace(self) -> None:
        pass

    # --- what the world does -----------------------------------------------------------------
    def tag_spec(self, dev: str, tag: str | TagSpec) -> TagSpec:
        if isinstance(tag, TagSpec):
            return tag
        w = self.wiring.device(dev)
        if tag in w.tags:
            return w.tags[tag].spec
        for other in self.wiring.devices.values():  # a tag may be named by the device that has it
            if tag in other.tags and other.name != dev:
                raise RigError(f"tag {tag!r} is fixed at {other.name}'s reader, not {dev}'s")
        raise RigError(f"{dev} has no tag {tag!r} in rig {self.name!r} (has: {', '.join(w.tags) or 'none'})")

    def place_tag(self, dev: str, tag: Any) -> None:
        """Put a tag on the device's reader (a name from the wiring file, or a TagSpec)."""
        spec = self.tag_spec(dev, tag) if isinstance(tag, (str, TagSpec)) else tag
        label = getattr(spec, "name", None) or getattr(spec, "uid_hex", "tag")
        self.trace.step(f"{dev}: place tag {label}")
        self._place_tag(dev, spec)

    def remove_tag(self, dev: str, quiet: bool = False) -> None:
        if not quiet:
            self.trace.step(f"{dev}: remove tag")
        self._remove_tag(dev)

    def add_tag(self, dev: str, tag: Any) -> None:
        """Bring one more tag into the reader's field; the tags already there stay (a garment
        hung in a fitting room). `remove_tag` still takes every tag away."""
        spec = self.tag_spec(dev, tag) if isinstance(tag, (str, TagSpec)) else tag
        label = getattr(spec, "name", None) or getattr(spec, "uid_hex", "tag")
        self.trace.step(f"{dev}: add tag {label}")
        self._add_tag(dev, spec)

    def take_tag(self, dev: str, tag: Any) -> None:
        """Take one tag out of the reader's field (the others stay)."""
        spec = self.tag_spec(dev, tag) if isinstance(tag, (str, TagSpec)) else tag
        label = getattr(spec, "name", None) or getattr(spec, "uid_hex", "tag")
        self.trace.step(f"{dev}: take tag {label}")
        self._take_tag(dev, spec)

    def _add_tag(self, dev: str, spec: Any) -> None:
        raise RigError(f"rig {self.name!r} cannot hold several tags at {dev}'s reader")

    def _take_tag(self, dev: str, spec: Any) -> None:
        raise RigError(f"rig {self.name!r} cannot hold several tags at {dev}'s reader")

    def set_input(self, dev: str, pin: str, value: int) -> None:
        self._set_input(dev, pin, 1 if value else 0)

    @abstractmethod
    def uart_feed(self, dev: str, uart: str, data: bytes) -> None:
        """Bytes arriving at one of the board's UARTs (a keypad, a scanner)."""

    def _output_changed(self, dev: str, pin: str, value: int) -> None:
        """Backends call this on every output edge: the device's driver plays the world's
        physics (the wiring's door springs)."""
        self._drivers[dev].output_changed(pin, value)

    # the broker (outage scenarios)
    def broker_down(self) -> None:
        self.trace.step("broker down")
        self._broker_ctl(0)

    def broker_up(self) -> None:
        self.trace.step("broker up")
        self._broker_ctl(1)

    def _broker_ctl(self, up: int) -> None:
        if self.broker_control is not None:
            (self.broker_control.start if up else self.broker_control.stop)()
        elif self.wiring.broker_control is not None:
            import shlex
            import subprocess

            subprocess.run(shlex.split(self.wiring.broker_control[up]), check=True, timeout=30)
        else:
            raise RigError(f"rig {self.name!r} cannot stop its broker: add broker.stop/start commands "
                           "to the wiring file (virtual: mark the test rig_own_broker)")

    # --- what the world sees -----------------------------------------------------------------
    @abstractmethod
    def output(self, dev: str, pin: str) -> int:
        """The current level of one of the board's outputs."""

    @abstractmethod
    def wait_output(self, dev: str, pin: str, value: int, timeout: float = 5.0) -> bool:
        """Wait until the output shows `value`; False on timeout."""

    def expect_output(self, dev: str, pin: str, value: int, timeout: float = 5.0) -> None:
        if not self.wait_output(dev, pin, value, timeout):
            raise AssertionError(f"{dev}.{pin} did not become {value} within {timeout}s "
                                 f"(it is {self.output(dev, pin)}); trace tail:\n{self.trace.tail()}")

    def output_history(self, dev: str, pin: str) -> list[tuple[float, int]]:
        return self.trace.history(dev, pin)

    def rises(self, dev: str, pin: str, since: float = 0.0) -> int:
        hist = self.output_history(dev, pin)
        prev = None
        n = 0
        for t, v in hist:
            if t >= since and v == 1 and prev == 0:
                n += 1
            prev = v
        return n

    @abstractmethod
    def uart_output(self, dev: str, uart: str) -> bytes:
        """Everything the board wrote on one of its UARTs (a display) so far."""

    @abstractmethod
    def console(self, dev: str) -> list[str]:
        """The device's console lines so far."""

    def wait_console(self, dev: str, pattern: str, timeout: float = 10.0, start: int = 0) -> str:
        """Wait for a console line matching regex `pattern` (from line `start`)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            lines = self.console(dev)
            for line in lines[start:]:
                if rx.search(line):
                    return line
            if time.monotonic() >= deadline:
                tail = "\n".join(lines[-20:])
                raise TimeoutError(f"{dev}: no console line /{pattern}/ in {timeout}s; last lines:\n{tail}")
            time.sleep(0.02)

    def unexpected_resets(self) -> list[str]:
        """Resets and exits the rig did not cause (boot loops, watchdog, crashes)."""
        return []

    # --- protocol messages (needs tap_broker(): the plugin's rig fixture starts it) ---------------
    def messages(self, dev: str, type: str | None = None, kind: str | None = None) -> list[dict]:
        """Protocol messages of `dev` seen on the broker (`kind`: topic suffix evt/cmd/reply...)."""
        return self._tap.find(dev, kind, type) if self._tap else []

    def wait_message(self, dev: str, type: str, where=None, kind: str | None = None,
                     timeout: float = 5.0) -> dict:
        """Wait for a protocol message of `type` from/to `dev` (optionally matching `where(msg)`)."""
        if self._tap is None:
            raise RigError("no broker tap: call rig.tap_broker() (the rig fixture does)")
        m = self._tap.wait(dev, kind, type, where, timeout)
        if m is None:
            raise AssertionError(f"no {type} message of {dev} within {timeout}s; trace tail:\n{self.trace.tail()}")
        return m

    def collect_logs(self, dest: Path, stem: str = "") -> list[Path]:
        """Write each device's console to `dest/<stem>console-<dev>.log`."""
        dest.mkdir(parents=True, exist_ok=True)
        out = []
        for dev in self.devices():
            lines = self.console(dev)
            if lines:
                p = dest / f"{stem}console-{dev}.log"
                p.write_text("\n".join(lines) + "\n")
                out.append(p)
        return out

    def note(self, source: str, text: str) -> None:
        self.trace.note(source, text)

    def tap_broker(self) -> BrokerTap | None:
        """Record every protocol message on the rig's broker into the trace (needs paho-mqtt)."""
        if self._tap is None:
            try:
                self._tap = BrokerTap(*self.broker, trace=self.trace).start()
            except Exception as e:  # noqa: BLE001 - the broker is not reachable yet: a scenario can still run
                self.trace.note("rig", f"no protocol trace: {e}")
                self._tap = None
        return self._tap

    def close(self) -> None:
        if self._tap is not None:
            self._tap.stop()
            self._tap = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- backend hooks -----------------------------------------------------------------------
    @abstractmethod
    def _place_tag(self, dev: str, spec: Any) -> None: ...

    @abstractmethod
    def _remove_tag(self, dev: str) -> None: ...

    @abstractmethod
    def _set_input(self, dev: str, pin: str, value: int) -> None: ...

    @staticmethod
    def _idle_level(w: DeviceWiring, pin: str) -> int:
        """Input `pin`'s level when nobody acts, as the device's kind says (its driver)."""
        return int(driver_class(w.kind).idle_level(w, pin))


# --- the virtual rig -----------------------------------------------------------------------------

class VirtualRigBackend(Rig):
    """The virtual rig (hil.sim): emulated hardware, real firmware in the MicroPython unix port.

    Devices and tags come from a wiring file (``boards/rigs/virtual.json`` by default; a bench
    wiring file works too, its GPIO numbers are ignored). Each device runs in a
    `hil.sim.store.VirtualStore` against the broker given here.
    """

    backend = "virtual"

    def __init__(self, workdir: Path, broker: tuple[str, int], wiring: Wiring | str | Path | None = None,
                 heap: str = "96k", keepalive: int = 5, coap: tuple[str, int] | None = None,
                 coap_keys: Path | None = None, locker_keys: Path | None = None):
        from hil.sim.store import VirtualStore

        if not isinstance(wiring, Wiring):
            wiring = load_wiring(wiring or DEFAULT_VIRTUAL_WIRING)
        # coap=(host, port): the devices speak CoAP to the gateway there instead of MQTT
        # (docs/protocol.md, CoAP mapping); the broker tap then sees no device traffic
        host, port = coap or broker
        self.store = VirtualStore(Path(workdir), broker_host=host, broker_port=port, heap=heap,
                                  keepalive=keepalive, transport="coap" if coap else "mqtt",
                                  coap_keys=coap_keys,  # the gateway's keys file (GatewayProcess.coap_keys)
                                  locker_keys=locker_keys)  # banks' code keys (GatewayProcess.locker_keys)
        super().__init__(wiring, trace=self.store.rig.trace)
        self.trace.title = wiring.name
        self._broker = broker
        self._tags: dict[str, Any] = {}  # one emulated card per tag name: it keeps its memory
        self._killed: set[str] = set()
        self._on_reader: dict[str, str] = {}  # device -> name of the tag on its reader
        self._in_field: dict[str, list[str]] = {}  # device -> tags added with add_tag
        self._lock = threading.Lock()
        self._tube = None

    def tube_line(self):
        """The tube line model between the rig's tube devices (virtual rig only: faults such as
        a stuck carrier or diverter are injected here). Created on first use, before the tube
        firmware starts, from the wiring file's `tube` network file (hil.drivers.tube.TubeStation)."""
        if self._tube is None:
            self._tube = driver_class("tube-station").line_model(self)
        return self._tube

    @property
    def broker(self) -> tuple[str, int]:
        return self._broker

    def _retarget_trace(self) -> None:
        self.store.rig.trace = self.trace
        for sim in self.store.rig.devices.values():
            sim.trace = self.trace

    def sim(self, dev: str):
        """The device's emulated hardware (virtual rig only: scenario code should not need it)."""
        return self.store.rig.device(dev)

    def _ensure(self, dev: str):
        self.wiring.device(dev)  # raises with the list of devices if unknown
        if dev not in self.store.devices:  # its emulated hardware, as its kind's driver says
            self._drivers[dev].attach_sim(self.store)
        return self.store.devices[dev]

    def start(self, dev: str, timeout: float = 20.0) -> None:
        fw = self._ensure(dev)
        self.trace.step(f"{dev}: start firmware")
        if not fw.alive():
            self._killed.discard(dev)
            start_line = len(fw.lines)
            fw.start()
        else:
            start_line = 0
        self.wait_console(dev, self.wiring.device(dev).ready, timeout, start=start_line)

    def power_cut(self, dev: str) -> None:
        self.trace.step(f"{dev}: power cut")
        self._killed.add(dev)
        self._ensure(dev).kill()
        sim = self.sim(dev)
        for pin in list(sim.outputs):  # a board without power drives nothing: outputs read 0
            sim._write_pin(pin, 0)

    def power_on(self, dev: str) -> None:
        self.trace.step(f"{dev}: power on")
        self._killed.discard(dev)
        self._ensure(dev).start()

    def _reader(self, dev: str):
        w = self.wiring.device(dev)
        self._ensure(dev)
        chip = self.sim(dev).spi.get(w.reader)
        if chip is None or not hasattr(chip, "place"):
            raise RigError(f"{dev} has no tag reader on SPI {w.reader!r}")
        return chip

    def _place_tag(self, dev: str, spec: Any) -> None:
        reader = self._reader(dev)
        self._remove_tag(dev)
        if isinstance(spec, TagSpec):
            with self._lock:
                card = self._tags.get(spec.name) or self._tags.setdefault(spec.name, spec.emulated())
            name = spec.name
        else:  # an emulator card object (virtual-only scenarios)
            card, name = spec, spec.uid.hex()
        reader.place(card)
        self._on_reader[dev] = name
        self.trace.signal(dev, f"tag.{name}", 1)

    def _remove_tag(self, dev: str) -> None:
        if dev not in self.store.devices:
            return
        reader = self._reader(dev)
        reader.remove()
        name = self._on_reader.pop(dev, None)
        if name is not None:
            self.trace.signal(dev, f"tag.{name}", 0)
        for name in self._in_field.pop(dev, []):
            self.trace.signal(dev, f"tag.{name}", 0)

    def _card(self, spec: Any):
        if isinstance(spec, TagSpec):
            with self._lock:
                return self._tags.get(spec.name) or self._tags.setdefault(spec.name, spec.emulated()), spec.name
        return spec, spec.uid.hex()

    def _add_tag(self, dev: str, spec: Any) -> None:
        card, name = self._card(spec)
        self._reader(dev).add(card)
        self._in_field.setdefault(dev, []).append(name)
        self.trace.signal(dev, f"tag.{name}", 1)

    def _take_tag(self, dev: str, spec: Any) -> None:
        card, name = self._card(spec)
        self._reader(dev).remove(card)
        if name in self._in_field.get(dev, []):
            self._in_field[dev].remove(name)
        self.trace.signal(dev, f"tag.{name}", 0)

    def emulated_tag(self, name: str):
        """The emulated card of a catalogue tag (to inspect what firmware wrote to it)."""
        return self._tags.get(name)

    def _set_input(self, dev: str, pin: str, value: int) -> None:
        self._ensure(dev)
        self.sim(dev).set_input(pin, value)

    def uart_feed(self, dev: str, uart: str, data: bytes) -> None:
        self._ensure(dev)
        self.sim(dev).uart_feed(uart, data)

    def uart_output(self, dev: str, uart: str) -> bytes:
        self._ensure(dev)
        with self.sim(dev)._cond:
            return bytes(self.sim(dev).uart_from_fw.get(uart, b""))

    def output(self, dev: str, pin: str) -> int:
        return self.sim(dev).output(pin)

    def wait_output(self, dev: str, pin: str, value: int, timeout: float = 5.0) -> bool:
        return self.sim(dev).wait_output(pin, value, timeout)

    def console(self, dev: str) -> list[str]:
        fw = self.store.devices.get(dev)
        return list(fw.lines) if fw else []

    def unexpected_resets(self) -> list[str]:
        out = []
        for dev, fw in self.store.devices.items():
            if fw.proc is not None and fw.proc.poll() is not None and dev not in self._killed:
                out.append(f"{dev}: firmware exited with code {fw.proc.returncode} "
                           f"(last line: {fw.lines[-1] if fw.lines else '-'})")
        return out

    def close(self) -> None:
        super().close()
        self._killed.update(self.store.devices)
        if self._tube is not None:
            self._tube.stop()
        self.store.stop()


# --- protocol messages into the trace ------------------------------------------------------------

class BrokerTap:
    """Subscribes to ``pe/1/#`` and notes every protocol message in a trace (source ``mqtt``)."""

    def __init__(self, host: str, port: int, trace: Trace, topic: str = "pe/1/#"):
        self.host, self.port, self.trace, self.topic = host, port, trace, topic
        self._client = None
        self._ready = threading.Event()
        self._cond = threading.Condition()
        self.messages: list[tuple[float, str, str, dict, bool]] = []  # (t, dev, topic kind, msg, retained)

    def start(self, timeout: float = 5.0) -> BrokerTap:
        import paho.mqtt.client as mqtt

        c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                        client_id=f"hil-tap-{id(self):x}")
        c.on_connect = lambda cl, ud, flags, rc, props=None: (cl.subscribe(self.topic, qos=1), self._ready.set())
        c.on_message = self._on_message
        c.connect(self.host, self.port, keepalive=30)
        c.loop_start()
        self._client = c
        if not self._ready.wait(timeout):
            self.stop()
            raise RigError(f"broker {self.host}:{self.port} did not accept the trace tap")
        return self

    def _on_message(self, client, userdata, msg) -> None:
        import json

        self.trace.note("mqtt", describe_message(msg.topic, msg.payload, msg.retain))
        parts = msg.topic.split("/")
        try:
            body = json.loads(msg.payload)
        except ValueError:
            body = None
        if len(parts) >= 4 and isinstance(body, dict):
            with self._cond:
                self.messages.append((self.trace.now(), parts[2], parts[3], body, bool(msg.retain)))
                self._cond.notify_all()

    def find(self, dev: str, kind: str | None = None, type: str | None = None, since: float = 0.0) -> list[dict]:
        with self._cond:
            return [m for (t, d, k, m, _) in self.messages
                    if d == dev and t >= since and (kind is None or k == kind)
                    and (type is None or m.get("type") == type)]

    def wait(self, dev: str, kind: str | None, type: str | None, where=None, timeout: float = 5.0,
             since: float = 0.0) -> dict | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.find(dev, kind, type, since):
                    if where is None or where(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()  # first: the network loop then ends without its 1 s select timeout
            self._client.loop_stop()
            self._client = None


_DIRECTION = {"birth": "->", "status": "->", "evt": "->", "reply": "->", "cmd": "<-", "ctl": "<-"}


def describe_message(topic: str, payload: bytes, retained: bool = False) -> str:
    """One line for a protocol message: ``pad-1 -> evt tag.placed seq=3 {...}``."""
    import json

    parts = topic.split("/")
    dev, kind = (parts[2], parts[3]) if len(parts) >= 4 else (topic, "")
    arrow = _DIRECTION.get(kind, "--")
    try:
        msg = json.loads(payload)
    except ValueError:
        return f"{dev} {arrow} {kind} {payload[:80]!r}"
    if not isinstance(msg, dict):
        return f"{dev} {arrow} {kind} {str(msg)[:80]}"
    bits = [dev, arrow, kind, str(msg.get("type", "?"))]
    for k in ("seq", "id"):
        if k in msg:
            bits.append(f"{k}={msg[k]}")
    body = msg.get("body")
    if body:
        text = json.dumps(body, separators=(",", ":"))
        bits.append(text if len(text) <= 100 else text[:97] + "...")
    if retained:
        bits.append("(retained)")
    return " ".join(bits)


# --- choosing a rig --------------------------------------------------------------------------------

def parse_rig_option(value: str) -> tuple[str, Path | None]:
    """``virtual`` | ``virtual:<wiring>`` | ``pi:<wiring>`` -> (backend, wiring path)."""
    kind, _, path = value.partition(":")
    if kind not in ("virtual", "pi"):
        raise ValueError(f"--rig must be 'virtual', 'virtual:<wiring file>' or 'pi:<wiring file>', not {value!r}")
    if kind == "pi" and not path:
        raise ValueError("--rig pi needs a wiring file: --rig pi:boards/rigs/bench-1.json")
    return kind, (Path(path) if path else None)
