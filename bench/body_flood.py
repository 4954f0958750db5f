"""Body flood: one huge POST with a kiosk token, and what it does to device ingest.

    .venv/bin/python bench/body_flood.py                        # 300 MB attacks, 200 events/s
    .venv/bin/python bench/body_flood.py --quick                # CI smoke: 20 MB, short phases
    .venv/bin/python bench/body_flood.py --gateway-root /work/main   # the same against main

One real Mosquitto and the gateway (`python -m gateway`, from `--gateway-root` if given) on
loopback. Devices (tools/loadgen.py's `LoadGen`, in a process of its own) send `--rate`
events/s all along and settle each on the gateway's ack (sent after the commit). This process
is the attacker: with a kiosk token (`phygital token create --role kiosk`) it POSTs
`--attack-mb` MB to `/fitting/rooms/room-1/requests` (a route the kiosk may call) over a raw
socket, sending as fast as the gateway takes it, twice: with `Content-Length` declared, then
chunked. It times from the request head sent to the first byte of the answer (goal for a
413: < 100 ms) and stops when the answer is complete.

Phases (contiguous from the first attack on): before, during the Content-Length attack,
between, during the chunked attack, after. A "during" phase lasts from the attack's first
byte until 0.5 s after its answer arrived (the backlog the gateway then catches up on),
and at least `--min-attack-window` s. The attacker runs in a process of its own. Per phase:
events acknowledged per second, publish→ack
latency p50/p99/max of the events acknowledged in it, and the longest time no ack arrived
at all (sampled every 20 ms). Also the gateway's peak RSS (VmHWM) before and after.

Figures are printed, never asserted. Exits 1 if an event was lost or duplicated.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import itertools

from bench.command_rtt import LoadProcess
from bench.ingest import BenchBroker, BenchGateway, check_db, load_line, machine
from tools.loadgen import percentiles

PY = sys.executable
MB = 1_000_000
GOAL_413_MS = 100.0
PATH = "/fitting/rooms/room-1/requests"


# -- the devices: a child process running LoadGen, sampling its progress ------------------------

async def _devices_child(port: int, devices: int, rate: float) -> dict[str, Any]:
    from tools.loadgen import LoadGen
    gen = LoadGen(port=port, devices=devices, prefix="fl", rate=rate, duration=0)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, gen.stop)
    samples: list[tuple[float, int, int]] = []

    async def sample() -> None:
        while True:
            samples.append((time.monotonic(), gen.stats.acked, len(gen.stats.latencies_ms)))
            await asyncio.sleep(0.02)

    task: asyncio.Task[None] | None = None

    def on_window(what: str) -> None:
        nonlocal task
        if what == "start":
            task = loop.create_task(sample())
            print("load start", flush=True)
        elif task is not None:
            task.cancel()

    result = await gen.run(on_window=on_window)
    return {"samples": samples, "latencies": gen.stats.latencies_ms,
            "sent_per_device": result["sent_per_device"], "drained": result["drained"],
            "lost_connections": result["lost_connections"], "errors": result["errors"]}


class Devices(LoadProcess):
    """This script's `--devices-child`: the device load, in its own process."""

    def __init__(self, port: int, devices: int, rate: float) -> None:
        super().__init__([PY, str(Path(__file__).resolve()), "--devices-child", str(port),
                          str(devices), str(rate)])


class HealthProbe:
    """GET /health every 50 ms on one keep-alive connection: a response that takes long means
    the gateway's event loop was blocked (it measures the loop, not the devices)."""

    def __init__(self, port: int) -> None:
        import http.client
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.points: list[tuple[float, float]] = []  # (sent, ms)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            t = time.monotonic()
            try:
                self.conn.request("GET", "/health")
                self.conn.getresponse().read()
            except OSError:
                continue
            self.points.append((t, (time.monotonic() - t) * 1000))

    def max_ms(self, t_a: float, t_b: float) -> float:
        return max((ms for t, ms in self.points if t_a <= t <= t_b), default=float("nan"))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(150)
        self.conn.close()


# -- the attacker --------------------------------------------------------------------------------

def attack(port: int, token: str, total: int, chunked: bool, timeout: float) -> dict[str, Any]:
    """POST `total` bytes of JSON (one huge string) as fast as the gateway takes them; read the
    answer concurrently. Returns when the answer is complete (or the connection ends)."""
    prefix, suffix = b'{"kind":"call","gtin":"', b'"}'
    piece = b"a" * (1 << 20)
    head = (f"POST {PATH} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\n"
            + ("Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {total}\r\n")
            + "\r\n").encode()

    def body_pieces():
        left = total - len(prefix) - len(suffix)
        yield prefix
        while left > 0:
            n = min(left, len(piece))
            yield piece[:n]
            left -= n
        yield suffix

    def framed():
        for p in body_pieces():
            yield (b"%x\r\n" % len(p) + p + b"\r\n") if chunked else p
        if chunked:
            yield b"0\r\n\r\n"

    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(head)
    t0 = time.monotonic()
    s.setblocking(False)
    out = framed()
    pending = memoryview(next(out))
    sent = 0
    sending = True
    resp = b""
    t_first = t_done = None
    send_error = ""
    closed = False
    while time.monotonic() - t0 < timeout:
        r, w, _ = select.select([s], [s] if sending else [], [], 0.5)
        if r:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                closed = True
                break
            if t_first is None:
                t_first = time.monotonic()
            resp += data
            head_end = resp.find(b"\r\n\r\n")
            if head_end >= 0:
                hdrs = resp[:head_end].decode("latin-1").lower()
                n = next((int(ln.split(":", 1)[1]) for ln in hdrs.split("\r\n")
                          if ln.startswith("content-length:")), 0)
                if len(resp) - head_end - 4 >= n:
                    t_done = time.monotonic()
                    break
        if w and sending:
            try:
                k = s.send(pending)
            except (BrokenPipeError, ConnectionResetError) as exc:
                sending, send_error = False, type(exc).__name__
                continue
            sent += k
            pending = pending[k:]
            if not pending:
                nxt = next(out, None)
                if nxt is None:
                    sending = False
                else:
                    pending = memoryview(nxt)
    else:
        send_error = send_error or "timed out"
    if t_done is not None:  # does the gateway close the connection after its answer?
        try:
            s.setblocking(True)
            s.settimeout(2)
            closed = s.recv(1) == b""
        except ConnectionResetError:
            closed = True
        except OSError:
            closed = False
    s.close()
    end = t_done or time.monotonic()
    status = int(resp.split(b" ", 2)[1]) if resp.startswith(b"HTTP/1.1 ") else None
    body = resp.partition(b"\r\n\r\n")[2]
    try:
        detail = json.loads(body).get("detail", "")
    except ValueError:
        detail = body[:200].decode("latin-1")
    return {"status": status, "first_byte_ms": None if t_first is None else (t_first - t0) * 1000,
            "elapsed_s": end - t0, "sent": sent, "closed": closed, "send_error": send_error,
            "detail": detail, "t0": t0, "t_end": end}


def run_attack(port: int, token: str, total: int, chunked: bool, timeout: float
               ) -> dict[str, Any]:
    """`attack` in a process of its own (the attacker is another machine; in this process its
    sending loop would take the GIL from the /health probe)."""
    p = subprocess.run([PY, str(Path(__file__).resolve()), "--attack-child", str(port), token,
                        str(total), "chunked" if chunked else "length", str(timeout)],
                       cwd=ROOT, capture_output=True, text=True, timeout=timeout + 30, check=False)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"attacker failed (rc={p.returncode}): {p.stderr[-2000:]}")
    return json.loads(lines[-1])


# -- figures --------------------------------------------------------------------------------------

def phase_figures(samples: list[list[float]], lat: list[float], t_a: float, t_b: float
                  ) -> dict[str, Any]:
    inside = [s for s in samples if t_a <= s[0] <= t_b]
    if len(inside) < 2:
        return {"events_s": float("nan"), "lat": {}, "paused_ms": float("nan")}
    first, last = inside[0], inside[-1]
    span = last[0] - first[0]
    paused = max(b[0] - a[0] for a, b in itertools.pairwise(inside))  # the device process's own
    return {"events_s": (last[1] - first[1]) / span if span else float("nan"),
            "lat": percentiles(lat[int(first[2]):int(last[2])]), "paused_ms": paused * 1000}


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def kiosk_token(gw: BenchGateway, root: Path) -> str:
    r = subprocess.run([PY, "-m", "tools.cli", "token", "--db", str(gw.db), "create",
                        "--name", "attacker-kiosk", "--role", "kiosk"], cwd=root,
                       capture_output=True, text=True, timeout=30, check=False)
    if r.returncode:
        raise RuntimeError(f"token create failed: {r.stderr}")
    return r.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--attack-child":
        port, token, total, chunked, timeout = sys.argv[2:7]
        print(json.dumps(attack(int(port), token, int(total), chunked == "chunked",
                                float(timeout))), flush=True)
        return 0
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--devices-child":
        port, devices, rate = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
        print(json.dumps(asyncio.run(_devices_child(port, devices, rate))), flush=True)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="CI smoke: 20 MB attacks, 20 devices at 100 events/s, 1 s phases")
    ap.add_argument("--attack-mb", type=float, default=300.0, help="size of each attack body")
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--rate", type=float, default=200.0, help="device events/s in total")
    ap.add_argument("--phase-s", type=float, default=5.0, help="before / between / after phases")
    ap.add_argument("--min-attack-window", type=float, default=2.0,
                    help="a 'during' phase lasts at least this long")
    ap.add_argument("--attack-timeout", type=float, default=300.0)
    ap.add_argument("--gateway-root", type=Path, default=None,
                    help="run `python -m gateway` from this directory (e.g. /work/main)")
    ap.add_argument("--priority", type=int, default=5 if os.geteuid() == 0 else 0,
                    help="renice the device process by -N (needs root; default 5 as root): the "
                         "devices are other machines in a store, they should not starve here")
    ap.add_argument("--json", type=Path, default=None,
                    help="also write the phases, attacks and the device samples here")
    a = ap.parse_args(argv)
    if a.quick:
        a.attack_mb, a.devices, a.rate = min(a.attack_mb, 20.0), 20, 100.0
        a.phase_s, a.min_attack_window = 1.0, 1.0
    total = int(a.attack_mb * MB)
    root = a.gateway_root or ROOT
    print(f"body flood benchmark: kiosk token POSTs {a.attack_mb:g} MB to {PATH} "
          f"(Content-Length, then chunked) while {a.devices} devices send {a.rate:g} events/s; "
          f"phases {a.phase_s:g} s, attack windows >= {a.min_attack_window:g} s"
          + (f", gateway from {a.gateway_root}" if a.gateway_root else "")
          + (f", device process nice -{a.priority}" if a.priority else ""))
    print(f"machine: {machine()}", flush=True)
    print(load_line(), flush=True)
    marks: dict[str, tuple[float, float]] = {}
    attacks: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="pe-bench-flood-") as tmp:
        work = Path(tmp)
        broker = BenchBroker(work / "mosq").start()
        gw = BenchGateway(work / "gw", broker.port, root=a.gateway_root).start()
        hwm = {"start": vm_hwm_mb(gw.pid())}
        devices = Devices(broker.port, a.devices, a.rate)
        if a.priority:
            os.setpriority(os.PRIO_PROCESS, devices.proc.pid, -a.priority)
        probe = HealthProbe(gw.http_port)
        try:
            token = kiosk_token(gw, root)
            devices.wait_started()
            time.sleep(0.5)  # let the load settle
            t = time.monotonic()
            time.sleep(a.phase_s)
            marks["before"] = (t, time.monotonic())
            for n, (name, chunked) in enumerate((("content-length", False), ("chunked", True))):
                res = run_attack(gw.http_port, token, total, chunked, a.attack_timeout)
                end = max(res["t_end"] + 0.5, res["t0"] + a.min_attack_window)
                time.sleep(max(0.0, end - time.monotonic()))
                marks[f"during {name}"] = (res["t0"], end)
                attacks[name] = res
                hwm[name] = vm_hwm_mb(gw.pid())
                time.sleep(a.phase_s)
                marks["between" if n == 0 else "after"] = (end, time.monotonic())
        finally:
            probe.close()
            load = devices.stop()
            gw.stop()
            broker.stop()
        check = check_db(gw.db, load.get("sent_per_device", {}))

    for name, res in attacks.items():
        first = res["first_byte_ms"]
        goal = ("" if res["status"] != 413 else
                f" (goal < {GOAL_413_MS:.0f} ms: {'met' if first < GOAL_413_MS else 'MISSED'})")
        print(f"attack {name}: answer {res['status']} after "
              f"{'-' if first is None else f'{first:.1f}'} ms{goal}; attacker sent "
              f"{res['sent'] / MB:.3f} MB of {a.attack_mb:g}; answer complete after "
              f"{res['elapsed_s']:.2f} s; connection "
              f"{'closed by the gateway' if res['closed'] else 'kept open'}"
              + (f"; send ended: {res['send_error']}" if res["send_error"] else "")
              + f"; detail: {str(res['detail'])[:120]!r}")
        if res["status"] == 413:
            print(f"time to 413 ({name}) ms: {first:.1f}")
    print(f"gateway peak RSS (VmHWM) MB: start {hwm['start']:.0f}, after the Content-Length "
          f"attack {hwm.get('content-length', float('nan')):.0f}, after the chunked attack "
          f"{hwm.get('chunked', float('nan')):.0f}")
    print(f"{'phase':<24} {'s':>5} {'events/s':>9} {'ack p50 ms':>11} {'p99 ms':>8} "
          f"{'max ms':>8} {'/health max ms':>15} {'devices paused ms':>18}")
    for name, (t_a, t_b) in marks.items():
        f = phase_figures(load["samples"], load["latencies"], t_a, t_b)
        lat = f["lat"]
        print(f"{name:<24} {t_b - t_a:>5.1f} {f['events_s']:>9.0f} "
              f"{lat.get('p50', float('nan')):>11.1f} {lat.get('p99', float('nan')):>8.1f} "
              f"{lat.get('max', float('nan')):>8.1f} {probe.max_ms(t_a, t_b):>15.1f} "
              f"{f['paused_ms']:>18.0f}")
    print(load_line())
    if a.json:
        a.json.write_text(json.dumps({"marks": marks, "attacks": attacks, "hwm": hwm,
                                      "samples": load["samples"], "latencies": load["latencies"]}))
    ok = check["ok"] and load["drained"] and not load["lost_connections"]
    print(f"integrity: {'OK' if ok else 'FAILED'}  sent {check['sent']}, stored "
          f"{check['stored']}, lost {check['lost']}, duplicates {check['duplicates']}")
    if load["errors"]:
        print("device load errors:", load["errors"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
