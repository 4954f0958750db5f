"""micropython-lib modules against what the firmware does itself: code size, heap, speed.

    .venv/bin/python bench/micropython_lib.py [--lib DIR] [--n 300]

Pairs (docs/hil.md, "micropython-lib"):
* MQTT: ``umqtt.simple`` against ``edge/mqtt.py`` (the firmware's asyncio MQTT 3.1.1 client);
* HMAC-SHA256: ``hmac`` against ``edge/coap.py``'s ``hmac_pads``/``hmac_end`` (also the
  locker's code MAC);
* logging: ``logging`` against ``Runtime.log`` (one line to the console, no module).

The micropython-lib sources come from PyPI with pip (the only registry reachable here;
micropython.org's mip index is not): ``micropython-umqtt.simple`` 1.3.4, ``micropython-hmac``
3.4.2.post3, ``micropython-logging`` 0.5.2, the last versions published there (2017-2019;
micropython-lib has moved on since, and publishes through mip). Their sdists have no
setup.py, so pip refuses to build them; ``pip download --no-clean`` keeps what it unpacked,
which is where the sources are taken from (``--lib DIR`` uses a folder of sources instead).
``hmac`` imports ``warnings``, which is not on the boards: a one-line stand-in is given.

Each figure runs in its own unix-port MicroPython (``-X heapsize=256K``), on mpy-cross
bytecode as a board runs it: ``.mpy`` size; heap held after ``import`` (``gc.mem_free``
difference after ``gc.collect``); for HMAC, microseconds and bytes allocated per MAC of a
64-byte message under a 32-byte key (``time.ticks_us`` over ``--n`` MACs; ``gc.mem_alloc``
over 10 MACs with gc disabled).
Figures, not assertions: printed with the machine and its load.
"""
from __future__ import annotations

import argparse
import glob
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hil.sim.firmware import build_mpy, micropython_binary, mpy_cross_binary

PYPI = {"umqtt/simple.py": "micropython-umqtt.simple==1.3.4", "hmac.py": "micropython-hmac==3.4.2.post3",
        "logging/__init__.py": "micropython-logging==0.5.2"}

HMAC_OURS = """
from edge.coap import hmac_pads, hmac_end
from hashlib import sha256
def mac(key, msg):
    ki, ko = hmac_pads(key)
    h = sha256(ki)
    h.update(msg)
    return hmac_end(ko, h)
"""
HMAC_LIB = """
import hmac, hashlib
def mac(key, msg):
    return hmac.new(key, msg, hashlib.sha256).digest()
"""
RUN = """
import gc, time, sys
gc.collect()
f0 = gc.mem_free()
{imp}
gc.collect()
print("import_heap", f0 - gc.mem_free())
{extra}
"""
SPEED = """
key = bytes(range(32)); msg = bytes(range(64)); n = {n}
ref = {ref!r}
out = mac(key, msg)
print("correct", out == ref)
gc.collect()
t0 = time.ticks_us()
for _ in range(n):
    mac(key, msg)
t1 = time.ticks_us()
print("us_per_mac", time.ticks_diff(t1, t0) / n)
gc.collect(); gc.disable()
a0 = gc.mem_alloc()
for _ in range(10):
    mac(key, msg)
a1 = gc.mem_alloc(); gc.enable()
print("bytes_per_mac", (a1 - a0) // 10)
"""


def fetch_lib(dest: Path) -> Path:
    """The sources, from PyPI with pip (see the module docstring)."""
    tmp = Path(tempfile.mkdtemp(prefix="mplib-"))
    env = {**os.environ, "TMPDIR": str(tmp)}
    for spec in PYPI.values():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-clean", "--no-deps", "-q", "-d", str(tmp / "dl"),
                        spec], env=env, capture_output=True, check=False)
    for rel in PYPI:
        found = glob.glob(str(tmp / "pip-download-*" / "*" / rel))
        if found:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(found[0], dest / rel)
    shutil.rmtree(tmp, ignore_errors=True)
    return dest


def mpy(src: Path, out: Path) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([mpy_cross_binary(), "-o", str(out), str(src)], check=True, capture_output=True)
    return out.stat().st_size


def run(path: list[Path], code: str) -> dict[str, str]:
    env = {**os.environ, "MICROPYPATH": ":".join([".frozen", *map(str, path)])}
    p = subprocess.run([micropython_binary(), "-X", "heapsize=256K", "-c", code], env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    if p.returncode != 0:
        return {"error": (p.stdout + p.stderr).strip().splitlines()[-1]}
    return dict(line.split(" ", 1) for line in p.stdout.strip().splitlines())


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return f"{cpu}, {os.cpu_count()} CPUs, load average {load}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", type=Path, help="folder with umqtt/simple.py, hmac.py, logging/__init__.py")
    ap.add_argument("--n", type=int, default=300, help="MACs per speed run")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-mplib-"))
    lib = args.lib or fetch_lib(work / "src")
    missing = [f"{rel} ({spec})" for rel, spec in PYPI.items() if not (lib / rel).exists()]
    libmpy = work / "lib"
    for rel in PYPI:
        if (lib / rel).exists():
            mpy(lib / rel, libmpy / Path(rel).with_suffix(".mpy"))
    (libmpy / "warnings.py").write_text("def warn(msg, cat=None, stacklevel=1):\n    print(msg)\n")
    fw = build_mpy()
    import hashlib
    import hmac

    ref = hmac.new(bytes(range(32)), bytes(range(64)), hashlib.sha256).digest()

    print(f"machine: {machine()}")
    ver = subprocess.run([micropython_binary(), "-c", "import sys; print(sys.version)"],
                         capture_output=True, text=True, check=False).stdout.strip()
    print(f"micropython: {ver}")
    if missing:
        print(f"could not obtain: {', '.join(missing)}")
    print()
    print(f"{'module':<34} {'.mpy B':>7} {'import heap B':>14} {'us/MAC':>8} {'B/MAC':>7}")

    def row(name, size, r):
        if "error" in r:
            print(f"{name:<34} {size:>7} {'':>14}  fails: {r['error']}")
            return
        us = f"{float(r['us_per_mac']):.0f}" if "us_per_mac" in r else "-"
        b = r.get("bytes_per_mac", "-")
        ok = "" if r.get("correct", "True") == "True" else "  WRONG MAC"
        print(f"{name:<34} {size:>7} {r['import_heap']:>14} {us:>8} {b:>7}{ok}")

    # MQTT
    size = (fw / "edge" / "mqtt.mpy").stat().st_size
    row("edge.mqtt (firmware, asyncio)", size, run([fw], RUN.format(imp="import edge.mqtt", extra="")))
    if (libmpy / "umqtt" / "simple.mpy").exists():
        row("umqtt.simple 1.3.4 (blocking)", (libmpy / "umqtt/simple.mpy").stat().st_size,
            run([libmpy], RUN.format(imp="import umqtt.simple", extra="")))
    # HMAC
    speed = SPEED.format(n=args.n, ref=ref)
    coap = (fw / "edge" / "coap.mpy").stat().st_size
    row("edge.coap hmac_pads/hmac_end", coap, run([fw], RUN.format(imp=HMAC_OURS, extra=speed)))
    print(f"{'':<34} (the .mpy is all of edge/coap.py; the HMAC is 2 functions of it)")
    if (libmpy / "hmac.mpy").exists():
        row("hmac 3.4.2.post3", (libmpy / "hmac.mpy").stat().st_size,
            run([libmpy], RUN.format(imp=HMAC_LIB, extra=speed)))
    # logging
    if (libmpy / "logging" / "__init__.mpy").exists():
        row("logging 0.5.2", (libmpy / "logging/__init__.mpy").stat().st_size,
            run([libmpy], RUN.format(imp="import logging\nlog = logging.getLogger('pad')", extra="")))
        print(f"{'':<34} (the firmware's Runtime.log: a print of one line through the HAL, no module)")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
