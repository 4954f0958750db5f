"""Ingest: events/s the gateway persists and acknowledges, against the broker's raw ceiling.

    .venv/bin/python bench/ingest.py                  # 200 devices, saturated, 10 s per phase
    .venv/bin/python bench/ingest.py --quick          # CI smoke: 20 devices, 2 s per phase
    .venv/bin/python bench/ingest.py --devices 500 --rate 2000 --duration 30
    .venv/bin/python bench/ingest.py --gateway-arg=--batch --gateway-arg=2048   # try a knob

One real Mosquitto on loopback (hil.harness), and the load generator (tools/loadgen.py, its
own process: many simulated devices speaking docs/protocol.md, one MQTT connection each).

1. raw ceiling: the load goes to the broker with no gateway; a plain subscriber
   (`tools.loadgen --sink`, same QoS 1 subscription as the gateway, does nothing but count)
   consumes it. Devices settle events on the broker's PUBACK. Figure: messages/s the
   subscriber received.
2. gateway: the gateway (`python -m gateway`, SQLite WAL, synchronous=FULL) subscribes,
   persists and acknowledges; devices settle events only on the gateway's application ack
   (sent after the commit), 16 unacknowledged in flight each, as the protocol says. Figures:
   events/s acknowledged (= persisted) during the load window, publish→ack latency p50/p99,
   and the gateway's own counters.
3. integrity: after the load stops, every journaled event must be acknowledged; then the
   database must hold, for each device, exactly seqs 1..sent (no loss, no duplicate, no gap),
   and no `journal.overflow`.

"Saturated" (the default) is a closed loop: every device keeps its 16-event window full, so the
figure is what the system sustains. `--rate` offers a fixed load instead.

Prints `key: value` figure lines (raw ceiling, gateway events/s, ratio, latency, integrity) and
exits 1 if the integrity check fails. Timings are figures, not pass/fail.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hil.harness import GatewayProcess, Mosquitto

PY = sys.executable


class BenchBroker(Mosquitto):
    """The harness's Mosquitto (`set_tcp_nodelay true` since the benchmarks found the 40 ms
    delayed-ACK stalls), optionally with Nagle back on (`nagle`, to measure the old config)
    and extra config lines."""

    def __init__(self, workdir: Path, *, persistence: bool = True, nagle: bool = False,
                 extra: list[str] | None = None) -> None:
        super().__init__(workdir, persistence=persistence)
        self.nagle = nagle
        self.extra = list(extra or [])

    def write_conf(self) -> None:
        super().write_conf()
        lines = [ln for ln in self.conf.read_text().splitlines()
                 if not (self.nagle and ln.startswith("set_tcp_nodelay"))]
        self.conf.write_text("\n".join(lines + self.extra) + "\n")


class BenchGateway(GatewayProcess):
    """`GatewayProcess` with extra command-line arguments, a quieter log level, and optionally
    another source tree (`root`: run `python -m gateway` there, e.g. a patched copy)."""

    def __init__(self, workdir: Path, broker_port: int, extra: list[str] | None = None,
                 root: Path | None = None) -> None:
        super().__init__(workdir, broker_port, extra_args=["--log-level", "WARNING", *(extra or [])],
                         root=root)

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the gateway process has used so far (Linux /proc)."""
        return proc_cpu_s(self.pid())


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def machine_busy_s() -> float:
    """CPU seconds all cores of the machine have spent busy so far (/proc/stat)."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait
    except (OSError, ValueError, IndexError):
        return float("nan")


class CpuShares:
    """Cores used over a phase: the gateway, the broker, the load generator (children of this
    process), and everything else on the machine (other users included)."""

    def __init__(self, gateway: int | None, broker: int) -> None:
        self.pids = {"gateway": gateway, "broker": broker}
        self.t0 = time.monotonic()
        self.start = self._sample()

    def _sample(self) -> dict[str, float]:
        import resource
        out = {k: proc_cpu_s(p) for k, p in self.pids.items() if p is not None}
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # loadgen/sink once they exited
        out["loadgen"] = ru.ru_utime + ru.ru_stime
        out["machine"] = machine_busy_s()
        return out

    def line(self) -> str:
        end = self._sample()
        wall = time.monotonic() - self.t0
        used = {k: (end[k] - self.start[k]) / wall for k in end}
        mine = sum(v for k, v in used.items() if k != "machine")
        parts = [f"{k} {v:.2f}" for k, v in used.items() if k != "machine"]
        return (f"cores used ({os.cpu_count()} on the machine): {', '.join(parts)}, everything "
                f"else {max(0.0, used['machine'] - mine):.2f} (other users' work included)")


class ThreadShares:
    """The gateway's main thread and its busiest others over a phase, from Linux's
    schedstat: the share of the phase each spent on a core and waiting in the run queue for
    one (the rest it slept: on the GIL, a lock, I/O or an empty queue). The main thread (the
    event loop) is the one whose id is the process's, always shown first; the others by id
    relative to it, oldest first (the gateway's writer thread is the first it starts)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.t0 = time.monotonic()
        self.start = self._sample()

    def _sample(self) -> dict[int, tuple[int, int]]:
        out: dict[int, tuple[int, int]] = {}
        try:
            tasks = list(Path(f"/proc/{self.pid}/task").iterdir())
        except OSError:  # not Linux, or the process is gone
            return out
        for task in tasks:
            try:
                run_ns, wait_ns, _ = (task / "schedstat").read_text().split()
            except (OSError, ValueError):  # gone, or no schedstat (not Linux)
                continue
            out[int(task.name)] = (int(run_ns), int(wait_ns))
        return out

    def line(self, most: int = 3) -> str:
        end = self._sample()
        if not end or not self.start:
            return "threads: not measured (no /proc/<pid>/task/*/schedstat)"
        wall_ns = (time.monotonic() - self.t0) * 1e9
        used = []
        for tid, (run, wait) in end.items():
            run0, wait0 = self.start.get(tid, (0, 0))
            used.append((tid, (run - run0) / wall_ns, (wait - wait0) / wall_ns))
        main = [u for u in used if u[0] == self.pid]
        busiest = sorted((u for u in used if u[0] != self.pid), key=lambda u: -u[1])
        parts = [f"{'main' if tid == self.pid else f'thread {tid - self.pid:+d}'} "
                 f"{run:.2f} on a core, {wait:.2f} waiting for one"
                 for tid, run, wait in main + sorted(busiest[:most - 1])]
        return "threads (share of the phase): " + "; ".join(parts)


def loadgen_cmd(port: int, *, devices: int, prefix: str, duration: float, qos: int, size: int,
                ack: str, rate: float | None, per_device: float | None = None) -> list[str]:
    cmd = [PY, "-m", "tools.loadgen", "--broker", f"127.0.0.1:{port}", "--devices", str(devices),
           "--prefix", prefix, "--duration", str(duration), "--qos", str(qos), "--size", str(size),
           "--ack", ack, "--json"]
    if per_device is not None:
        cmd += ["--per-device", str(per_device)]
    elif rate is None:
        cmd += ["--saturate"]
    else:
        cmd += ["--rate", str(rate)]
    return cmd


def run_json(cmd: list[str], timeout: float) -> dict[str, Any]:
    """Run a loadgen command; its last stdout line is the JSON summary."""
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                       check=False)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(cmd[2:4])} failed (rc={p.returncode}):\n{p.stderr[-2000:]}")
    out = json.loads(lines[-1])
    out["_rc"] = p.returncode
    return out


class Sink:
    """`tools.loadgen --sink` as a child process; follows its `received N` progress lines."""

    def __init__(self, port: int, qos: int) -> None:
        self.proc = subprocess.Popen(
            [PY, "-m", "tools.loadgen", "--sink", "--broker", f"127.0.0.1:{port}", "--qos",
             str(qos), "--progress"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "ready" not in line:
            raise RuntimeError(f"sink did not start: {line!r} "
                               f"{self.proc.stderr.read() if self.proc.stderr else ''}")
        self.received = 0
        self.changed = time.monotonic()
        self.result: dict[str, Any] | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("received "):
                self.received = int(line.split()[1])
                self.changed = time.monotonic()
            elif line.startswith("{"):
                self.result = json.loads(line)

    def finish(self, expect: int, quiet_s: float = 5.0, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until `expect` messages arrived (or none came for `quiet_s`), then stop it."""
        deadline = time.monotonic() + timeout
        while (self.received < expect and time.monotonic() - self.changed < quiet_s
               and time.monotonic() < deadline):
            time.sleep(0.05)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._reader.join(5)
        if self.result is None:
            raise RuntimeError("sink failed: "
                               f"{self.proc.stderr.read()[-2000:] if self.proc.stderr else ''}")
        return self.result


def check_db(db: Path, sent: dict[str, int]) -> dict[str, Any]:
    """Per device: the stored seqs must be exactly 1..sent."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = {r[0]: r[1:] for r in conn.execute(
            "SELECT device, COUNT(*), COUNT(DISTINCT seq), MIN(seq), MAX(seq) FROM events "
            "WHERE seq IS NOT NULL GROUP BY device")}
        overflow = conn.execute("SELECT COUNT(*) FROM events WHERE type = 'journal.overflow'"
                                ).fetchone()[0]
    finally:
        conn.close()
    lost = dup = bad = 0
    stored = 0
    for dev, n in sent.items():
        count, distinct, lo, hi = rows.get(dev, (0, 0, None, None))
        stored += count
        dup += count - distinct
        lost += max(0, n - distinct)
        if n and (lo != 1 or hi != n or distinct != n):
            bad += 1
    extra = sum(r[0] for d, r in rows.items() if d not in sent)
    return {"sent": sum(sent.values()), "stored": stored, "lost": lost, "duplicates": dup,
            "devices_wrong": bad, "overflow_events": overflow, "foreign": extra,
            "ok": lost == 0 and dup == 0 and bad == 0 and overflow == 0}


def load_line() -> str:
    """Machine load right now: load average and CPU pressure (PSI: share of time runnable tasks
    waited for a core), our own processes included; benchmarks print it at start and end."""
    try:
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        load = "?"
    try:
        some = Path("/proc/pressure/cpu").read_text().split("\n", 1)[0].split()
        psi = ", cpu pressure " + " ".join(x for x in some[1:3])
    except (OSError, IndexError):
        psi = ""
    return f"machine load: load average {load}{psi}"


def machine() -> str:
    cpus = os.cpu_count()
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in
                   Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name"))
    except (OSError, StopIteration):
        cpu = "?"
    try:
        mosq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True,
                              check=False).stdout.split("\n")[0]
    except OSError:
        mosq = "mosquitto ?"
    return (f"{cpus} CPUs ({cpu}), {mem:.0f} GiB, {platform.platform(terse=True)}, "
            f"CPython {platform.python_version()}, {mosq.strip()}")


def raw_phase(broker: Mosquitto, a: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    sink = Sink(broker.port, a.qos)
    shares = CpuShares(None, broker.proc.pid)
    try:
        gen = run_json(loadgen_cmd(broker.port, devices=a.devices, prefix="raw",
                                   duration=a.duration, qos=a.qos, size=a.size, ack="mqtt",
                                   rate=a.rate), timeout=a.duration + 120)
        sunk = sink.finish(expect=gen["generated"])
    finally:
        if sink.proc.poll() is None:
            sink.proc.kill()
    sunk["cpu"] = shares.line().replace("loadgen", "loadgen+sink")
    return gen, sunk


def gateway_phase(broker: Mosquitto, work: Path, a: argparse.Namespace
                  ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], BenchGateway]:
    gw = BenchGateway(work / "gw", broker.port, a.gateway_arg, a.gateway_root).start()
    profiler = None
    try:
        if a.profile:
            profiler = subprocess.Popen(
                [str(Path(PY).parent / "py-spy"), "record", "-p", str(gw.pid()), "-d",
                 str(int(a.duration) + 2), "-r", "100", "--threads", "-f", "raw", "-o",
                 str(a.profile)] + (["--gil"] if a.profile_gil else []),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu0 = gw.cpu_s()
        shares = CpuShares(gw.pid(), broker.proc.pid)
        threads = ThreadShares(gw.pid())
        gen = run_json(loadgen_cmd(gw.broker_port, devices=a.devices, prefix="ld",
                                   duration=a.duration, qos=a.qos, size=a.size, ack="app",
                                   rate=a.rate), timeout=a.duration + 180)
        gen["gateway_cpu_s"] = gw.cpu_s() - cpu0
        gen["cpu"] = shares.line()
        gen["threads"] = threads.line()
        if profiler is not None:
            profiler.wait(60)
        stats = gw.get("/stats")
    finally:
        gw.stop()
    check = check_db(gw.db, gen.get("sent_per_device", {}))
    return gen, stats, check, gw


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI smoke: 20 devices, 2 s per phase")
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of load per phase")
    ap.add_argument("--rate", type=float, default=None,
                    help="offer this many events/s in total (default: saturate)")
    ap.add_argument("--qos", type=int, choices=(0, 1), default=1)
    ap.add_argument("--size", type=int, default=150, help="event payload bytes")
    ap.add_argument("--broker-persistence", action=argparse.BooleanOptionalAction, default=True,
                    help="Mosquitto persistence as the harness runs it (default on)")
    ap.add_argument("--gateway-arg", action="append", default=[],
                    help="extra argument for `python -m gateway` (repeat)")
    ap.add_argument("--broker-nagle", action="store_true",
                    help="Mosquitto without `set_tcp_nodelay true` (the config before the fix)")
    ap.add_argument("--gateway-root", type=Path, default=None,
                    help="run `python -m gateway` from this directory (e.g. a patched copy)")
    ap.add_argument("--skip-raw", action="store_true", help="gateway phase only")
    ap.add_argument("--broker-conf", action="append", default=[], metavar="LINE",
                    help="extra Mosquitto config line (repeat), e.g. 'max_inflight_messages 0'")
    ap.add_argument("--profile", type=Path, default=None,
                    help="py-spy raw profile of the gateway during its phase (needs py-spy)")
    ap.add_argument("--profile-gil", action="store_true",
                    help="with --profile: only the samples of the thread that holds the GIL (how "
                    "much of the phase the GIL was held, and by whom)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="raw and gateway phases alternated this many times on one broker: the "
                    "raw ceiling moves with the machine's load, so the ratio is taken per round "
                    "(each against the raw phase just before it) and its median printed")
    ap.add_argument("--json", type=Path, default=None, help="also write all results here")
    a = ap.parse_args(argv)
    if a.profile_gil and a.profile is None:
        ap.error("--profile-gil needs --profile FILE")
    if a.quick:
        a.devices, a.duration = min(a.devices, 20), min(a.duration, 2.0)

    load = "saturated (16 in flight per device)" if a.rate is None else f"{a.rate:g} events/s offered"
    print(f"ingest benchmark: {a.devices} devices, {load}, QoS {a.qos}, {a.size} B events, "
          f"{a.duration:g} s per phase, broker persistence {'on' if a.broker_persistence else 'off'}"
          + (", broker with Nagle (no set_tcp_nodelay)" if a.broker_nagle else "")
          + (f", gateway from {a.gateway_root}" if a.gateway_root else "")
          + (f", gateway args {' '.join(a.gateway_arg)}" if a.gateway_arg else ""))
    print(f"machine: {machine()}", flush=True)
    print(load_line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="pe-bench-ingest-") as tmp:
        work = Path(tmp)
        broker = BenchBroker(work / "mosq", persistence=a.broker_persistence,
                             nagle=a.broker_nagle, extra=a.broker_conf).start()
        rounds: list[tuple[float, float, bool]] = []
        try:
            for r in range(max(1, a.rounds)):
                raw_gen, sunk = ({}, {}) if a.skip_raw else raw_phase(broker, a)
                gen, stats, check, _ = gateway_phase(broker, work / f"round-{r + 1}", a)
                ok_r = check["ok"] and gen["drained"] and not gen["lost_connections"]
                rounds.append((float(sunk.get("per_s", 0.0)), float(gen["acked_per_s"]), ok_r))
                if a.rounds > 1:
                    raw_r, gw_r, _ = rounds[-1]
                    print(f"round {r + 1}: raw {raw_r:.0f} msgs/s, gateway {gw_r:.0f} events/s, "
                          f"ratio {gw_r / raw_r if raw_r else float('nan'):.2f}, integrity "
                          f"{'OK' if ok_r else 'FAILED'}; {load_line()}", flush=True)
        finally:
            broker.stop()

    raw = float(sunk.get("per_s", 0.0))
    rate = float(gen["acked_per_s"])
    lat = gen["latency_ms"]
    if not a.skip_raw:
        dropped = raw_gen["generated"] - sunk["received"]
        print(f"raw ceiling: {raw:.0f} msgs/s  (plain subscriber; loadgen published "
              f"{raw_gen['generated'] / raw_gen['window_s']:.0f}/s, subscriber received "
              f"{sunk['received']} of {raw_gen['generated']}"
              + (f"; {dropped} never reached it: Mosquitto drops QoS 1 messages beyond "
                 "max_queued_messages for a subscriber that falls behind" if dropped > 0 else "")
              + ")")
        print(f"  raw phase {sunk['cpu']}")
    cpu_us = gen["gateway_cpu_s"] / max(1, gen["generated"]) * 1e6
    print(f"gateway events/s: {rate:.0f}  (persisted and acknowledged in {gen['window_s']:.1f} s; "
          f"gateway CPU {cpu_us:.0f} us/event; {stats.get('ingest_batches', 0)} batches, "
          f"{stats.get('events_persisted', 0) / max(1, stats.get('ingest_batches', 1)):.0f} "
          f"events/batch)")
    print(f"  gateway phase {gen['cpu']}")
    print(f"  gateway {gen['threads']}")
    if not a.skip_raw:
        print(f"ratio: {rate / raw if raw else float('nan'):.2f}  (goal >= 0.6, issue 18)")
    if len(rounds) > 1:
        ratios = [g / r for r, g, _ in rounds if r]
        print(f"over {len(rounds)} rounds (the lines above are the last one's): raw median "
              f"{statistics.median(r for r, _, _ in rounds):.0f} msgs/s (min {min(r for r, _, _ in rounds):.0f}, "
              f"max {max(r for r, _, _ in rounds):.0f}), gateway median "
              f"{statistics.median(g for _, g, _ in rounds):.0f} events/s"
              + (f", ratio median {statistics.median(ratios):.2f} (per round "
                 f"{', '.join(f'{x:.2f}' for x in ratios)})" if ratios else ""))
    print(f"latency publish->persisted (ack) ms: p50 {lat.get('p50', float('nan')):.1f}  "
          f"p99 {lat.get('p99', float('nan')):.1f}  max {lat.get('max', float('nan')):.1f}  "
          f"(n={lat.get('n', 0)})")
    print(f"integrity: {'OK' if check['ok'] and gen['drained'] else 'FAILED'}  "
          f"sent {check['sent']}, stored {check['stored']}, lost {check['lost']}, "
          f"duplicates {check['duplicates']}, overflow {check['overflow_events']}, "
          f"re-sent by devices {gen['resent']}, gateway duplicates {stats.get('duplicates', 0)}, "
          f"unacked at end {gen['unacked']}, rejections {stats.get('rejections', {})}, "
          f"ack failures {stats.get('acks_failed', 0)}")
    print(load_line())
    if a.json:
        a.json.write_text(json.dumps({"raw_loadgen": raw_gen, "sink": sunk, "gateway_loadgen": {
            k: v for k, v in gen.items() if k != "sent_per_device"}, "stats": stats,
            "check": check}, indent=2))
    ok = all(ok_r for _, _, ok_r in rounds)
    if gen["errors"]:
        print("loadgen errors:", gen["errors"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
