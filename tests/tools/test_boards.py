"""Board files (boards/*.json) against the hardware they name: tools/boards.py (docs/boards.md).

Every rule is shown failing on a broken copy of a good board file, and the firmware's board HAL
is run in the real MicroPython with a board file whose LED is the Pico W's Pin("LED")."""
import copy
import json
import subprocess

import pytest

from hil.sim.firmware import FIRMWARE, ROOT, micropython_binary
from tools import boards
from tools import deploy as deploy_tool

ESP32 = json.loads((ROOT / "boards" / "esp32-devkitc.json").read_text())
PICO_W = json.loads((ROOT / "boards" / "rp2-pico-w.json").read_text())


def test_every_board_file_passes_and_has_a_network():
    files = boards.board_files()
    names = {f.name for f in files}
    assert {"esp32-devkitc.json", "rp2-pico-w.json"} <= names
    assert "rp2-pico.json" not in names  # a Pico without Wi-Fi cannot reach the broker
    for f in files:
        rep = boards.check_file(f)
        assert rep.errors == [], rep.errors
        hw = boards.HARDWARE[json.loads(f.read_text())["hardware"]]
        assert hw.network == "wifi"
    assert PICO_W["pins"]["led"] == "LED"  # on the CYW43 chip, not GPIO 25
    assert json.loads((ROOT / "boards" / "rp2-tube-line.json").read_text())["pins"]["led"] == "LED"


def _with(board, path, value):
    b = copy.deepcopy(board)
    *keys, last = path
    d = b
    for k in keys:
        d = d[k]
    if value is _DEL:
        del d[last]
    else:
        d[last] = value
    return b


_DEL = object()

# (base board, path in the file, new value, key the error names, words of the error)
BROKEN = [
    ("esp32", ("hardware",), "esp32-wroom-99", "hardware", "is not a board we know"),
    ("pico-w", ("hardware",), "rpi-pico", "hardware", "has no network"),
    ("pico-w", ("board",), "rp2-pico", "board", "has no network"),
    ("esp32", ("pins", "led"), 20, "pins.led", "GPIO 20 does not exist"),
    ("esp32", ("pins", "led"), 40, "pins.led", "GPIO 40 does not exist"),
    ("pico-w", ("pins", "button"), 30, "pins.button", "GPIO 30 does not exist"),
    ("esp32", ("pins", "button"), 6, "pins.button", "SPI flash"),
    ("esp32", ("spi", "rfid", "miso"), 11, "spi.rfid.miso", "SPI flash"),
    ("pico-w", ("pins", "led"), 25, "pins.led", "CYW43"),
    ("pico-w", ("pins", "button"), 23, "pins.button", "CYW43"),
    ("pico-w", ("spi", "rfid", "cs"), 29, "spi.rfid.cs", "CYW43"),
    ("esp32", ("pins", "led"), 34, "pins.led", "input-only"),
    ("esp32", ("spi", "rfid", "sck"), 35, "spi.rfid.sck", "input-only"),
    ("esp32", ("uart", "keypad", "tx"), 39, "uart.keypad.tx", "input-only"),
    ("esp32", ("pins", "door"), 36, "pins.door", "pulled-up input"),
    ("esp32", ("pins", "tm_clk"), 34, "pins.tm_clk", "input-only"),  # the TM1637's CLK is driven
    ("esp32", ("pins", "tm_dio"), 39, "pins.tm_dio", "input-only"),  # its DIO too (open drain)
    ("esp32", ("spi", "rfid", "id"), 0, "spi.rfid.id", "SPI 0 does not exist on the esp32 port"),
    ("esp32", ("uart", "keypad", "id"), 3, "uart.keypad.id", "UART 3 does not exist"),
    ("pico-w", ("spi", "rfid", "id"), 2, "spi.rfid.id", "SPI 2 does not exist on the rp2 port"),
    ("pico-w", ("uart", "keypad", "id"), 2, "uart.keypad.id", "UART 2 does not exist"),
    ("pico-w", ("spi", "rfid", "sck"), 19, "spi.rfid.sck", "cannot be SCK of SPI 0"),
    ("pico-w", ("spi", "rfid", "miso"), 12, "spi.rfid.miso", "cannot be MISO of SPI 0"),
    ("pico-w", ("spi", "rfid", "id"), 1, "spi.rfid.mosi", "cannot be MOSI of SPI 1"),
    ("pico-w", ("uart", "keypad", "tx"), 4, "uart.keypad.tx", "cannot be TX of UART 0"),
    ("pico-w", ("uart", "keypad", "id"), 1, "uart.keypad.rx", "cannot be RX of UART 1"),
    ("esp32", ("pins", "led"), "LED", "pins.led", "GPIO numbers here, not names"),
    ("pico-w", ("pins", "led"), "LED2", "pins.led", "not a pin of Raspberry Pi Pico W"),
    ("pico-w", ("spi", "rfid", "cs"), "LED", "spi.rfid.cs", "wireless chip"),
    ("esp32", ("pins", "button"), 18, "pins.button", "already spi.rfid.sck"),
    ("esp32", ("uart", "keypad", "rx"), 19, "uart.keypad.rx", "already used by spi.rfid.miso"),
    ("esp32", ("spi", "rfid", "mosi"), _DEL, "spi.rfid.mosi", "missing"),
    ("esp32", ("pins",), _DEL, "pins", "missing"),
    ("esp32", ("strapping_ok",), [4], "strapping_ok", "must list strapping GPIOs"),
    ("esp32", ("pins", "led"), True, "pins.led", "is not a pin"),
]


@pytest.mark.parametrize("base,path,value,key,words", BROKEN,
                         ids=[f"{b}:{'.'.join(p)}={v!r}" for b, p, v, _, _ in [(*x[:2], x[2] if x[2] is not _DEL
                                                                                 else "del", *x[3:]) for x in BROKEN]])
def test_each_rule_fails_a_broken_copy(base, path, value, key, words):
    good = ESP32 if base == "esp32" else PICO_W
    assert boards.check_board(good, "good.json").errors == []
    rep = boards.check_board(_with(good, path, value), "boards/broken.json")
    hits = [e for e in rep.errors if e.startswith(f"boards/broken.json: {key}: ")]
    assert hits and any(words in e for e in hits), rep.errors


def test_errors_say_what_to_do():
    rep = boards.check_board(_with(ESP32, ("pins", "led"), 7), "b.json")
    assert rep.errors == [("b.json: pins.led: GPIO 7 is used by the module's SPI flash (GPIO 6-11): pick another "
                           "GPIO (0-5, 12-19, 21-23, 25-27, 32-39)")]
    rep = boards.check_board(_with(PICO_W, ("spi", "rfid", "sck"), 10), "b.json")
    assert "use one of GPIO 2, 6, 18, 22" in rep.errors[0]


def test_strapping_and_console_pins_warn_unless_acknowledged():
    assert boards.check_board(ESP32).warnings == []  # 0, 2 and 5 are acknowledged in the file
    rep = boards.check_board(_with(ESP32, ("strapping_ok",), []), "b.json")
    assert rep.errors == [] and len(rep.warnings) == 4  # led, status_led (2), button (0), cs (5)
    assert all("strapping pin" in w for w in rep.warnings)
    rep = boards.check_board(_with(_with(ESP32, ("uart", "keypad", "id"), 0), ("uart", "keypad", "tx"), 1), "b.json")
    assert rep.errors == []
    assert any("uart.keypad.id: UART 0 is the REPL console" in w for w in rep.warnings)
    assert any("uart.keypad.tx: GPIO 1 is UART0" in w for w in rep.warnings)


def test_cli_checks_files_and_fails_on_a_broken_one(tmp_path, capsys):
    assert boards.main(["check"]) == 0
    assert "0 errors" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_with(PICO_W, ("pins", "led"), 25)))
    assert boards.main(["check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"error: {bad}: pins.led: GPIO 25 is used by the CYW43 wireless chip" in out
    assert boards.main(["check", str(ROOT / "boards" / "rp2-pico.json")]) == 1
    assert "has no network" in capsys.readouterr().out
    big = tmp_path / "big.json"
    big.write_text(" " * (boards.MAX_BYTES + 1))
    notjson = tmp_path / "nj.json"
    notjson.write_text("{pins")
    assert boards.main(["check", str(big), str(notjson)]) == 1
    out = capsys.readouterr().out
    assert "a board file is at most" in out and "not valid JSON" in out


def _pad_config(tmp_path, board):
    cfg = tmp_path / "pad.json"
    cfg.write_text(json.dumps({"device_id": "pad-1", "kind": "sample-pad", "board": board,
                               "mqtt": {"host": "10.0.0.2"}}))
    return cfg


def test_deploy_refuses_a_bad_board_file_and_the_plain_pico(tmp_path, capsys):
    bad = tmp_path / "esp32-devkitc.json"
    bad.write_text(json.dumps(_with(ESP32, ("spi", "rfid", "miso"), 8)))
    argv = ["--port", "/dev/null-board", "--dry-run", "--config"]
    assert deploy_tool.main(argv + [str(_pad_config(tmp_path, "esp32-devkitc")), "--board", str(bad)]) == 2
    assert "spi.rfid.miso: GPIO 8 is used by the module's SPI flash" in capsys.readouterr().err
    assert deploy_tool.main(argv + [str(_pad_config(tmp_path, "rp2-pico")),
                                    "--board", str(ROOT / "boards" / "rp2-pico-w.json")]) == 2
    assert "a Raspberry Pi Pico has no network" in capsys.readouterr().err
    assert deploy_tool.main(argv + [str(_pad_config(tmp_path, "rp2-pico-w")),
                                    "--board", str(ROOT / "boards" / "rp2-pico-w.json")]) == 0


HAL_SCRIPT = """
import sys
calls = []
class Pin:
    OUT = 1; IN = 0; PULL_UP = 2; PULL_DOWN = 3
    def __init__(self, id, mode=-1, pull=-1, value=None):
        calls.append([id, mode, pull, value])
    def value(self, v=None):
        pass
class machine:
    Pin = Pin
    def reset_cause():
        return 0
sys.modules["machine"] = machine  # the unix port has no machine.Pin: stand in for the board's
from edge.hal_machine import MachineHal
hal = MachineHal({"board_file": sys.argv[1]})
hal.pin_out("led", 0)
hal.pin_in("button", "up")
try:
    hal.pin_out("nope")
except ValueError as e:
    calls.append(str(e))
import json
print(json.dumps(calls))
"""


def test_board_hal_passes_the_pico_w_led_name_to_machine_pin(tmp_path):
    script = tmp_path / "hal.py"
    script.write_text(HAL_SCRIPT)
    r = subprocess.run([micropython_binary(), str(script), str(ROOT / "boards" / "rp2-pico-w.json")],
                       env={"MICROPYPATH": str(FIRMWARE)}, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip()) == [["LED", 1, -1, 0], [14, 0, 2, None], "board has no pin named nope"]
