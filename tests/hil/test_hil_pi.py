"""The Raspberry Pi rig without a Pi: gpiozero's MockFactory for the pins, a fake MicroPython
board on a pty (hil.pi.fakeboard) for the serial side, pytest-mock where a pty cannot go
(DTR/RTS lines)."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from hil.pi.board import BoardError, BootFailure, RemoteError, SerialBoard
from hil.pi.fakeboard import FakeBoard
from hil.pi.rig import PiRig
from hil.pi.wiring import WiringError, load_wiring, parse_wiring
from hil.rig import RigError
from tools import console as console_tool
from tools import deploy as deploy_tool

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "boards" / "rigs" / "bench-1.json"
ESP32 = ROOT / "boards" / "esp32-devkitc.json"
# bench-1.json: button GPIO17 (inverting opto), led GPIO5 (opto, pull-up), tags 22/23/24, EN reset 26
BUTTON, LED, RESET, TAGS = 17, 5, 26, {"S-1001": 22, "S-1002": 23, "S-2001": 24}


@pytest.fixture
def board_fs(tmp_path):
    root = tmp_path / "flash"
    root.mkdir()
    (root / "main.py").write_text("from edge.boot import main\n")
    (root / "config.json").write_text(json.dumps({"device_id": "pad-1"}))
    return root


@pytest.fixture
def fake(board_fs):
    fb = FakeBoard(board_fs, window=32).start()
    yield fb
    fb.stop()


def bench_wiring(port: str | None):
    data = json.loads(BENCH.read_text())
    if port is None:
        del data["devices"]["pad-1"]["serial"]
    else:
        data["devices"]["pad-1"]["serial"]["port"] = port
    return parse_wiring(data, BENCH)


@pytest.fixture
def rig(pins):
    r = PiRig(bench_wiring(None))
    yield r
    r.close()


def levels(pin) -> list[bool]:
    out = []
    for s in pin.states:
        if not out or out[-1] != s.state:
            out.append(bool(s.state))
    return out


# --- pins ---------------------------------------------------------------------------------------

def test_inputs_are_driven_on_the_wired_pins_with_their_polarity(rig, pins):
    button = pins.pin(BUTTON)
    # idle: not pressed = logical 1 at the board (levels.button_pressed = 0); inverting opto → GPIO low
    assert button.state is False or button.state == 0
    pad = rig.device("pad-1")
    pad.press("button", ms=30)
    assert levels(button) == [False, True, False]  # pressed = GPIO high for the press only
    assert [v for _, v in rig.output_history("pad-1", "button")] == [1, 0, 1]
    t = rig.trace.history("pad-1", "button")
    assert 0.025 <= t[2][0] - t[1][0] <= 0.2  # held ~30 ms


def test_placing_a_tag_closes_only_its_relay(rig, pins):
    pad = rig.device("pad-1")
    pad.place_tag("S-1001")
    assert [pins.pin(g).state for g in TAGS.values()] == [True, False, False]
    pad.place_tag("S-2001")  # one card in the field: the other relay opens first
    assert [pins.pin(g).state for g in TAGS.values()] == [False, False, True]
    pad.remove_tag()
    assert [pins.pin(g).state for g in TAGS.values()] == [False, False, False]
    assert levels(pins.pin(TAGS["S-1001"])) == [False, True, False]
    hist = [(s, v) for _, d, s, v in rig.trace.signals if s.startswith("tag.")][3:]
    assert hist == [("tag.S-1001", 1), ("tag.S-1001", 0), ("tag.S-2001", 1), ("tag.S-2001", 0)]
    with pytest.raises(RigError, match="no tag 'S-9999'"):
        pad.place_tag("S-9999")


def test_outputs_are_read_through_the_opto_and_every_edge_is_traced(rig, pins):
    led = pins.pin(LED)
    led.drive_high()  # pull-up, opto off: LED off
    assert rig.output("pad-1", "led") == 0
    threading.Timer(0.05, led.drive_low).start()  # the board turns its LED on
    t0 = rig.trace.now()
    assert rig.wait_output("pad-1", "led", 1, timeout=2)
    assert rig.trace.now() - t0 < 0.5
    led.drive_high()
    led.drive_low()
    led.drive_high()
    values = [v for _, v in rig.output_history("pad-1", "led")]
    assert values[-4:] == [1, 0, 1, 0]
    assert not rig.wait_output("pad-1", "led", 1, timeout=0.1)
    with pytest.raises(AssertionError, match="did not become 1"):
        rig.expect_output("pad-1", "led", 1, timeout=0.05)


def test_names_not_in_the_wiring_file_fail_with_what_is_there(rig):
    with pytest.raises(RigError, match=r"no output 'lock_1'.*has: led"):
        rig.output("pad-1", "lock_1")
    with pytest.raises(RigError, match=r"no input 'door'.*has: button"):
        rig.open_door("pad-1")
    with pytest.raises(LookupError, match="locker-bank"):
        rig.device_of_kind("locker-bank")


def test_reset_world_and_a_new_trace_start_from_known_levels(rig, pins):
    rig.place_tag("pad-1", "S-1002")
    rig.set_input("pad-1", "button", 0)
    rig.begin("next scenario")
    rig.reset_world()
    assert not pins.pin(TAGS["S-1002"]).state and not pins.pin(BUTTON).state
    first = {(d, s): v for _, d, s, v in rig.trace.signals}
    assert first[("pad-1", "tag.S-1002")] == 0 and first[("pad-1", "button")] == 1


def test_wiring_errors_name_the_field():
    base = json.loads(BENCH.read_text())

    def bad(mutate, match):
        data = json.loads(json.dumps(base))
        mutate(data["devices"]["pad-1"])
        with pytest.raises(WiringError, match=match):
            parse_wiring(data, BENCH)

    bad(lambda d: d["outputs"]["led"].update(gpio=99), r"outputs\.led\.gpio: GPIO 99 does not exist")
    bad(lambda d: d["outputs"]["led"].update(gpio=22),
        r"GPIO 22 is used twice: pad-1\.outputs\.led and pad-1\.tags\.S-1001")
    bad(lambda d: d["tags"]["S-2001"].update(uid="04102030405001"), r"tags\.S-2001\.uid: a mifare-1k UID is 4 bytes")
    bad(lambda d: d.update(kind="toaster"), r"pad-1\.kind: must be one of")
    bad(lambda d: d["inputs"]["button"].update(active_hi=True), r"unknown field\(s\) active_hi")
    bad(lambda d: d.update(levels={"door_open": 2}), r"levels\.door_open")
    virtual = load_wiring(ROOT / "boards" / "rigs" / "virtual.json")
    with pytest.raises(WiringError, match=r"tags\.S-1001\.gpio is required on a Pi rig"):
        virtual.require_gpio()


# --- the board over serial ---------------------------------------------------------------------

def test_start_resets_through_the_gpio_and_waits_for_the_ready_line(pins, fake):
    rig = PiRig(bench_wiring(fake.port))
    try:
        fake.watch_reset_pin(pins.pin(RESET))  # the board's EN is on GPIO26's transistor
        rig.start("pad-1", timeout=5)
        assert levels(pins.pin(RESET)) == [False, True, False]
        board = rig.board("pad-1")
        assert [(b.cause, b.expected) for b in board.boots] == [("POWERON_RESET", True)]
        assert rig.console("pad-1")[-1] == "pad-1 online session 2"
        assert rig.unexpected_resets() == []
        fake.reset("TG1WDT_SYS_RESET")  # the firmware's watchdog bites
        board.wait_line("online session 3", 2)
        assert rig.unexpected_resets() == [("pad-1: unexpected reset TG1WDT_SYS_RESET at "
                                           f"{board.boots[-1].t:.3f}s")]
        # a power cut on a bench without a supply relay holds EN low
        rig.power_cut("pad-1")
        assert pins.pin(RESET).state
        rig.power_on("pad-1")
        board.wait_line("online session 4", 2)
        assert board.boots[-1].expected
    finally:
        rig.close()


def test_a_board_that_cannot_boot_is_told_from_one_that_boots(pins, fake, board_fs):
    (board_fs / "config.json").unlink()
    with SerialBoard(fake.port, name="pad-1", reset="machine") as board:
        board.hard_reset()  # machine.reset() through the raw REPL
        with pytest.raises(BootFailure, match="failed to boot: config error"):
            board.wait_ready(timeout=3)
        assert [b.expected for b in board.boots] == [True]


def test_a_boot_loop_is_reported_as_one(pins, fake):
    fake.crash_boots = 2
    with SerialBoard(fake.port, name="pad-1", reset="machine") as board:
        since = len(board.lines)
        board.hard_reset()
        with pytest.raises(BootFailure, match=r"boot-looping: \d resets \(SW_CPU_RESET, TG1WDT_SYS_RESET"):
            board.wait_ready(timeout=3, since=since)


def test_opening_the_port_does_not_reset_and_rts_reset_pulses_en(mocker):
    calls = []

    class FakeSerial:
        def __init__(self):
            self.port = None
            self.in_waiting = 0
            self.__dict__["_dtr"] = self.__dict__["_rts"] = True

        def __setattr__(self, k, v):
            if k in ("dtr", "rts"):
                calls.append((k, v))
            object.__setattr__(self, k, v)

        def open(self):
            calls.append(("open", None))

        def read(self, n):
            time.sleep(0.01)
            return b""

        def write(self, b):
            calls.append(("write", b))

        def flush(self):
            pass

        def close(self):
            calls.append(("close", None))

    mocker.patch("hil.pi.board.serial.Serial", FakeSerial)
    board = SerialBoard("/dev/ttyUSB0", reset="rts", reset_pulse_ms=5).open()
    assert calls[:3] == [("dtr", False), ("rts", False), ("open", None)]  # lines down before open
    calls.clear()
    board.hard_reset()
    assert calls == [("dtr", False), ("rts", True), ("rts", False)]  # EN low, then released; GPIO0 high
    board.close()


def test_raw_repl_exec_errors_and_file_checks(fake, board_fs):
    with SerialBoard(fake.port, name="pad-1") as board, board.raw_repl():
        assert board.exec("print(6*7)").strip() == b"42"
        assert board.eval("[1, 'a']") == [1, "a"]
        with pytest.raises(RemoteError, match="ZeroDivisionError") as e:
            board.exec("x = 1\n1/0")
        assert 'File "<stdin>", line 2' in e.value.text
        data = bytes(range(256)) * 9  # binary, several raw-paste windows
        board.fs_mkdir("/data")
        board.fs_mkdir("/data")  # exists: fine
        board.fs_put(data, "/data/blob.bin")
        assert (board_fs / "data" / "blob.bin").read_bytes() == data
        assert board.fs_verify(data, "/data/blob.bin") == "sha256"
        assert board.fs_get("/data/blob.bin") == data
        (board_fs / "data" / "blob.bin").write_bytes(data[:-1] + b"!")  # flash corrupted
        with pytest.raises(BoardError, match="sha256 mismatch"):
            board.fs_verify(data, "/data/blob.bin")
        assert board.fs_sha256("/nope") is None
        assert board.fs_listdir("/") == ["config.json", "data", "main.py"]
    assert board.use_raw_paste is True
    assert fake.raw_paste_sessions > 0 and fake.flow_grants > 2  # window 32: flow control was used


@pytest.mark.parametrize("raw_paste", [False, "refuse"])
def test_boards_without_raw_paste_get_plain_raw_repl(tmp_path, raw_paste):
    with FakeBoard(tmp_path, raw_paste=raw_paste, has_hashlib=False) as fb:
        with SerialBoard(fb.port) as board, board.raw_repl():
            board.fs_put(b"hello" * 200, "/a.txt")
            assert board.fs_verify(b"hello" * 200, "/a.txt") == "size"  # no hashlib on this port
        assert board.use_raw_paste is False and fb.raw_paste_sessions == 0
        assert (tmp_path / "a.txt").read_bytes() == b"hello" * 200


# --- the desk tools ------------------------------------------------------------------------------

def pad_config(tmp_path, **kw) -> Path:
    cfg = {"device_id": "pad-1", "kind": "sample-pad", "board": "esp32-devkitc",
           "mqtt": {"host": "192.168.50.1", "port": 1883}, **kw}
    p = tmp_path / "pad-1.json"
    p.write_text(json.dumps(cfg))
    return p


def test_deploy_writes_verifies_skips_unchanged_and_restarts(tmp_path, capsys):
    root = tmp_path / "flash"
    with FakeBoard(root, window=128) as fb:
        cfg = pad_config(tmp_path)
        argv = ["--port", fb.port, "--config", str(cfg), "--board", str(ESP32), "--wait", "5"]
        assert deploy_tool.main(argv) == 0
        out = capsys.readouterr().out
        assert "written, verified by sha256" in out and "firmware up: pad-1 online session" in out
        for src in (ROOT / "firmware" / "edge").rglob("*.py"):
            rel = src.relative_to(ROOT / "firmware")
            assert (root / rel).read_bytes() == src.read_bytes(), rel
        assert (root / "main.py").read_bytes() == (ROOT / "firmware" / "main.py").read_bytes()
        assert json.loads((root / "config.json").read_text())["device_id"] == "pad-1"
        assert json.loads((root / "board.json").read_text())["board"] == "esp32-devkitc"
        assert not list(root.rglob("*.tmp"))

        (root / "edge" / "journal.py").write_text("# stale\n")
        assert deploy_tool.main(argv + ["--reset", "none"]) == 0
        out = capsys.readouterr().out
        assert "/edge/journal.py" in [ln.split()[1] for ln in out.splitlines() if "written" in ln]
        assert out.count("unchanged (") == len(deploy_tool.plan(cfg, ESP32)) - 1
        assert (root / "edge" / "journal.py").read_bytes() == (ROOT / "firmware/edge/journal.py").read_bytes()


def test_deploy_refuses_a_bad_config_before_touching_the_board(tmp_path, capsys):
    sim_cfg = pad_config(tmp_path, board="sim")
    assert deploy_tool.main(["--port", "/dev/null-board", "--config", str(sim_cfg), "--board", str(ESP32)]) == 2
    assert "board is 'sim'" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"device_id": "Pad 1", "kind": "sample-pad", "mqtt": {"host": "x"}}))
    assert deploy_tool.main(["--port", "/dev/null-board", "--config", str(bad), "--board", str(ESP32)]) == 2
    assert "device_id" in capsys.readouterr().err
    rp2 = ROOT / "boards" / "rp2-pico-w.json"
    assert deploy_tool.main(["--port", "/dev/null-board", "--config", str(pad_config(tmp_path)),
                             "--board", str(rp2), "--dry-run"]) == 2  # config says esp32-devkitc


def test_console_follows_the_board_and_marks_resets(fake, capsys):
    assert console_tool.main(["--port", fake.port, "--reset", "soft", "--until", "online session", "--for", "5"]) == 0
    out = capsys.readouterr().out
    assert "== reset SOFT_REBOOT" in out and "pad-1 online session" in out


# --- the pytest plugin on the Pi backend ------------------------------------------------------------

def test_plugin_runs_a_scenario_on_the_pi_rig(pytester, pins, fake, tmp_path):
    data = json.loads(BENCH.read_text())
    data["devices"]["pad-1"]["serial"]["port"] = fake.port
    wiring = tmp_path / "bench-test.json"
    wiring.write_text(json.dumps(data))
    fake.watch_reset_pin(pins.pin(RESET))
    pytester.makepyfile(test_bench="""
        from gpiozero import Device

        def test_pad_on_the_bench(rig):
            assert rig.backend == "pi"
            pad = rig.device_of_kind("sample-pad")
            pad.start(timeout=5)
            pad.place_tag("S-1002")
            assert Device.pin_factory.pin(23).state
            pad.press("button", ms=20)
            assert "online session" in pad.console()[-1]
    """)
    out = tmp_path / "traces"
    res = pytester.runpytest_inprocess("-p", "hil.pytest_plugin", "--rig", f"pi:{wiring}",
                                       "--no-protocol-trace", "--trace-dir", str(out), "-p", "no:cacheprovider")
    res.assert_outcomes(passed=1)
    vcd = (out / "test_pad_on_the_bench.vcd").read_text()
    assert "$var wire 1" in vcd and "tag_S_1002" in vcd and "rst:0x1 (POWERON_RESET)" in vcd
    assert (out / "test_pad_on_the_bench.console-pad-1.log").read_text().count("online session") == 1


def test_collect_log_saves_the_console_and_fetches_board_files(fake, board_fs, tmp_path):
    (board_fs / "data").mkdir()
    (board_fs / "data" / "state.json").write_text('{"boot": 7}')
    with SerialBoard(fake.port, name="pad-1") as board:
        board.soft_reset()
        board.wait_line("online session", 3)
        paths = board.collect_log(tmp_path / "logs", files=("/data/state.json", "/missing.txt"))
    names = sorted(p.name for p in paths)
    assert names == ["pad-1-console.log", "pad-1-data_state.json"]
    assert (tmp_path / "logs" / "pad-1-data_state.json").read_text() == '{"boot": 7}'
    assert "online session" in (tmp_path / "logs" / "pad-1-console.log").read_text()
