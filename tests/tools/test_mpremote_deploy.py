"""Deployment through mpremote, on the real MicroPython: `tools.deploy` (mpremote's
SerialTransport as a library) and `mpremote mip install` of package.json (the mpremote CLI),
against the unix port's own raw REPL on a pty with a littlefs v2 flash (tests/support/unix_board.py).
The fake board (hil/pi/fakeboard.py) covers what the unix port cannot: a port without hashlib."""
from __future__ import annotations

import ast
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hil.pi.fakeboard import FakeBoard
from tests.support.unix_board import UnixBoard
from tools import deploy as deploy_tool
from tools import mip_package

ROOT = Path(__file__).resolve().parents[2]
ESP32 = ROOT / "boards" / "esp32-devkitc.json"

# run on the board: the sha256 of every file under a folder, hashed by the board from its flash
HASH_TREE = """
import os, hashlib, binascii
def walk(d, out):
    for name, kind, *_ in os.ilistdir(d):
        p = d.rstrip('/') + '/' + name
        if kind == 0x4000:
            walk(p, out)
        else:
            h = hashlib.sha256()
            with open(p, 'rb') as f:
                h.update(f.read())
            out[p] = binascii.hexlify(h.digest()).decode()
out = {}
walk('/', out)
print(repr(out))
"""


def pad_config(tmp_path) -> Path:
    p = tmp_path / "pad-1.json"
    p.write_text(json.dumps({"device_id": "pad-1", "kind": "sample-pad", "board": "esp32-devkitc",
                             "mqtt": {"host": "192.168.50.1", "port": 1883}}))
    return p


def mpremote(port: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The mpremote command line (`resume`: no soft reset, which would end the unix port)."""
    return subprocess.run([sys.executable, "-m", "mpremote", "connect", port, "resume", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def board_hashes(port: str) -> dict[str, str]:
    r = mpremote(port, "exec", HASH_TREE)
    assert r.returncode == 0, r.stderr
    return ast.literal_eval(r.stdout.strip())  # a dict literal printed by the board


def manifest_files() -> set[str]:
    """What boards/manifest.py freezes, as paths on the board."""
    found: set[str] = set()
    base = ROOT / "boards"

    def package(name, base_path="."):
        root = (base / base_path).resolve()
        found.update(p.relative_to(root).as_posix() for p in (root / name).rglob("*.py")
                     if "__pycache__" not in p.parts)

    def module(name, base_path="."):
        assert (base / base_path / name).is_file(), name
        found.add(name)

    exec((base / "manifest.py").read_text(), {"package": package, "module": module})  # noqa: S102
    return found


def test_package_json_is_the_firmware_that_deploy_and_the_manifest_put_on_a_board(tmp_path):
    assert (ROOT / "package.json").read_text() == mip_package.render(), \
        "package.json is stale: python -m tools.mip_package --write"
    pkg = json.loads((ROOT / "package.json").read_text())
    dests = [d for d, _ in pkg["urls"]]
    for dest, src in pkg["urls"]:
        assert (ROOT / src).is_file() and src == "firmware/" + dest, (dest, src)
    deployed = {it.remote[1:] for it in deploy_tool.plan(pad_config(tmp_path), ESP32)}
    assert set(dests) == deployed - {"config.json", "board.json"}
    assert set(dests) == manifest_files()
    assert len(dests) == len(set(dests)) and "edge/boot.py" in dests and "main.py" in dests
    fw = re.search(r'^FW_VERSION = "(.+)"', (ROOT / "firmware/edge/runtime.py").read_text(), re.MULTILINE)
    assert fw and pkg["version"] == fw.group(1)
    assert pkg["deps"] == []


def test_the_package_check_fails_when_a_firmware_file_is_added(tmp_path, monkeypatch):
    extra = tmp_path / "firmware" / "edge" / "new_driver.py"
    extra.parent.mkdir(parents=True)
    extra.write_text("X = 1\n")
    real = deploy_tool.firmware_sources()
    monkeypatch.setattr(mip_package, "firmware_sources", lambda: [*real, ("edge/new_driver.py", extra)])
    monkeypatch.setattr(mip_package, "ROOT", tmp_path)
    monkeypatch.setattr(mip_package, "PACKAGE_JSON", ROOT / "package.json")
    with pytest.raises(ValueError):  # a file outside the repository cannot be a relative url
        mip_package.render()
    monkeypatch.setattr(mip_package, "firmware_sources",
                        lambda: [*real, ("edge/new_driver.py", ROOT / "firmware/edge/boot.py")])
    monkeypatch.setattr(mip_package, "ROOT", ROOT)
    assert mip_package.main([]) == 1  # package.json lacks the new file: the check says so


def test_mpremote_mip_install_puts_the_firmware_on_a_littlefs_board(tmp_path):
    with UnixBoard(tmp_path / "flash.img", fs="lfs2") as board:
        r = mpremote(board.port, "mip", "install", "--target", "/", "package.json")
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.rstrip().endswith("Done")
        on_board = board_hashes(board.port)
        want = {"/" + dest: hashlib.sha256((ROOT / src).read_bytes()).hexdigest()
                for dest, src in json.loads((ROOT / "package.json").read_text())["urls"]}
        assert on_board == want
        # the board's MicroPython imports the installed firmware from its flash
        r = mpremote(board.port, "exec", "import edge.runtime, edge.boot\nprint(edge.runtime.FW_VERSION)")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == json.loads((ROOT / "package.json").read_text())["version"]


def test_deploy_through_mpremote_writes_mpy_skips_unchanged_and_rewrites_a_stale_file(tmp_path, capsys):
    cfg = pad_config(tmp_path)
    items = deploy_tool.plan(cfg, ESP32, mpy=True)
    with UnixBoard(tmp_path / "flash.img", fs="lfs2") as board:
        argv = ["--port", board.port, "--config", str(cfg), "--board", str(ESP32), "--mpy", "--reset", "none"]
        assert deploy_tool.main(argv) == 0
        out = capsys.readouterr().out
        assert out.count("written, verified by sha256 (") == len(items)
        assert board_hashes(board.port) == {it.remote: it.sha256 for it in items}  # and no .tmp left

        # the flash changed under us: only that file is written again
        r = mpremote(board.port, "exec", "f=open('/edge/journal.mpy','wb')\nf.write(b'stale')\nf.close()")
        assert r.returncode == 0, r.stderr
        assert deploy_tool.main(argv) == 0
        out = capsys.readouterr().out
        written = [w for ln in out.splitlines() if "written, verified" in ln for w in ln.split() if w[0] == "/"]
        assert written == ["/edge/journal.mpy"]
        assert out.count("unchanged (") == len(items) - 1
        assert board_hashes(board.port) == {it.remote: it.sha256 for it in items}
        # real MicroPython runs the deployed bytecode
        r = mpremote(board.port, "exec", "import edge.journal, edge.config, sys\n"
                                         "print(edge.journal.__file__)")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().endswith("edge/journal.mpy")


def test_deploy_to_a_board_without_hashlib_verifies_by_reading_back(tmp_path, capsys):
    cfg = pad_config(tmp_path)
    with FakeBoard(tmp_path / "flash", has_hashlib=False, boot_on_start=False) as fb:
        argv = ["--port", fb.port, "--config", str(cfg), "--board", str(ESP32), "--reset", "none"]
        assert deploy_tool.main(argv) == 0
        out = capsys.readouterr().out
        n = len(deploy_tool.plan(cfg, ESP32))
        assert out.count("written, verified by sha256 of a read-back (") == n
        assert (tmp_path / "flash" / "edge" / "mqtt.py").read_bytes() == \
            (ROOT / "firmware/edge/mqtt.py").read_bytes()
        assert not list((tmp_path / "flash").rglob("*.tmp"))


def test_deploy_to_a_port_where_nothing_answers_fails_with_advice(tmp_path, capsys):
    import os

    master, slave = os.openpty()  # a serial port with no MicroPython behind it
    try:
        argv = ["--port", os.ttyname(slave), "--config", str(pad_config(tmp_path)), "--board", str(ESP32)]
        assert deploy_tool.main(argv) == 1
        assert "could not enter the raw REPL" in capsys.readouterr().err
    finally:
        os.close(master)
        os.close(slave)
