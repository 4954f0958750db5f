"""The 32-bit lane: firmware modules in MicroPython's official WebAssembly port under Node.js
(tools/wasm32/run.mjs, docs/wasm32.md). `sys.maxsize` is 2**31-1 there, as on ESP32 and
RP2040, so small ints end at 2**30 and 13-digit millisecond timestamps are long ints.

Each program also runs in the 64-bit unix port; the two lanes must print the same results.
The port is installed by .ci/run (`npm install --prefix .node ...`); these tests are skipped
only when `node` itself is missing.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.kinds.locker_bank.core import key_id, mac_code, salt_id
from hil.sim.firmware import build_mpy, micropython_binary, micropython_env

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "tools" / "wasm32" / "run.mjs"
PROGS = ROOT / "tools" / "wasm32" / "progs"
PACKAGE = ROOT / ".node" / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"

pytestmark = pytest.mark.skipif(shutil.which("node") is None,
                                reason="node is not installed: the 32-bit WebAssembly lane needs "
                                       "Node.js (apt-get install nodejs), then bash .ci/run")


@pytest.fixture(scope="module")
def mpy() -> Path:
    assert PACKAGE.exists(), ("the WebAssembly MicroPython is not installed: run "
                              "`npm install --prefix .node @micropython/micropython-webassembly-pyscript"
                              "@1.29.0-6` (bash .ci/run does)")
    return build_mpy()  # bytecode, as on a board; the same .mpy in both lanes


def run(lane: str, prog: Path, flash: Path, mpy: Path, *args: str) -> list[dict]:
    flash.mkdir(parents=True, exist_ok=True)
    if lane == "wasm32":
        cmd = ["node", str(RUNNER), "--heap", "96k", "--firmware", str(mpy), "--flash", str(flash),
               str(prog), *args]
        env = None
    else:
        cmd = [micropython_binary(), "-X", "heapsize=96k", str(prog), *args]
        env = micropython_env(path=Path(f"{mpy}:{ROOT / 'tools' / 'wasm32'}"))
    r = subprocess.run(cmd, cwd=flash, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, f"{lane}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]


def without_heap(lines: list[dict]) -> list[dict]:
    return [ln for ln in lines if "heap_alloc" not in ln]


def test_the_lane_is_32_bit_and_timestamps_are_long_ints(tmp_path, mpy):
    prog = tmp_path / "facts.py"
    prog.write_text("""
import json, sys, time, os
now = int(time.time() * 1000)
print(json.dumps({"maxsize": sys.maxsize, "platform": sys.platform, "now_digits": len(str(now)),
                  "now_add": now + 1 - now, "small": (1 << 30) - 1, "big": 1 << 30}))
""")
    facts = run("wasm32", prog, tmp_path / "w", mpy)[0]
    assert facts["maxsize"] == 2**31 - 1 and facts["platform"] == "webassembly"
    assert facts["now_digits"] == 13 and facts["now_add"] == 1
    assert facts["big"] == 2**30  # past the small-int range: a long int, still exact
    unix = run("unix", prog, tmp_path / "u", mpy)[0]
    assert unix["maxsize"] == 2**63 - 1, "the other lane is the 64-bit unix port"


def test_journal_and_command_log_survive_a_reboot_the_same_on_32_bit(tmp_path, mpy):
    prog = PROGS / "journal_cmdlog.py"
    out = {}
    for lane in ("wasm32", "unix"):
        flash = tmp_path / lane
        first = without_heap(run(lane, prog, flash, mpy, "boot1"))
        with open(flash / "j" / "journal.log", "a") as f:
            f.write('26 {"half')  # power cut in the middle of an append
        out[lane] = first + without_heap(run(lane, prog, flash, mpy, "boot2"))
    boot1, boot2, compact = out["wasm32"]
    assert boot1["journal"] == [19, 26, 15, 7]  # [first, next, dropped, len]: ring of 10, acked to 18
    assert boot1["c1"] == ["c1", "done", None, {"at": 1765000000005}]
    assert boot2["seqs"] == list(range(19, 26)), "replayed in order, torn line dropped"
    assert boot2["ts"] == [1765000000000 + s * 1000 - 1000 for s in range(19, 26)]
    assert boot2["ts_sum"] == sum(boot2["ts"])
    assert boot2["interrupted"] == ["c2"], "a command cut by a power loss is not run again"
    assert boot2["c7"] == ["c7", "rejected", "busy", None]
    assert boot2["cmd_ids"] == ["c2", "c5", "c6", "c7"] and boot2["c1_trimmed"] is None
    assert compact["after_compact"] == [26, 27, 1, [[26, '{"n":1}']]]
    assert out["wasm32"] == out["unix"]


def test_locker_bank_opens_exactly_its_door_on_32_bit(tmp_path, mpy):
    salt, key = "bank-salt-1", bytes(range(7, 39))
    app = {"compartments": ["S", "M", {"id": 3, "size": "L"}], "occupancy": True, "salt": salt,
           "code_key": key.hex(), "pulse_ms": 300, "verify_ms": 300, "retry_ms": 200, "gap_ms": 100,
           "door_poll_ms": 50, "ajar_s": 30, "lockout": {"after": 3, "window_s": 300, "lock_s": [2, 4, 6]}}
    inp = {"macs": {"2": mac_code("482913", key, salt), "1": mac_code("111111", key, salt)},
           "salt_id": salt_id(salt), "key_id": key_id(key), "app": app}
    out = {}
    for lane in ("wasm32", "unix"):
        flash = tmp_path / lane
        flash.mkdir()
        (flash / "locker_in.json").write_text(json.dumps(inp))
        out[lane] = next(ln["summary"] for ln in run(lane, PROGS / "locker_bank.py", flash, mpy) if "summary" in ln)
    s = out["wasm32"]
    assert (s["now_type"], s["now_digits"]) == ("int", 13)
    assert s["set2"] == ["done", {"compartment": 2, "state": "loaded"}]
    assert s["set1_expired"] == ["rejected", "expired"], "a 13-digit expiry in the past is refused"
    assert s["opened"] == {"compartment": 2, "why": "pickup", "order": "ord-2"}
    assert s["locks_pulsed"] == ["lock_2"], "only its own lock"
    assert s["collected"] == {"compartment": 2, "order": "ord-2", "occupied": 0}
    assert s["reused"] == {"compartment": 2, "order": "ord-2", "failures": 1}
    assert s["locks_pulsed_after_reuse"] == [], "a spent code powers no lock"
    assert s["events"] == ["door.opened", "door.closed", "pickup.collected", "code.reused"]
    for lane in out.values():
        lane.pop("heap_alloc")
    assert out["wasm32"] == out["unix"]


def test_uptime_and_gateway_clock_stay_right_past_a_ticks_wrap(tmp_path, mpy):
    """ticks_ms() wraps every 2**30 ms (12.4 days) on a 32-bit port and a ticks_diff() is only
    right within 6.2 days: a runtime up a week (the ticks simulated, edge.runtime's `time`
    replaced) must still say how long it has been up and what time it is (a locker bank checks
    code expiry with that clock, offline too)."""
    for lane in ("wasm32", "unix"):
        out = run(lane, PROGS / "clock_week.py", tmp_path / lane, mpy)[0]
        week = 7 * 24 * 3600 * 1000
        assert out["expected"] == week
        assert (lane, out["uptime_ms"]) == (lane, week)
        assert (lane, out["now"]) == (lane, 1765000000000 + week)


def test_a_locker_bank_offline_for_a_week_refuses_a_code_that_expired_meanwhile(tmp_path, mpy):
    """Rebooted offline, the bank's clock is the one it saved plus the time since boot. On a
    32-bit port that time must not come from one ticks_diff (wrong past 6.2 days): after a week
    a code that expired a day after the reboot still opened its door."""
    salt, key = "bank-salt-1", bytes(range(7, 39))
    app = {"compartments": ["S", "M", {"id": 3, "size": "L"}], "occupancy": True, "salt": salt,
           "code_key": key.hex(), "pulse_ms": 300, "verify_ms": 300, "retry_ms": 200, "gap_ms": 100,
           "door_poll_ms": 50, "ajar_s": 30, "lockout": {"after": 3, "window_s": 300, "lock_s": [2, 4, 6]}}
    inp = {"macs": {"2": mac_code("482913", key, salt)}, "salt_id": salt_id(salt), "key_id": key_id(key),
           "app": app}
    prog = PROGS / "locker_offline_week.py"
    for lane in ("wasm32", "unix"):
        flash = tmp_path / lane
        flash.mkdir()
        (flash / "locker_in.json").write_text(json.dumps(inp))
        setup = run(lane, prog, flash, mpy, "setup")
        assert setup[-1]["set"] == {"compartment": 2, "state": "loaded"}, setup
        out = next(ln["summary"] for ln in run(lane, prog, flash, mpy, "week") if "summary" in ln)
        assert (lane, out["events"]) == (lane, [["code.rejected", {"compartment": 2, "failures": 1,
                                                                    "reason": "expired"}]])
        assert (lane, out["locks_pulsed"]) == (lane, [])
