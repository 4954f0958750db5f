"""`PiRig`: the rig abstraction on a Raspberry Pi bench (gpiozero + USB serial).

From the wiring file (`hil.pi.wiring`), per device:

* ``inputs`` — the board's inputs (reed switches, photo-eyes, buttons) are driven by the Pi
  through transistors or optocouplers: one gpiozero `DigitalOutputDevice` each.
* ``outputs`` — the board's outputs (lock solenoids, blower relay, LEDs) are read by the Pi
  (through an optocoupler or a divider): one `DigitalInputDevice` each, whose edge callbacks
  record every change in the trace.
* ``tags`` — a tag cannot move on a bench, so each tag sits fixed at the reader with its
  antenna coil open, and a relay closes the coil: "place the tag" = energise its relay. The
  rig releases every other tag relay of that reader first (one card in the field).
* ``reset`` / ``power`` — a GPIO on the board's EN/RUN pin (or the USB-UART's RTS), and
  optionally a relay in the board's supply for real power cuts.
* ``serial`` — the board's USB serial port: console, resets, deploys (`hil.pi.board`).

Levels: every line has ``active_high`` = which GPIO level means logical 1 at the board (an
inverting transistor stage → false). Values in the API and the trace are logical.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from hil.pi.board import SerialBoard
from hil.pi.wiring import Line, TagSpec, Wiring, load_wiring
from hil.rig import Rig, RigError
from hil.trace import Trace


class _Output:
    """A board output as the Pi reads it (logical level, edge callbacks)."""

    def __init__(self, rig: PiRig, dev: str, pin: str, line: Line, factory):
        from gpiozero import DigitalInputDevice

        self.rig, self.dev, self.pin = rig, dev, pin
        kw: dict[str, Any] = {"pull_up": line.pull_up, "pin_factory": factory}
        if line.pull_up is None:
            kw["active_state"] = line.active_high
        if line.bounce_ms:
            kw["bounce_time"] = line.bounce_ms / 1000
        self.device = DigitalInputDevice(line.gpio, **kw)
        # gpiozero's "active" vs our logical 1: with a pull-up gpiozero treats low as active
        gz_active_high = (not line.pull_up) if line.pull_up is not None else line.active_high
        self.invert = gz_active_high != line.active_high
        self.device.when_activated = lambda *_: self.rig._edge(self.dev, self.pin, 0 if self.invert else 1)
        self.device.when_deactivated = lambda *_: self.rig._edge(self.dev, self.pin, 1 if self.invert else 0)

    @property
    def value(self) -> int:
        return int(self.device.value) ^ int(self.invert)


class _UartLine:
    """A Pi serial port wired to one of the board's UARTs: the Pi's TX is the keypad/scanner
    the board reads, the Pi's RX is what the board writes (its display). A reader thread keeps
    everything received, opened on first use so the display's output is kept from then on."""

    def __init__(self, port: str, baud: int, dev: str, uart: str, rig: Rig):
        import serial

        self.dev, self.uart, self.rig = dev, uart, rig
        self.port = serial.serial_for_url(port, baud, timeout=0.1)
        self._rx = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True, name=f"uart-{dev}-{uart}")
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.port.read(256)
            except Exception:  # noqa: BLE001 - the port went away: stop reading, the scenario fails on content
                return
            if data:
                with self._lock:
                    self._rx.extend(data)
                self.rig.trace.note(self.dev, f"uart {self.uart} -> {data!r}")

    def write(self, data: bytes) -> None:
        self.rig.trace.note(self.dev, f"uart {self.uart} <- {data!r}")
        self.port.write(data)
        self.port.flush()

    def received(self) -> bytes:
        with self._lock:
            return bytes(self._rx)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self.port.close()


class PiRig(Rig):
    backend = "pi"

    def __init__(self, wiring: Wiring | str | Path, *, pin_factory=None, open_serial: bool = True,
                 log_dir: str | Path | None = None, trace: Trace | None = None):
        if not isinstance(wiring, Wiring):
            wiring = load_wiring(wiring)
        wiring.require_gpio()
        super().__init__(wiring, trace)
        from gpiozero import Device, DigitalOutputDevice

        if pin_factory is None and wiring.pin_factory and Device.pin_factory is None:
            os.environ.setdefault("GPIOZERO_PIN_FACTORY", wiring.pin_factory)
        self.factory = pin_factory
        self._cond = threading.Condition()
        self.inputs: dict[str, dict[str, Any]] = {}
        self.outputs: dict[str, dict[str, _Output]] = {}
        self.tag_relays: dict[str, dict[str, Any]] = {}
        self.reset_lines: dict[str, Any] = {}
        self.power_lines: dict[str, Any] = {}
        self.boards: dict[str, SerialBoard] = {}
        self._uarts: dict[tuple[str, str], Any] = {}
        self._input_level: dict[tuple[str, str], int] = {}
        self._tag_on: dict[str, str | None] = {}
        self._powered_off: set[str] = set()
        self._cut_at: dict[str, float] = {}
        self.log_dir = Path(log_dir) if log_dir else None
        self._closed = False
        try:
            for dev, w in wiring.devices.items():
                self.inputs[dev] = {}
                for pin, ln in w.inputs.items():
                    idle = self._idle_level(w, pin)
                    self.inputs[dev][pin] = DigitalOutputDevice(ln.gpio, active_high=ln.active_high,
                                                                initial_value=bool(idle), pin_factory=pin_factory)
                    self._input_level[(dev, pin)] = idle
                    self.trace.signal(dev, pin, idle)
                self.outputs[dev] = {pin: _Output(self, dev, pin, ln, pin_factory) for pin, ln in w.outputs.items()}
                for pin, out in self.outputs[dev].items():
                    self.trace.signal(dev, pin, out.value)
                self.tag_relays[dev] = {}
                for name, tl in w.tags.items():
                    self.tag_relays[dev][name] = DigitalOutputDevice(
                        tl.line.gpio, active_high=tl.line.active_high, initial_value=False, pin_factory=pin_factory)
                    self.trace.signal(dev, f"tag.{name}", 0)
                self._tag_on[dev] = None
                if isinstance(w.reset, Line):
                    self.reset_lines[dev] = DigitalOutputDevice(w.reset.gpio, active_high=w.reset.active_high,
                                                                initial_value=False, pin_factory=pin_factory)
                if w.power is not None:
                    self.power_lines[dev] = DigitalOutputDevice(w.power.gpio, active_high=w.power.active_high,
                                                                initial_value=True, pin_factory=pin_factory)
                if w.serial is not None and open_serial:
                    self.boards[dev] = self._open_board(dev)
        except Exception:
            self.close()
            raise

    def _open_board(self, dev: str) -> SerialBoard:
        w = self.wiring.device(dev)
        if isinstance(w.reset, Line):
            reset: Any = self.reset_lines[dev]
            pulse = w.reset.pulse_ms
        else:
            reset, pulse = w.reset, 100
        log = self.log_dir / f"{dev}-serial.log" if self.log_dir else None
        return SerialBoard(w.serial.port, w.serial.baud, name=dev, trace=self.trace, log_path=log,
                           reset=reset, reset_pulse_ms=pulse).open()

    @property
    def broker(self) -> tuple[str, int]:
        if self.wiring.broker is None:
            raise RigError(f"wiring file of rig {self.name!r} has no 'broker' (the Mosquitto the boards use)")
        return self.wiring.broker

    def _retarget_trace(self) -> None:
        for board in self.boards.values():
            board.trace = self.trace
        # the new trace starts with the current levels, so every row has a known value
        for (dev, pin), v in self._input_level.items():
            self.trace.signal(dev, pin, v)
        for dev, outs in self.outputs.items():
            for pin, out in outs.items():
                self.trace.signal(dev, pin, out.value)
        for dev, relays in self.tag_relays.items():
            for name in relays:
                self.trace.signal(dev, f"tag.{name}", 1 if self._tag_on.get(dev) == name else 0)

    # --- edges from the board ----------------------------------------------------------------------
    def _edge(self, dev: str, pin: str, value: int) -> None:
        self.trace.signal(dev, pin, value)
        with self._cond:
            self._cond.notify_all()
        self._output_changed(dev, pin, value)  # door springs (wiring `springs`)

    # --- strategies ------------------------------------------------------------------------------------
    def board(self, dev: str) -> SerialBoard:
        if dev not in self.boards:
            raise RigError(f"{dev} has no serial port in the wiring file: the rig cannot see it boot")
        return self.boards[dev]

    def start(self, dev: str, timeout: float = 20.0) -> None:
        """Hard-reset the board and wait for its ready line (boot failures raise BootFailure)."""
        board = self.board(dev)
        self.trace.step(f"{dev}: reset and start")
        if dev in self._powered_off:
            self.power_on(dev)
        else:
            board.hard_reset()
        board.wait_ready(self.wiring.device(dev).ready, timeout, since=len(board.lines))

    def power_cut(self, dev: str) -> None:
        self.trace.step(f"{dev}: power cut")
        if dev in self.power_lines:
            self.power_lines[dev].off()
        elif dev in self.reset_lines:
            self.reset_lines[dev].on()  # held in reset: as good as off for the firmware
        else:
            raise RigError(f"{dev}: no 'power' relay or 'reset' GPIO in the wiring file")
        self._powered_off.add(dev)
        self._cut_at[dev] = time.monotonic()

    def power_on(self, dev: str) -> None:
        # off long enough for the board to really be off (supply caps, reset pulse width)
        w = self.wiring.device(dev)
        line = w.power if w.power is not None else (w.reset if isinstance(w.reset, Line) else None)
        if line is not None and dev in self._cut_at:
            left = self._cut_at.pop(dev) + line.pulse_ms / 1000 - time.monotonic()
            if left > 0:
                time.sleep(left)
        self.trace.step(f"{dev}: power on")
        if dev in self.boards:
            self.boards[dev].expect_reset("power on")
        if dev in self.power_lines:
            self.power_lines[dev].on()
        elif dev in self.reset_lines:
            self.reset_lines[dev].off()
        else:
            raise RigError(f"{dev}: no 'power' relay or 'reset' GPIO in the wiring file")
        self._powered_off.discard(dev)

    # --- what the world does -------------------------------------------------------------------------
    def _place_tag(self, dev: str, spec: Any) -> None:
        relay = self._relay(dev, spec)
        self._remove_tag(dev)
        relay.on()
        self._tag_on[dev] = spec.name
        self.trace.signal(dev, f"tag.{spec.name}", 1)

    def _relay(self, dev: str, spec: Any):
        if not isinstance(spec, TagSpec):
            raise RigError("on a Pi rig a tag is a name from the wiring file (tags are fixed at readers)")
        relays = self.tag_relays.get(dev, {})
        if spec.name not in relays:
            raise RigError(f"{dev} has no relay for tag {spec.name!r}")
        return relays[spec.name]

    def _add_tag(self, dev: str, spec: Any) -> None:
        self._relay(dev, spec).on()  # each tag's coil has its own relay: several can be on
        self.trace.signal(dev, f"tag.{spec.name}", 1)

    def _take_tag(self, dev: str, spec: Any) -> None:
        self._relay(dev, spec).off()
        self.trace.signal(dev, f"tag.{spec.name}", 0)

    def _remove_tag(self, dev: str) -> None:
        for name, relay in self.tag_relays.get(dev, {}).items():
            if relay.value:
                relay.off()
                self.trace.signal(dev, f"tag.{name}", 0)
        self._tag_on[dev] = None

    def _set_input(self, dev: str, pin: str, value: int) -> None:
        try:
            out = self.inputs[dev][pin]
        except KeyError:
            have = ", ".join(self.inputs.get(dev, {})) or "none"
            raise RigError(f"{dev} has no input {pin!r} wired on rig {self.name!r} (has: {have})") from None
        out.value = bool(value)
        if self._input_level.get((dev, pin)) != value:
            self._input_level[(dev, pin)] = value
            self.trace.signal(dev, pin, value)

    def _uart(self, dev: str, uart: str) -> _UartLine:
        key = (dev, uart)
        if key not in self._uarts:
            spec = self.wiring.device(dev).uarts.get(uart)
            if spec is None:
                raise RigError(f"{dev}: UART {uart!r} is not wired to the Pi on this rig "
                               f"(add devices.{dev}.uarts.{uart}: the Pi serial port on it)")
            self._uarts[key] = _UartLine(spec.port, spec.baud, dev, uart, self)
        return self._uarts[key]

    def uart_feed(self, dev: str, uart: str, data: bytes) -> None:
        self._uart(dev, uart).write(data)

    def uart_output(self, dev: str, uart: str) -> bytes:
        return self._uart(dev, uart).received()

    # --- what the world sees ---------------------------------------------------------------------------
    def _out(self, dev: str, pin: str) -> _Output:
        try:
            return self.outputs[dev][pin]
        except KeyError:
            have = ", ".join(self.outputs.get(dev, {})) or "none"
            raise RigError(f"{dev} has no output {pin!r} wired on rig {self.name!r} (has: {have})") from None

    def output(self, dev: str, pin: str) -> int:
        return self._out(dev, pin).value

    def wait_output(self, dev: str, pin: str, value: int, timeout: float = 5.0) -> bool:
        out = self._out(dev, pin)
        deadline = time.monotonic() + timeout
        with self._cond:
            while out.value != value:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))  # edges wake us; the poll covers a missed edge
        return True

    def console(self, dev: str) -> list[str]:
        b = self.boards.get(dev)
        return list(b.lines) if b else []

    def unexpected_resets(self) -> list[str]:
        out = []
        for dev, b in self.boards.items():
            for boot in b.unexpected_resets():
                out.append(f"{dev}: unexpected reset {boot.cause} at {boot.t:.3f}s")
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        super().close()
        for b in self.boards.values():
            b.close()
        for u in self._uarts.values():
            u.close()
        for group in (self.inputs, self.tag_relays):
            for devs in group.values():
                for d in devs.values():
                    d.close()
        for devs in self.outputs.values():
            for o in devs.values():
                o.device.close()
        for d in list(self.reset_lines.values()) + list(self.power_lines.values()):
            d.close()
