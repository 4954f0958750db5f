"""Board files (boards/*.json) checked against the hardware they name.

    python -m tools.boards check                  # every boards/*.json; exit 1 on any error
    python -m tools.boards check boards/x.json    # only these files

A board file says which hardware it is (`"hardware"`, one of HARDWARE below) and maps the
firmware's pin names (`pins`), SPI buses (`spi`) and UARTs (`uart`) to that hardware. The checks:

* the hardware is known and has a network (a plain Raspberry Pi Pico has none: refused);
* every pin exists on that board and is not reserved (ESP32 flash pins 6-11; the Pico W's
  GPIO 23, 24, 25 and 29 belong to the CYW43 wireless chip); a named pin (the Pico W's
  `"LED"`) only where the port has it, and only in `pins`;
* ESP32 GPIO 34-39 are inputs without pull resistors: not for outputs, SPI SCK/MOSI/CS or
  UART TX, nor for the inputs the apps pull up;
* SPI and UART ids exist on the port; on the RP2040 each SPI/UART signal sits on the GPIOs
  its bus can be muxed to (datasheet 1.4.3, the GPIO function table); ESP32 routes any
  signal through its GPIO matrix;
* a pin used by a bus is used by nothing else.

Warnings (printed, not failures): ESP32 strapping pins (0, 2, 5, 12, 15: the level at reset
picks the boot mode and flash voltage; a board file lists the ones whose wiring was checked in
`"strapping_ok"`, which silences them) and UART0 / GPIO 1 and 3 (the REPL console).
Each finding names the file, the key and what to do. deploy (tools/deploy.py) runs the same
checks before it touches a board.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOARDS = ROOT / "boards"
MAX_BYTES = 64 * 1024  # a board file is a few hundred bytes; refuse anything absurd


@dataclass(frozen=True)
class Hardware:
    port: str                       # MicroPython port: "esp32" | "rp2"
    title: str
    gpios: frozenset[int]           # GPIOs that exist on the chip
    reserved: dict[int, str]        # GPIO -> what uses it (error)
    named: frozenset[str] = frozenset()   # machine.Pin("NAME") pins the port has
    input_only: frozenset[int] = frozenset()
    strapping: frozenset[int] = frozenset()
    network: str = ""


_ESP32_GPIOS = frozenset([*range(20), 21, 22, 23, 25, 26, 27, *range(32, 40)])
_ESP32_FLASH = {n: "the module's SPI flash (GPIO 6-11)" for n in range(6, 12)}
_RP2040_GPIOS = frozenset(range(30))
_PICO_W_WIRELESS = {23: "the CYW43 wireless chip (WL_ON)", 24: "the CYW43 wireless chip (WL_D)",
                    25: "the CYW43 wireless chip (WL_CS)", 29: "the CYW43 wireless chip (WL_CLK)"}

HARDWARE: dict[str, Hardware] = {
    # ESP32-DevKitC with an ESP32-WROOM-32 module (Wi-Fi)
    "esp32-devkitc": Hardware(
        "esp32", "ESP32-DevKitC (ESP32-WROOM-32)", _ESP32_GPIOS, dict(_ESP32_FLASH),
        input_only=frozenset(range(34, 40)), strapping=frozenset({0, 2, 5, 12, 15}), network="wifi"),
    # the same kit with a WROVER module: its PSRAM takes GPIO 16 and 17 as well
    "esp32-devkitc-wrover": Hardware(
        "esp32", "ESP32-DevKitC (ESP32-WROVER)", _ESP32_GPIOS,
        {**_ESP32_FLASH, 16: "the WROVER module's PSRAM", 17: "the WROVER module's PSRAM"},
        input_only=frozenset(range(34, 40)), strapping=frozenset({0, 2, 5, 12, 15}), network="wifi"),
    # Raspberry Pi Pico W: RP2040 + CYW43439 (Wi-Fi); its LED is on the wireless chip
    "rpi-pico-w": Hardware(
        "rp2", "Raspberry Pi Pico W", _RP2040_GPIOS, dict(_PICO_W_WIRELESS),
        named=frozenset({"LED"}), network="wifi"),
}

# hardware (or board names) we no longer accept, and what to use instead
RETIRED = {
    "rpi-pico": "a Raspberry Pi Pico has no network and cannot reach the broker: use a Pico W "
                "(boards/rp2-pico-w.json, \"hardware\": \"rpi-pico-w\"; its LED is \"LED\", not 25)",
    "rp2-pico": "a Raspberry Pi Pico has no network and cannot reach the broker: use boards/rp2-pico-w.json "
                "(board \"rp2-pico-w\"; its LED is \"LED\", not 25)",
}

# Bus ids each port's machine.SPI / machine.UART accept. ESP32: SPI(1) is HSPI, SPI(2) is
# VSPI; the flash controllers (hardware SPI0/SPI1) are not exposed, so SPI(0) does not exist.
SPI_IDS = {"esp32": (1, 2), "rp2": (0, 1)}
UART_IDS = {"esp32": (0, 1, 2), "rp2": (0, 1)}

# RP2040 GPIO function table (datasheet 1.4.3): which GPIO carries which signal of which bus.
RP2_SPI = {
    0: {"miso": {0, 4, 16, 20}, "sck": {2, 6, 18, 22}, "mosi": {3, 7, 19, 23}},
    1: {"miso": {8, 12, 24, 28}, "sck": {10, 14, 26}, "mosi": {11, 15, 27}},
}
RP2_UART = {
    0: {"tx": {0, 12, 16, 28}, "rx": {1, 13, 17, 29}},
    1: {"tx": {4, 8, 20, 24}, "rx": {5, 9, 21, 25}},
}

# pins the apps drive (hal.pin_out) or pull up (hal.pin_in(name, "up")): see firmware/edge/apps
_OUTPUT = re.compile(r"^(led|status_led|call_led|air|air_dir|gate|tm_clk|tm_dio|lock_\d+|.+\.run|.+\.dir)$")
_PULLED_UP = re.compile(r"^(door|door_\d+|estop|tm_dio)$")


@dataclass
class Report:
    path: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def error(self, key: str, msg: str) -> None:
        self.errors.append(f"{self.path}: {key}: {msg}")

    def warn(self, key: str, msg: str) -> None:
        self.warnings.append(f"{self.path}: {key}: {msg}")


def _known() -> str:
    return ", ".join(f'"{k}"' for k in HARDWARE)


def check_board(board: object, path: str = "<board>") -> Report:
    """Every finding for one parsed board file."""
    rep = Report(path)
    if not isinstance(board, dict):
        rep.error("(file)", "a board file is a JSON object with \"board\", \"hardware\" and \"pins\"")
        return rep
    name = board.get("board")
    if not isinstance(name, str) or not name:
        rep.error("board", "missing: give the board's name (the \"board\" that device configs name)")
    elif name in RETIRED:
        rep.error("board", RETIRED[name])
    hw_name = board.get("hardware")
    if hw_name in RETIRED:
        rep.error("hardware", RETIRED[str(hw_name)])
        return rep
    hw = HARDWARE.get(hw_name) if isinstance(hw_name, str) else None
    if hw_name is None:
        rep.error("hardware", f"missing: say which board this is, one of {_known()}")
        return rep
    if hw is None:
        rep.error("hardware", f"{hw_name!r} is not a board we know: use one of {_known()} "
                              "(or add it to tools/boards.py HARDWARE with its pin facts)")
        return rep
    if not hw.network:
        rep.error("hardware", f"{hw.title} has no network and cannot reach the broker")

    used: dict[object, str] = {}  # pin -> first key that uses it (buses only)
    ack = board.get("strapping_ok", [])
    if not isinstance(ack, list) or not all(isinstance(g, int) and g in hw.strapping for g in ack):
        rep.error("strapping_ok", "must list strapping GPIOs (" + _ranges(hw.strapping) + ") whose wiring "
                                  "was checked, e.g. [0, 2]")
        ack = []
    strapping_ok = set(ack)

    def pin(key: str, value: object, *, output: bool = False, pulled: bool = False,
            named_ok: bool = False) -> int | None:
        if isinstance(value, str):
            if value in hw.named and named_ok:
                return None
            if value in hw.named:
                rep.error(key, f"{value!r} is on {hw.title}'s wireless chip: it can only be a plain pin "
                               "in \"pins\", not a bus signal; pick a GPIO")
            elif hw.named:
                rep.error(key, f"{value!r} is not a pin of {hw.title}: use a GPIO number or one of "
                               + ", ".join(f'"{n}"' for n in sorted(hw.named)))
            else:
                rep.error(key, f"{value!r}: the {hw.port} port takes GPIO numbers here, not names")
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            rep.error(key, f"{value!r} is not a pin: give a GPIO number")
            return None
        if value not in hw.gpios:
            rep.error(key, f"GPIO {value} does not exist on {hw.title}: usable GPIOs are "
                           f"{_ranges(hw.gpios - set(hw.reserved))}")
            return None
        if value in hw.reserved:
            rep.error(key, f"GPIO {value} is used by {hw.reserved[value]}: pick another GPIO "
                           f"({_ranges(hw.gpios - set(hw.reserved))})")
            return None
        if value in hw.input_only and (output or pulled):
            what = "an output" if output else "a pulled-up input"
            rep.error(key, f"GPIO {value} is input-only without pull resistors on {hw.title}; "
                           f"it cannot be {what}: pick a GPIO outside {_ranges(hw.input_only)}")
        if value in hw.strapping and value not in strapping_ok:
            rep.warn(key, f"GPIO {value} is a strapping pin (its level at reset selects the boot mode): "
                          "make sure the wiring does not hold it at the wrong level during reset")
        if hw.port == "esp32" and value in (1, 3):
            rep.warn(key, f"GPIO {value} is UART0, the REPL console: the console and deploy need it")
        return value

    def claim(key: str, gpio: int | None) -> None:
        if gpio is None:
            return
        if gpio in used:
            rep.error(key, f"GPIO {gpio} is already used by {used[gpio]}: a bus pin can have one use only")
        else:
            used[gpio] = key

    pins = board.get("pins")
    if not isinstance(pins, dict):
        rep.error("pins", "missing: a board file needs a \"pins\" object (name -> GPIO)")
        pins = {}
    spis = board.get("spi", {})
    uarts = board.get("uart", {})
    for key, group in (("spi", spis), ("uart", uarts)):
        if not isinstance(group, dict):
            rep.error(key, "must be an object of named buses, e.g. {\"rfid\": {\"id\": ...}}")
    spis = spis if isinstance(spis, dict) else {}
    uarts = uarts if isinstance(uarts, dict) else {}

    for bus_name, d in spis.items():
        k = f"spi.{bus_name}"
        if not isinstance(d, dict):
            rep.error(k, "must be an object with id, sck, mosi, miso, cs")
            continue
        bid = d.get("id")
        if bid not in SPI_IDS[hw.port]:
            rep.error(f"{k}.id", f"SPI {bid!r} does not exist on the {hw.port} port: use one of "
                                 f"{', '.join(map(str, SPI_IDS[hw.port]))}")
        for sig in ("sck", "mosi", "miso", "cs"):
            if sig not in d:
                rep.error(f"{k}.{sig}", "missing: give the GPIO")
                continue
            g = pin(f"{k}.{sig}", d[sig], output=sig != "miso")
            claim(f"{k}.{sig}", g)
            if g is not None and hw.port == "rp2" and sig != "cs" and bid in RP2_SPI:
                ok = RP2_SPI[bid][sig]
                if g not in ok:
                    rep.error(f"{k}.{sig}", f"GPIO {g} cannot be {sig.upper()} of SPI {bid} on the RP2040: "
                                            f"use one of GPIO {', '.join(map(str, sorted(ok - set(hw.reserved))))}")
    for bus_name, d in uarts.items():
        k = f"uart.{bus_name}"
        if not isinstance(d, dict):
            rep.error(k, "must be an object with id, tx, rx")
            continue
        bid = d.get("id")
        if bid not in UART_IDS[hw.port]:
            rep.error(f"{k}.id", f"UART {bid!r} does not exist on the {hw.port} port: use one of "
                                 f"{', '.join(map(str, UART_IDS[hw.port]))}")
        elif hw.port == "esp32" and bid == 0:
            rep.warn(f"{k}.id", "UART 0 is the REPL console: use UART 1 or 2")
        for sig in ("tx", "rx"):
            if sig not in d:
                rep.error(f"{k}.{sig}", "missing: give the GPIO")
                continue
            g = pin(f"{k}.{sig}", d[sig], output=sig == "tx")
            claim(f"{k}.{sig}", g)
            if g is not None and hw.port == "rp2" and bid in RP2_UART:
                ok = RP2_UART[bid][sig]
                if g not in ok:
                    rep.error(f"{k}.{sig}", f"GPIO {g} cannot be {sig.upper()} of UART {bid} on the RP2040: "
                                            f"use one of GPIO {', '.join(map(str, sorted(ok - set(hw.reserved))))}")
    for pin_name, v in pins.items():
        k = f"pins.{pin_name}"
        g = pin(k, v, output=bool(_OUTPUT.match(pin_name)), pulled=bool(_PULLED_UP.match(pin_name)),
                named_ok=True)
        if g is not None and g in used:
            rep.error(k, f"GPIO {g} is already {used[g]}: give this pin its own GPIO")
    return rep


def _ranges(gpios: set[int] | frozenset[int]) -> str:
    out: list[str] = []
    for g in sorted(gpios):
        if out and out[-1].split("-")[-1] == str(g - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{g}"
        else:
            out.append(str(g))
    return ", ".join(out)


def load(path: Path) -> object:
    """The parsed board file; ValueError with what to do when it cannot be read."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        stem = path.stem
        hint = f" ({RETIRED[stem]})" if stem in RETIRED else " (boards/*.json)"
        raise ValueError(f"{path}: board file not found{hint}") from None
    if size > MAX_BYTES:
        raise ValueError(f"{path}: {size} bytes; a board file is at most {MAX_BYTES} bytes: is this the right file?")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def check_file(path: Path) -> Report:
    shown = str(path.relative_to(ROOT)) if path.is_absolute() and path.is_relative_to(ROOT) else str(path)
    try:
        board = load(path)
    except ValueError as e:
        rep = Report(shown)
        rep.errors.append(str(e))
        return rep
    return check_board(board, shown)


def board_files() -> list[Path]:
    """The board files: boards/*.json (rigs/ and tube/ hold other kinds of file)."""
    return sorted(BOARDS.glob("*.json"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.boards", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="check board files (default: every boards/*.json)")
    c.add_argument("files", nargs="*", type=Path)
    args = ap.parse_args(argv)
    files = args.files or board_files()
    n_err = 0
    for f in files:
        rep = check_file(f)
        for w in rep.warnings:
            print(f"warning: {w}")
        for e in rep.errors:
            print(f"error: {e}")
        n_err += len(rep.errors)
    print(f"{len(files)} board files, {n_err} errors")
    return 1 if n_err else 0


if __name__ == "__main__":
    sys.exit(main())
