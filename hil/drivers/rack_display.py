"""The rack display (`kind: rack-display`, docs/rack-display.md): an SSD1306 OLED on SPI
``display`` with its D/C pin ``dc``, showing the like count of the rack's products.

On the virtual rig the board's SPI bytes reach `SSD1306Emulator`, which keeps the panel's
memory (GDDRAM) as the controller would: the rig reads the picture (`pixels`), reads its text
back (`screen_text`: the firmware draws MicroPython's 8x8 framebuf font, at 1x and 2x; the
glyphs are taken from the real `framebuf` once) and renders it as a PNG (`save_png`, Pillow).
On a bench rig the panel is real: these reads need the virtual rig.
"""
from __future__ import annotations

import collections
import functools
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hil.drivers.base import DeviceDriver
from hil.sim.firmware import FirmwareProcess, micropython_binary
from hil.sim.rig import SimDevice

if TYPE_CHECKING:
    from hil.sim.store import VirtualStore

# SSD1306 commands and how many argument bytes follow each (datasheet, "Command Table")
_ARGS = {0x81: 1, 0x20: 1, 0x21: 2, 0x22: 2, 0xA8: 1, 0xD3: 1, 0xD5: 1, 0xD9: 1, 0xDA: 1,
         0xDB: 1, 0x8D: 1}


class SSD1306Emulator:
    """An SSD1306 on SPI: commands (D/C low) and data (D/C high) in horizontal addressing
    mode, 128 columns x 8 pages. `frames` counts the windows the firmware set (one per
    `show()`); `data_bytes` the GDDRAM bytes written."""

    def __init__(self, sim: SimDevice, dc: str = "dc", width: int = 128, height: int = 32):
        self.sim, self.dc, self.width, self.height = sim, dc, width, height
        self.ram = bytearray(128 * 8)
        self.on = False
        self.frames = 0
        self.data_bytes = 0
        self._col = (0, 127)
        self._page = (0, 7)
        self._ptr = (0, 0)  # (column, page)
        self._pending: list[int] = []  # a command waiting for its arguments
        self._lock = threading.Lock()
        # (time.monotonic(), GDDRAM) at the end of each complete frame: when a picture was up
        self.history: collections.deque[tuple[float, bytes]] = collections.deque(maxlen=2000)

    def transfer(self, data: bytes) -> bytes:
        with self._lock:
            if self.sim.output(self.dc):
                for b in data:
                    self._write(b)
            else:
                for b in data:
                    self._command(b)
        return b"\x00" * len(data)

    def _command(self, b: int) -> None:
        p = self._pending
        p.append(b)
        if len(p) - 1 < _ARGS.get(p[0], 0):
            return
        op, args = p[0], p[1:]
        self._pending = []
        if op == 0x21:
            self._col = (args[0] & 0x7F, args[1] & 0x7F)
            self._ptr = (self._col[0], self._ptr[1])
        elif op == 0x22:
            self._page = (args[0] & 7, args[1] & 7)
            self._ptr = (self._col[0], self._page[0])
            self.frames += 1
        elif op in (0xAE, 0xAF):
            self.on = op == 0xAF

    def _write(self, b: int) -> None:
        col, page = self._ptr
        self.ram[page * 128 + col] = b
        self.data_bytes += 1
        col += 1
        if col > self._col[1]:
            col = self._col[0]
            if page < self._page[1]:
                page += 1
            else:  # the window is full: a whole picture is up
                page = self._page[0]
                self.history.append((time.monotonic(), bytes(self.ram)))
        self._ptr = (col, page)

    def pixels(self, ram: bytes | None = None) -> list[list[int]]:
        """The panel (or a `history` picture) as rows of 0/1 (`height` x `width`)."""
        if ram is None:
            with self._lock:
                ram = bytes(self.ram)
        return [[(ram[(y // 8) * 128 + x] >> (y % 8)) & 1 for x in range(self.width)]
                for y in range(self.height)]

    def text(self) -> list[str]:
        return read_text(self.pixels())

    def save_png(self, path: Path, scale: int = 4) -> Path:
        """The panel as a PNG (white on black, `scale` x), as a trace artifact."""
        from PIL import Image

        rows = self.pixels()
        img = Image.new("L", (self.width, self.height))
        img.putdata([255 if v else 0 for row in rows for v in row])
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        img.resize((self.width * scale, self.height * scale), Image.NEAREST).save(path)
        return path


@functools.cache
def glyphs() -> dict[bytes, str]:
    """MicroPython's 8x8 framebuf font (printable ASCII), rows MONO_HLSB: 8 bytes -> char,
    drawn by the real `framebuf` (the firmware's own font)."""
    code = ("import framebuf\nb=bytearray(8)\nf=framebuf.FrameBuffer(b,8,8,framebuf.MONO_HLSB)\n"
            "for c in range(32,127):\n f.fill(0)\n f.text(chr(c),0,0,1)\n print(bytes(b).hex())\n")
    out = subprocess.run([micropython_binary(), "-c", code], capture_output=True, text=True,
                         check=True, timeout=30).stdout.split()
    table: dict[bytes, str] = {}
    for i, h in enumerate(out):
        table.setdefault(bytes.fromhex(h), chr(32 + i))
    return table


def _cell(rows: list[list[int]], x: int, y: int, scale: int) -> bytes:
    out = bytearray(8)
    for r in range(8):
        v = 0
        for c in range(8):
            yy, xx = y + r * scale, x + c * scale
            if yy < len(rows) and xx < len(rows[0]) and rows[yy][xx]:
                v |= 0x80 >> c
        out[r] = v
    return bytes(out)


def read_line(rows: list[list[int]], y: int, scale: int = 1) -> str:
    """The text of a line drawn at `y` in the 8x8 font at `scale`, wherever it starts
    horizontally ('?' for a cell that is no glyph)."""
    table = glyphs()
    width = len(rows[0])
    best = ""
    for x0 in range(8 * scale):  # the line may be centred: try each offset, keep the best
        chars = []
        for x in range(x0, width - 8 * scale + 1, 8 * scale):
            chars.append(table.get(_cell(rows, x, y, scale), "?"))
        text = "".join(chars).strip()
        if text.count("?") < best.count("?") or not best or (
                text.count("?") == best.count("?") and len(text) > len(best)):
            best = text
    return best


def read_text(rows: list[list[int]]) -> list[str]:
    """The rack display's three lines: label (1x, y 0), count (2x, y 8), status (1x, y 24)."""
    return [read_line(rows, 0), read_line(rows, 8, 2), read_line(rows, 24)]


class RackDisplay(DeviceDriver):
    kind = "rack-display"
    ACTIONS = ("screen_text", "wait_screen", "screen_png")

    def _panel(self) -> SSD1306Emulator:
        chip = self.rig.sim(self.dev).spi.get("display")  # type: ignore[attr-defined]
        if not isinstance(chip, SSD1306Emulator):
            raise TypeError(f"{self.dev}: no emulated display (only the virtual rig reads it)")
        return chip

    def screen_text(self) -> list[str]:
        """[label, count, status] as the panel shows them now ('' for an empty line)."""
        return self._panel().text()

    def wait_screen(self, count: str, status: str = "", timeout: float = 10.0) -> list[str]:
        """Wait until the panel shows `count` with status line `status` ("" live,
        "LAST KNOWN" stale)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.screen_text()
            if lines[1] == count and lines[2] == status:
                self.rig.trace.note(self.dev, f"screen {lines}")
                return lines
            if time.monotonic() >= deadline:
                raise AssertionError(f"{self.dev}: the screen never showed {count!r} / {status!r} "
                                     f"in {timeout}s; it shows {lines}")
            time.sleep(0.02)

    def screen_png(self, path: Path) -> Path:
        return self._panel().save_png(path)

    def attach_sim(self, store: VirtualStore) -> None:
        store.add(self.kind, self.dev, **self.wiring.app)

    @classmethod
    def add_to_store(cls, store: VirtualStore, dev: str, heap: str | None = None,
                     **app: Any) -> RackHandle:
        sim = store.rig.device(dev)
        panel = SSD1306Emulator(sim, app.get("dc", "dc"), app.get("width", 128), app.get("height", 32))
        sim.attach_spi(app.get("spi", "display"), panel)
        fw = FirmwareProcess(store._config(dev, cls.kind, app), store.workdir, heap or store.heap)
        store.devices[dev] = fw
        return RackHandle(fw, sim, panel)


class RackHandle:
    """A rack display on the virtual store: its firmware and its panel."""

    def __init__(self, fw: FirmwareProcess, sim: SimDevice, panel: SSD1306Emulator):
        self.fw, self.sim, self.panel = fw, sim, panel

    @property
    def dev(self) -> str:
        return self.fw.dev

    def text(self) -> list[str]:
        return self.panel.text()
