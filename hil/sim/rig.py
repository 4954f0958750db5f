"""The virtual rig: the world the firmware's sim HAL talks to.

A `VirtualRig` is a TCP server (see docs/hil.md, "Sim link"). Each firmware process binds
its connection to one `SimDevice` by name; the device holds the emulated hardware: pins,
SPI chips (e.g. the MFRC522 emulator) and UARTs. Tests and scenarios drive the inputs and
read the outputs through the same `SimDevice` objects, and every change is recorded in a
`Trace`.
"""
from __future__ import annotations

import socketserver
import threading
import time
from collections.abc import Callable
from typing import Protocol, Self

from hil.trace import Trace


class SpiChip(Protocol):
    def transfer(self, data: bytes) -> bytes: ...


class SimDevice:
    """Emulated hardware of one board: pins, SPI chips, UARTs, watchdog feed count."""

    def __init__(self, name: str, trace: Trace):
        self.name = name
        self.trace = trace
        self._cond = threading.Condition()
        self.outputs: dict[str, int] = {}
        self.inputs: dict[str, int] = {}
        self.spi: dict[str, SpiChip] = {}
        # SPI buses with a fault: a transfer is answered with an error (`E`), which the sim HAL
        # raises as OSError, as a board's bus driver does (a display's self-test, docs/ota.md)
        self.faulty: set[str] = set()
        # inputs driven by emulated hardware: pin -> (level source, level when released)
        self._wired: dict[str, tuple[Callable[[], int | None], int]] = {}
        self._uart_to_fw: dict[str, bytearray] = {}
        self.uart_from_fw: dict[str, bytearray] = {}
        self.wdt_feeds = 0
        self.log: list[str] = []
        self.connections = 0
        self.spi_transfers = 0
        self.on_output: list[Callable[[str, int], None]] = []

    # --- what the world does -------------------------------------------------
    def attach_spi(self, bus: str, chip: SpiChip, irq: str | None = None, irq_pull: int = 1) -> SpiChip:
        """Put `chip` on SPI `bus`; `irq` names the input pin its IRQ output is wired to
        (the chip's ``irq_pin()``, e.g. the MFRC522's), read as `irq_pull` when released."""
        self.spi[bus] = chip
        if irq is not None:
            self.wire_input(irq, chip.irq_pin, irq_pull)  # type: ignore[attr-defined]
        return chip

    def wire_input(self, pin: str, source: Callable[[], int | None], pull: int = 1) -> None:
        """Drive input `pin` from emulated hardware: each firmware read calls `source()`,
        which returns 0/1, or None for a released open-drain line that reads as `pull` (the
        pull-up or pull-down on the host side). `set_input` refuses a wired pin."""
        with self._cond:
            self._wired[pin] = (source, 1 if pull else 0)

    def set_input(self, pin: str, value: int) -> None:
        if pin in self._wired:
            raise ValueError(f"{self.name}: input {pin!r} is driven by emulated hardware (wire_input)")
        value = 1 if value else 0
        with self._cond:
            if self.inputs.get(pin) != value:
                self.inputs[pin] = value
                self.trace.signal(self.name, pin, value)
            self._cond.notify_all()

    def uart_feed(self, uart: str, data: bytes) -> None:
        """Bytes arriving at the board's UART (e.g. keys typed on a keypad)."""
        with self._cond:
            self._uart_to_fw.setdefault(uart, bytearray()).extend(data)
        self.trace.note(self.name, f"uart {uart} <- {data!r}")

    # --- what the world sees -------------------------------------------------
    def output(self, pin: str, default: int = 0) -> int:
        with self._cond:
            return self.outputs.get(pin, default)

    def wait_output(self, pin: str, value: int, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.outputs.get(pin) == value, timeout)

    def wait_for(self, predicate: Callable[[SimDevice], bool], timeout: float = 5.0) -> bool:
        """Wait until `predicate(device)` holds; pin/uart/log changes wake the waiter."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def output_history(self, pin: str) -> list[tuple[float, int]]:
        return [(t, v) for (t, d, sig, v) in self.trace.signals if d == self.name and sig == pin]

    # --- called by the link ----------------------------------------------------
    def _write_pin(self, pin: str, value: int) -> None:
        with self._cond:
            changed = self.outputs.get(pin) != value
            self.outputs[pin] = value
            self._cond.notify_all()
        if changed:
            self.trace.signal(self.name, pin, value)
            for cb in list(self.on_output):
                cb(pin, value)

    def _read_pin(self, pin: str) -> int:
        wired = self._wired.get(pin)
        if wired is None:
            with self._cond:
                return self.inputs.get(pin, 0)
        level = wired[0]()  # outside the lock: the chip takes its own
        value = wired[1] if level is None else (1 if level else 0)
        with self._cond:
            changed = self.inputs.get(pin) != value
            self.inputs[pin] = value
            if changed:
                self._cond.notify_all()
        if changed:  # the trace shows the level as the firmware saw it
            self.trace.signal(self.name, pin, value)
        return value

    def _spi(self, bus: str, data: bytes) -> bytes:
        chip = self.spi.get(bus)
        self.spi_transfers += 1
        if bus in self.faulty:
            raise ValueError(f"SPI {bus}: bus fault")
        if chip is None:  # nothing wired: MISO floats high
            return b"\xff" * len(data)
        return chip.transfer(data)

    def _uart_tx(self, uart: str, data: bytes) -> None:
        with self._cond:
            self.uart_from_fw.setdefault(uart, bytearray()).extend(data)
            self._cond.notify_all()
        self.trace.note(self.name, f"uart {uart} -> {data!r}")

    def _uart_rx(self, uart: str) -> bytes:
        with self._cond:
            buf = self._uart_to_fw.get(uart)
            if not buf:
                return b""
            data = bytes(buf)
            buf.clear()
            return data

    def _feed(self) -> None:
        with self._cond:
            self.wdt_feeds += 1

    def _log(self, text: str) -> None:
        with self._cond:
            self.log.append(text)
            self._cond.notify_all()
        self.trace.note(self.name, text)


class _Handler(socketserver.StreamRequestHandler):
    rig: VirtualRig

    def handle(self) -> None:  # one firmware process
        self._dev: SimDevice | None = None
        try:
            self._serve()
        except (ConnectionResetError, BrokenPipeError):
            # The firmware process was killed (demo stop, reset fault): an
            # abrupt close is a normal end of the link, not an error.
            pass
        if self._dev is not None:
            self._dev._log("link: firmware disconnected")

    def _serve(self) -> None:
        dev: SimDevice | None = None
        rfile, wfile = self.rfile, self.wfile
        for raw in rfile:
            line = raw.decode("ascii", "replace").rstrip("\r\n")
            if not line:
                continue
            op, _, rest = line.partition(" ")
            try:
                if op == "H":
                    dev = self._dev = self.server.rig.device(rest.strip())  # type: ignore[attr-defined]
                    dev.connections += 1
                    dev._log("link: firmware connected")
                    wfile.write(b"OK\n")
                elif dev is None:
                    wfile.write(b"E hello first\n")
                elif op == "S":
                    bus, _, hexdata = rest.partition(" ")
                    wfile.write(dev._spi(bus, bytes.fromhex(hexdata)).hex().encode() + b"\n")
                elif op == "W":
                    pin, _, val = rest.partition(" ")
                    dev._write_pin(pin, 1 if val.strip() == "1" else 0)
                elif op == "R":
                    wfile.write(b"1\n" if dev._read_pin(rest.strip()) else b"0\n")
                elif op == "T":
                    uart, _, hexdata = rest.partition(" ")
                    dev._uart_tx(uart, bytes.fromhex(hexdata))
                elif op == "X":
                    data = dev._uart_rx(rest.strip())
                    wfile.write((data.hex() if data else "-").encode() + b"\n")
                elif op == "F":
                    dev._feed()
                elif op == "D":
                    dev._log(rest)
                else:
                    wfile.write(f"E unknown op {op!r}\n".encode())
                wfile.flush()
            except (ValueError, KeyError) as exc:
                wfile.write(f"E {exc}\n".encode())
                wfile.flush()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class VirtualRig:
    """TCP server that emulated hardware lives behind. Use as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, trace: Trace | None = None):
        self.trace = trace or Trace()
        self._server = _Server((host, port), _Handler)
        self._server.rig = self  # type: ignore[attr-defined]
        self.host, self.port = self._server.server_address[:2]
        self._devices: dict[str, SimDevice] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def device(self, name: str) -> SimDevice:
        with self._lock:
            if name not in self._devices:
                self._devices[name] = SimDevice(name, self.trace)
            return self._devices[name]

    @property
    def devices(self) -> dict[str, SimDevice]:
        return dict(self._devices)

    def start(self) -> VirtualRig:
        self._thread = threading.Thread(target=self._server.serve_forever, name="virtual-rig",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:  # pragma: no cover - manual use: python -m hil.sim.rig
    import argparse

    ap = argparse.ArgumentParser(description="Run a virtual rig server")
    ap.add_argument("--port", type=int, default=7000)
    args = ap.parse_args()
    with VirtualRig(port=args.port) as rig:
        print(f"virtual rig on {rig.host}:{rig.port}")
        while True:
            time.sleep(3600)


if __name__ == "__main__":  # pragma: no cover
    main()
