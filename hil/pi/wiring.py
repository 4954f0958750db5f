"""Rig wiring files (boards/rigs/<name>.json): what a rig has and which Pi pin does what.

The format is documented in docs/hil.md ("Wiring a rig"). Loading validates everything and
names the exact field that is wrong, so a typo on the bench fails before any pin moves.

Pure data, no gpiozero: the virtual rig reads the same file for its device list and tag
catalogue (``--rig virtual:boards/rigs/bench-1.json`` runs the bench's scenario set on the
virtual twin of the bench).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from gateway.kinds.registry import device_kinds

KINDS = device_kinds()  # gateway/kinds/registry.py
TAG_TECHS = ("ntag213", "ntag215", "ntag216", "mifare-1k")

# Logical levels the board's firmware reads for world states (overridable per device with
# "levels"): a reed switch opens with the door, a photo-eye reports a blocked beam, a button
# reads 1 while pressed.
DEFAULT_LEVELS = {"door_open": 1, "button_pressed": 1, "eye_blocked": 1, "estop_active": 1}


class WiringError(ValueError):
    pass


@dataclass(frozen=True)
class Line:
    """One Pi GPIO line. `active_high`: the GPIO level that means logical 1 (see docs/hil.md)."""

    gpio: int | str | None
    active_high: bool = True
    pull_up: bool | None = None  # Pi inputs only: None = floating (board drives the line)
    bounce_ms: int | None = None  # Pi inputs only: gpiozero bounce_time
    pulse_ms: int = 100  # reset/power lines: how long a pulse lasts


@dataclass(frozen=True)
class TagSpec:
    """A physical tag on a rig: its name in scenarios and what it holds."""

    name: str
    uid: bytes
    tech: str = "ntag213"
    sample: str | None = None  # NDEF Text record (NTAG) or block 4 (MIFARE)
    uri: str | None = None  # NDEF URI record instead of Text (NTAG)

    @property
    def uid_hex(self) -> str:
        return self.uid.hex()

    def emulated(self):
        """The tag as the MFRC522 emulator's card model (virtual rig)."""
        from hil.sim import mfrc522 as emu

        if self.tech == "mifare-1k":
            if self.sample:
                return emu.MifareClassic1K.with_sample(self.uid, self.sample)
            return emu.MifareClassic1K(self.uid)
        if self.uri:
            return emu.NtagTag.with_uri(self.uid, self.uri, self.tech)
        if self.sample:
            return emu.NtagTag.with_text(self.uid, self.sample, self.tech)
        return emu.NtagTag(self.uid, self.tech)


@dataclass(frozen=True)
class TagLine:
    spec: TagSpec
    line: Line | None  # the relay that connects this tag's coil (None on the virtual rig)


@dataclass(frozen=True)
class SerialSpec:
    port: str
    baud: int = 115200


@dataclass
class DeviceWiring:
    name: str
    kind: str
    board: str | None = None  # boards/<board>.json of the board under test
    config: str | None = None  # the device config deployed with it (tools.deploy)
    serial: SerialSpec | None = None
    reset: Line | str | None = None  # a GPIO line, "rts" (DTR/RTS auto-reset) or "machine"
    power: Line | None = None  # a relay that switches the board's supply
    inputs: dict[str, Line] = field(default_factory=dict)  # the board's inputs, driven by the Pi
    outputs: dict[str, Line] = field(default_factory=dict)  # the board's outputs, read by the Pi
    tags: dict[str, TagLine] = field(default_factory=dict)
    reader: str = "rfid"  # the board's SPI device name of its reader (virtual rig)
    levels: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LEVELS))
    app: dict = field(default_factory=dict)  # app config for the virtual rig's firmware
    ready: str = r"online session"  # console line that says the device is up
    # the board's UARTs the Pi drives (keypad, QR scanner) and reads (display): a Pi serial
    # port wired to each; the virtual rig needs no entry
    uarts: dict[str, SerialSpec] = field(default_factory=dict)
    # world physics: a door input that springs open while its lock output is powered
    # ({"lock_1": "door_1"}); the rig plays the spring on both backends (`Rig.jam` stops it)
    springs: dict[str, str] = field(default_factory=dict)
    heap: str | None = None  # virtual rig only: MicroPython heap for this device (e.g. "192k")


@dataclass
class Wiring:
    name: str
    path: Path | None
    devices: dict[str, DeviceWiring]
    pin_factory: str | None = None
    broker: tuple[str, int] | None = None
    # shell commands that stop / start the rig's broker (outage scenarios on a bench)
    broker_control: tuple[str, str] | None = None
    tube: Path | None = None  # tube network file of the rig's tube devices (docs/tube.md)

    def device(self, name: str) -> DeviceWiring:
        try:
            return self.devices[name]
        except KeyError:
            raise KeyError(f"rig {self.name!r} has no device {name!r} (has: {', '.join(self.devices)})") from None

    def gpio_lines(self) -> list[tuple[str, Line]]:
        """Every GPIO line with a readable owner name (for conflict checks and docs)."""
        out = []
        for dev in self.devices.values():
            for pin, ln in dev.inputs.items():
                out.append((f"{dev.name}.inputs.{pin}", ln))
            for pin, ln in dev.outputs.items():
                out.append((f"{dev.name}.outputs.{pin}", ln))
            for tag, tl in dev.tags.items():
                if tl.line is not None:
                    out.append((f"{dev.name}.tags.{tag}", tl.line))
            if isinstance(dev.reset, Line):
                out.append((f"{dev.name}.reset", dev.reset))
            if dev.power is not None:
                out.append((f"{dev.name}.power", dev.power))
        return [(n, ln) for n, ln in out if ln.gpio is not None]

    def require_gpio(self) -> None:
        """A Pi rig needs a GPIO on every line; the virtual rig does not."""
        for dev in self.devices.values():
            for group, lines in (("inputs", dev.inputs), ("outputs", dev.outputs)):
                for pin, ln in lines.items():
                    if ln.gpio is None:
                        raise WiringError(
                            f"{self._where()}devices.{dev.name}.{group}.{pin}.gpio is required on a Pi rig")
            for tag, tl in dev.tags.items():
                if tl.line is None or tl.line.gpio is None:
                    raise WiringError(f"{self._where()}devices.{dev.name}.tags.{tag}.gpio is required on a Pi rig "
                                      "(the relay that connects the tag's coil)")
            for out, door in dev.springs.items():
                if out not in dev.outputs or door not in dev.inputs:
                    raise WiringError(f"{self._where()}devices.{dev.name}.springs.{out}: a Pi rig needs "
                                      f"{out!r} in outputs and {door!r} in inputs")

    def _where(self) -> str:
        return f"{self.path}: " if self.path else ""


# --- parsing ---------------------------------------------------------------------------------

_GPIO_RX = re.compile(r"^(GPIO|BCM|BOARD|J8:|WPI)\d+$|^J8:\d+$")


def _err(where: str, msg: str) -> WiringError:
    return WiringError(f"{where}: {msg}")


def _gpio(v, where: str):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise _err(where, "must be a BCM number (17) or a gpiozero pin name ('GPIO17', 'BOARD11')")
    if isinstance(v, int):
        if not 0 <= v <= 53:
            raise _err(where, f"GPIO {v} does not exist (0-53)")
        return v
    if not _GPIO_RX.match(v):
        raise _err(where, f"{v!r} is not a gpiozero pin name ('GPIO17', 'BOARD11', 'J8:11')")
    return v


def _bool(d: dict, key: str, default, where: str):
    v = d.get(key, default)
    if v is not None and not isinstance(v, bool):
        raise _err(f"{where}.{key}", "must be true or false")
    return v


def _line(d, where: str) -> Line:
    if isinstance(d, (int, str)) and not isinstance(d, bool):
        return Line(gpio=_gpio(d, where))
    if not isinstance(d, dict):
        raise _err(where, "must be a GPIO number or an object with 'gpio'")
    unknown = set(d) - {"gpio", "active_high", "pull_up", "bounce_ms", "pulse_ms", "note"}
    if unknown:
        raise _err(where, f"unknown field(s) {', '.join(sorted(unknown))}")
    bounce = d.get("bounce_ms")
    if bounce is not None and (not isinstance(bounce, int) or bounce < 0):
        raise _err(f"{where}.bounce_ms", "must be a non-negative integer")
    pulse = d.get("pulse_ms", 100)
    if not isinstance(pulse, int) or pulse <= 0:
        raise _err(f"{where}.pulse_ms", "must be a positive integer")
    return Line(gpio=_gpio(d.get("gpio"), f"{where}.gpio"), active_high=_bool(d, "active_high", True, where),
                pull_up=_bool(d, "pull_up", None, where), bounce_ms=bounce, pulse_ms=pulse)


def _uid(v, where: str, tech: str) -> bytes:
    if not isinstance(v, str):
        raise _err(where, "must be the UID as hex, e.g. '04102030405001'")
    try:
        uid = bytes.fromhex(v.replace(":", "").replace(" ", ""))
    except ValueError:
        raise _err(where, f"{v!r} is not hex") from None
    want = 4 if tech == "mifare-1k" else 7
    if len(uid) != want:
        raise _err(where, f"a {tech} UID is {want} bytes, got {len(uid)}")
    return uid


def _tag(name: str, d, where: str) -> TagLine:
    if not isinstance(d, dict):
        raise _err(where, "must be an object with 'uid' (and 'gpio' on a Pi rig)")
    tech = d.get("tech", "ntag213")
    if tech not in TAG_TECHS:
        raise _err(f"{where}.tech", f"must be one of {', '.join(TAG_TECHS)}")
    for k in ("sample", "uri"):
        if d.get(k) is not None and not isinstance(d[k], str):
            raise _err(f"{where}.{k}", "must be a string")
    spec = TagSpec(name=name, uid=_uid(d.get("uid"), f"{where}.uid", tech), tech=tech,
                   sample=d.get("sample"), uri=d.get("uri"))
    line_fields = {k: d[k] for k in ("gpio", "active_high", "pulse_ms") if k in d}
    line = _line(line_fields, where) if "gpio" in d else None
    return TagLine(spec, line)


def _serial(s, where: str, baud: int = 115200) -> SerialSpec:
    if isinstance(s, str):
        s = {"port": s}
    if not isinstance(s, dict) or not isinstance(s.get("port"), str):
        raise _err(where, "must be a port path or {'port': ..., 'baud': ...}")
    baud = s.get("baud", baud)
    if not isinstance(baud, int) or baud <= 0:
        raise _err(f"{where}.baud", "must be a positive integer")
    return SerialSpec(s["port"], baud)


def _str_map(d, where: str) -> dict[str, str]:
    if not isinstance(d, dict) or not all(isinstance(v, str) for v in d.values()):
        raise _err(where, "must be an object of name -> name")
    return dict(d)


def _device(name: str, d, where: str) -> DeviceWiring:
    if not isinstance(d, dict):
        raise _err(where, "must be an object")
    if d.get("kind") not in KINDS:
        raise _err(f"{where}.kind", f"must be one of {', '.join(KINDS)}")
    serial = _serial(d["serial"], f"{where}.serial") if d.get("serial") is not None else None
    uarts = d.get("uarts", {})
    if not isinstance(uarts, dict):
        raise _err(f"{where}.uarts", "must be an object of board UART name -> Pi serial port")
    uarts = {u: _serial(s, f"{where}.uarts.{u}", 9600) for u, s in uarts.items()}
    reset = d.get("reset")
    if reset is not None:
        if reset in ("rts", "machine"):
            pass
        elif isinstance(reset, str):
            raise _err(f"{where}.reset", "must be a GPIO line, 'rts' or 'machine'")
        else:
            reset = _line(reset, f"{where}.reset")
    power = _line(d["power"], f"{where}.power") if d.get("power") is not None else None
    groups = {}
    for g in ("inputs", "outputs"):
        lines = d.get(g, {})
        if not isinstance(lines, dict):
            raise _err(f"{where}.{g}", "must be an object of pin name -> line")
        groups[g] = {pin: _line(ln, f"{where}.{g}.{pin}") for pin, ln in lines.items()}
    tags = d.get("tags", {})
    if not isinstance(tags, dict):
        raise _err(f"{where}.tags", "must be an object of tag name -> tag")
    levels = dict(DEFAULT_LEVELS)
    for k, v in (d.get("levels") or {}).items():
        if k not in DEFAULT_LEVELS or v not in (0, 1):
            raise _err(f"{where}.levels.{k}", f"known levels are {', '.join(DEFAULT_LEVELS)}, each 0 or 1")
        levels[k] = v
    for k in ("board", "config", "ready", "reader", "heap"):
        if d.get(k) is not None and not isinstance(d[k], str):
            raise _err(f"{where}.{k}", "must be a string")
    if not isinstance(d.get("app", {}), dict):
        raise _err(f"{where}.app", "must be an object")
    return DeviceWiring(
        name=name, kind=d["kind"], board=d.get("board"), config=d.get("config"), serial=serial,
        reset=reset, power=power, inputs=groups["inputs"], outputs=groups["outputs"],
        tags={t: _tag(t, td, f"{where}.tags.{t}") for t, td in tags.items()},
        reader=d.get("reader", "rfid"), levels=levels, app=dict(d.get("app", {})),
        ready=d.get("ready", r"online session"), uarts=uarts,
        springs=_str_map(d.get("springs", {}), f"{where}.springs"), heap=d.get("heap"))


def parse_wiring(data: dict, path: Path | None = None) -> Wiring:
    where = str(path) if path else "wiring"
    if not isinstance(data, dict):
        raise _err(where, "must be a JSON object")
    devices = data.get("devices")
    if not isinstance(devices, dict) or not devices:
        raise _err(f"{where}: devices", "at least one device is required")
    broker = None
    if data.get("broker") is not None:
        b = data["broker"]
        if not isinstance(b, dict) or not isinstance(b.get("host"), str) or not isinstance(b.get("port", 1883), int):
            raise _err(f"{where}: broker", "must be {'host': ..., 'port': ...}")
        broker = (b["host"], b.get("port", 1883))
    tube = data.get("tube")
    if tube is not None and not isinstance(tube, str):
        raise _err(f"{where}: tube", "must be the path of a tube network file (boards/tube/...)")
    control = None
    if isinstance(data.get("broker"), dict) and ("stop" in data["broker"] or "start" in data["broker"]):
        b = data["broker"]
        if not isinstance(b.get("stop"), str) or not isinstance(b.get("start"), str):
            raise _err(f"{where}: broker", "'stop' and 'start' go together, each a shell command")
        control = (b["stop"], b["start"])
    w = Wiring(name=data.get("rig") or (path.stem if path else "rig"), path=path,
               devices={n: _device(n, d, f"{where}: devices.{n}") for n, d in devices.items()},
               pin_factory=data.get("pin_factory"), broker=broker, broker_control=control,
               tube=Path(tube) if tube else None)
    seen: dict[str, str] = {}
    for owner, ln in w.gpio_lines():
        key = str(ln.gpio).upper().replace("GPIO", "").replace("BCM", "")
        if key in seen:
            raise _err(where, f"GPIO {ln.gpio} is used twice: {seen[key]} and {owner}")
        seen[key] = owner
    return w


def load_wiring(path: str | Path) -> Wiring:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise WiringError(f"wiring file {path} not found (rigs live in boards/rigs/)") from None
    except ValueError as e:
        raise WiringError(f"{path}: not valid JSON ({e})") from None
    return parse_wiring(data, path)
