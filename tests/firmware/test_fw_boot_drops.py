"""What stays in the heap after boot: boot-only code is dropped (docs/benchmarks.md, firmware
heap). Real MicroPython running edge.boot.main on the .mpy build, up to the event loop: a fake
rig answers the sim HAL's hello, and `asyncio.run` is replaced by a probe that prints which
modules and boot globals are left, then exits."""
import json
import socket
import subprocess
import threading

import pytest

from hil.sim.firmware import build_mpy, micropython_binary, micropython_env

PROBE = """
import sys, asyncio
def probe(coro):
    import edge
    print("MODULES", " ".join(sorted(k for k in sys.modules if k.startswith("edge"))))
    print("EDGE", " ".join(sorted(k for k in dir(edge) if not k.startswith("__"))))
    print("BOOT", " ".join(sorted(k for k in BOOT_GLOBALS if not k.startswith("__"))))
asyncio.run = probe
from edge import boot
BOOT_GLOBALS = boot.main.__globals__ if hasattr(boot.main, "__globals__") else boot.__dict__
boot.main(["main.py", sys.argv[1]])
"""


def _rig() -> tuple[socket.socket, int]:
    # answers the sim HAL's asks ("H <dev>" at boot) with a line; writes need no answer
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve():
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        with conn, conn.makefile("rb") as f:
            for line in f:
                if line[:1] in (b"H", b"R", b"S", b"X"):
                    conn.sendall(b"0\n")

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


@pytest.mark.parametrize("kind, transport", [("fitting-room", "coap"), ("sample-pad", "mqtt")])
def test_boot_only_code_is_not_left_in_the_heap(tmp_path, kind, transport):
    srv, port = _rig()
    cfg = {"device_id": "dev-1", "kind": kind, "board": "sim", "transport": transport,
           "mqtt": {"host": "127.0.0.1", "port": 9, "keepalive": 10},
           "sim": {"host": "127.0.0.1", "port": port}, "app": {}, "data_dir": str(tmp_path / "flash")}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "probe.py").write_text(PROBE)
    try:
        r = subprocess.run([micropython_binary(), "-X", "heapsize=96k", str(tmp_path / "probe.py"),
                            str(tmp_path / "config.json")], check=False, capture_output=True, text=True,
                           timeout=60,
                           env=micropython_env(path=build_mpy()), cwd=tmp_path)
    finally:
        srv.close()
    out = {line.split(" ", 1)[0]: line.split()[1:] for line in r.stdout.splitlines()
           if line.startswith(("MODULES", "EDGE", "BOOT"))}
    assert r.returncode == 0 and "MODULES" in out, r.stdout + r.stderr
    left = set(out["MODULES"])
    # boot-only modules: the config parser, the runtime's constructor, edge.boot itself
    assert not left & {"edge.config", "edge.runtime_boot", "edge.boot"}, left
    assert not set(out["EDGE"]) & {"config", "runtime_boot", "boot"}, out["EDGE"]
    # edge.boot's loaders and app table went too: only main() (running) and its imports stay
    assert set(out["BOOT"]) <= {"main", "gc"}, out["BOOT"]
    assert {"edge.runtime", "edge.ndef_tlv"} <= left, left
    if kind == "fitting-room":  # the sample pad's Text/URI rules are not the room's
        assert "edge.ndef" not in left and "edge.coap" in left and "edge.mqtt" not in left, left
    else:  # the pad parses its tags with them: loaded at boot, not at the first tag
        assert "edge.ndef" in left and "edge.mqtt" in left and "edge.coap" not in left, left
