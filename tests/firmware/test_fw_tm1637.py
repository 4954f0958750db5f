"""The rack display on a TM1637 segment display, at the pin level: the real app
(firmware/edge/apps/rack_display.py, `display: "tm1637"`), the real board HAL
(firmware/edge/hal_machine.py) reading boards/esp32-rack-display.json, and the real driver
(firmware/edge/drivers/tm1637.py) run in the real MicroPython unix port; its machine.Pin is a
stand-in whose every write and read crosses to the CPython TM1637 emulator (hil/sim/tm1637.py),
which decodes the CLK/DIO wire into the digits the module lights."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from hil.sim.firmware import FIRMWARE, ROOT, micropython_binary, micropython_env
from hil.sim.tm1637 import TM1637Emulator

BOARD = ROOT / "boards" / "esp32-rack-display.json"

SCRIPT = """
import sys
out = sys.stdout


class Pin:
    IN = 1; OUT = 3; OPEN_DRAIN = 7; PULL_UP = 2; PULL_DOWN = 1  # the esp32 port's values

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        out.write("P %s %d %d %s\\n" % (id, mode, pull, value))
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            out.write("R %s\\n" % self.id)
            return int(sys.stdin.readline())
        out.write("W %s %d\\n" % (self.id, 1 if v else 0))


class machine:
    Pin = Pin


sys.modules["machine"] = machine  # the unix port has no machine.Pin: stand in for the board's
from edge.hal_machine import MachineHal
from edge.apps.rack_display import RackDisplay


class Rt:
    cfg = {"data_dir": sys.argv[2]}


app = RackDisplay(Rt(), MachineHal({"board_file": sys.argv[1]}), {"display": "tm1637"})
for likes, live in [STEPS]:
    app.shown["likes"] = likes
    try:
        app.render(live)
        out.write("F ok\\n")
    except OSError as e:
        out.write("F " + str(e) + "\\n")
out.write("DONE\\n")
"""


def run_display(tmp_path, steps, *, emu: TM1637Emulator, firmware=FIRMWARE):
    """Run the app's render for each (likes, live) step; after each frame, the digits the
    emulator shows (its text()) or the driver's error. Returns (frames, the pins' setup)."""
    pins = json.loads(BOARD.read_text())["pins"]
    clk, dio = str(pins["tm_clk"]), str(pins["tm_dio"])
    script = tmp_path / "seg.py"
    script.write_text(SCRIPT.replace("[STEPS]", repr(steps)))
    (tmp_path / "data").mkdir(exist_ok=True)
    proc = subprocess.Popen([micropython_binary(), "-X", "heapsize=256k", str(script), str(BOARD),
                             str(tmp_path / "data")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1, env=micropython_env(path=firmware))
    assert proc.stdin and proc.stdout
    frames, setup = [], []
    try:
        for line in proc.stdout:
            op, *rest = line.split()
            if op == "W":
                {clk: emu.clk, dio: emu.dio}[rest[0]](int(rest[1]))
            elif op == "R":
                assert rest[0] == dio, f"the driver read pin {rest[0]}, not DIO"
                proc.stdin.write(f"{emu.read_dio()}\n")
                proc.stdin.flush()
            elif op == "P":
                setup.append(rest)
            elif op == "F":
                frames.append(emu.text() if rest == ["ok"] else " ".join(rest))
            elif op == "DONE":
                break
            else:
                raise AssertionError("MicroPython said: " + line + proc.stdout.read())
    finally:
        proc.stdin.close()
        err = proc.stderr.read() if proc.stderr else ""
        proc.wait(timeout=30)
    assert proc.returncode == 0, err
    return frames, setup


def test_shows_the_count_and_the_last_known_mark_on_the_wire(tmp_path):
    emu = TM1637Emulator()
    frames, setup = run_display(tmp_path, [[None, False], [42, True], [42, False], [9999, True],
                                           [12345, True], [999999, False], [2500000, True]], emu=emu)
    # CLK a push-pull output at 1, DIO open drain with the pull-up, released (esp32 values)
    assert setup == [["22", "3", "-1", "1"], ["21", "7", "2", "1"]]
    # live: the count; last known: every bit 7 lit (the dots, or the colon of a clock module)
    assert frames == ["-.-.-.-.", "  42", " . .4.2.", "9999", " 12k", "9.9.9.k.", "  2M"]
    assert emu.errors == []


def test_the_frames_are_exact_bytes_with_the_display_on(tmp_path):
    emu = TM1637Emulator()
    assert run_display(tmp_path, [[1234, False]], emu=emu)[0] == ["1.2.3.4."]
    assert emu.digits() == bytes([0x06 | 0x80, 0x5B | 0x80, 0x4F | 0x80, 0x66 | 0x80])
    assert emu.on and emu.brightness == 4 and emu.errors == []
    assert emu.transactions == [b"\x40", b"\xc0" + emu.digits(), b"\x8c"]


def test_a_module_that_never_acks_is_an_error_that_says_what_to_check(tmp_path):
    frames, _ = run_display(tmp_path, [[7, True]], emu=TM1637Emulator(ack=False))
    assert frames == ["TM1637: no ack; check its CLK/DIO wiring, its power and the board file's pins"]


@pytest.mark.parametrize("mutation", [
    # LSB first on the wire: a driver sending MSB first is wrong
    ("dio.value((b >> i) & 1)", "dio.value((b >> (7 - i)) & 1)"),
    # the 9th clock (the ack's) is required: a driver that skips it shifts every later bit
    ("        dio.value(1)  # release DIO", "        return\n        dio.value(1)  # release DIO"),
], ids=["msb-first", "no-ack-clock"])
def test_a_driver_with_a_wrong_wire_shows_wrong_digits(tmp_path, mutation):
    fw = tmp_path / "firmware"
    shutil.copytree(FIRMWARE, fw, ignore=shutil.ignore_patterns("__pycache__", "*.mpy"))
    drv = fw / "edge" / "drivers" / "tm1637.py"
    src = drv.read_text()
    assert mutation[0] in src
    drv.write_text(src.replace(mutation[0], mutation[1]))
    emu = TM1637Emulator()
    frames, _ = run_display(tmp_path, [[1234, True]], emu=emu, firmware=fw)
    assert frames != ["1234"] and emu.errors
