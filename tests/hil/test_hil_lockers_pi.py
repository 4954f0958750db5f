"""The locker bench's wiring on the Pi rig without a Pi: gpiozero's MockFactory for the pins, a
pty for the Pi serial port wired to the board's keypad/display UART."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from hil.harness import wait_for
from hil.pi.rig import PiRig
from hil.pi.wiring import WiringError, parse_wiring
from hil.rig import RigError

BENCH = Path(__file__).resolve().parents[2] / "boards" / "rigs" / "bench-lockers.json"
DOOR_1, LOCK_1, DOOR_2 = 17, 16, 27  # bench-lockers.json


@pytest.fixture
def uart():
    """(the board's end of the wire as a fd, the Pi's serial port path)."""
    board, pi = os.openpty()
    os.set_blocking(board, False)
    yield board, os.ttyname(pi)
    os.close(board)
    os.close(pi)


def bench(port: str | None):
    data = json.loads(BENCH.read_text())
    dev = data["devices"]["lk-1"]
    del dev["serial"]
    if port is None:
        del dev["uarts"]
    else:
        dev["uarts"]["keypad"]["port"] = port
    return parse_wiring(data, BENCH)


def _read(fd: int, n: int) -> bytes:
    got = b""
    deadline = time.monotonic() + 5
    while len(got) < n and time.monotonic() < deadline:
        try:
            got += os.read(fd, 64)
        except BlockingIOError:
            time.sleep(0.01)
    return got


def test_keypad_and_qr_go_out_on_the_wired_uart_and_the_display_comes_back(pins, uart):
    board, port = uart
    rig = PiRig(bench(port))
    try:
        lk = rig.device("lk-1")
        lk.type_code("482913")
        assert _read(board, 7) == b"482913#"
        lk.scan("482913")
        assert _read(board, 7) == b"482913\r"
        os.write(board, b"Enter your pickup code, then #\nCode OK - door 2 is opening\n")
        assert lk.wait_display(r"^Code OK - door 2 is opening$", timeout=5) == "Code OK - door 2 is opening"
        assert lk.display() == ["Enter your pickup code, then #", "Code OK - door 2 is opening"]
        with pytest.raises(AssertionError, match="never showed"):
            lk.wait_display(r"^Thank you", timeout=0.3)
    finally:
        rig.close()


def test_a_door_springs_open_while_its_lock_is_powered_unless_jammed(pins):
    rig = PiRig(bench(None))
    try:
        lk = rig.device("lk-1")
        assert pins.pin(DOOR_1).state is False  # reset: doors shut
        pins.pin(LOCK_1).drive_low()  # the board powers lock 1 (the opto pulls the Pi's pin low)
        assert wait_for(lambda: pins.pin(DOOR_1).state is True, 5, what="door 1 sprang open")
        assert lk.output("lock_1") == 1
        pins.pin(LOCK_1).drive_high()
        lk.close_door("door_1")
        lk.jam("door_1")
        pins.pin(LOCK_1).drive_low()
        time.sleep(0.2)
        assert pins.pin(DOOR_1).state is False, "a jammed door stays shut"
        assert pins.pin(DOOR_2).state is False
        with pytest.raises(RigError, match=r"UART 'keypad' is not wired"):
            lk.type_code("1")
        assert rig.wiring.broker_control == ("sudo systemctl stop mosquitto", "sudo systemctl start mosquitto")
        rig.wiring.broker_control = None  # (never run the bench's real commands here)
        with pytest.raises(RigError, match="cannot stop its broker"):
            rig.broker_down()
    finally:
        rig.close()


def test_the_wiring_names_a_spring_that_is_not_wired():
    data = json.loads(BENCH.read_text())
    data["devices"]["lk-1"]["springs"]["lock_9"] = "door_9"
    with pytest.raises(WiringError, match=r"springs\.lock_9: a Pi rig needs 'lock_9' in outputs"):
        parse_wiring(data, BENCH).require_gpio()
    data["devices"]["lk-1"]["uarts"]["keypad"]["baud"] = 0
    with pytest.raises(WiringError, match=r"uarts\.keypad\.baud: must be a positive integer"):
        parse_wiring(data, BENCH)
