"""Scale: many connected devices on one gateway: memory, offline detection, birth storm.

    .venv/bin/python bench/scale.py             # 2,000 devices, 100 of them go offline (~2 min)
    .venv/bin/python bench/scale.py --quick     # CI smoke: 40 devices, 10 go offline
    .venv/bin/python bench/scale.py --devices 5000 --offline 500 --per-device 0.1

One real Mosquitto (the harness config plus `max_connections -1`; the file-descriptor limit
is raised to the hard limit for the broker and the load generators, which need one socket
per device each) and the gateway (`python -m gateway`, SQLite WAL, synchronous=FULL). The
devices are `tools.loadgen` processes speaking docs/protocol.md, one MQTT connection each:

* the fleet (`--devices` minus `--offline`) sends `--per-device` events/s each all along and
  reconnects a lost connection every 0.25 s (new session, birth, re-send of what is not
  acknowledged), like the firmware;
* the doomed group (`--offline` devices) sits idle in a second process.

1. memory: gateway RSS (VmRSS) before any device and once every device is online in the
   gateway's database; figure = delta / devices.
2. offline detection: the doomed process is SIGKILLed (its sockets close, the broker fires
   every last will at once); figure = time until the gateway has committed all of them as
   offline (read from its database). A device that dies silently adds the broker's keepalive
   timeout (1.5 × keepalive) before its will fires; that part is the broker's, not measured.
3. birth storm: the broker is stopped and started again on the same port (persistence on);
   every fleet device reconnects at once with a new session and a birth, the gateway
   reconnects to its persistent session. Figure = time from the broker's restart until the
   gateway has stored the new session of every fleet device. Then the load stops, every
   event must be acknowledged, and the database must hold exactly seqs 1..sent per device
   (nothing lost, no duplicate) and the latest session of every device (no birth lost).

Prints `key: value` figure lines; exits 1 if any device, event or birth is missing.
"""
from __future__ import annotations

import argparse
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.command_rtt import LoadgenProcess
from bench.ingest import BenchBroker, BenchGateway, check_db, machine
from hil.harness import wait_for


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (inherited by the broker and load generators)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class DeviceTable:
    """Read-only view of the gateway's `devices` table (what the gateway has committed)."""

    def __init__(self, db: Path) -> None:
        self.conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)

    def sessions(self, prefix: str) -> dict[str, tuple[int, int]]:
        """device → (session, online) for ids starting with `prefix-`."""
        return {r[0]: (r[1], r[2]) for r in self.conn.execute(
            "SELECT id, session, online FROM devices WHERE id LIKE ?", (prefix + "-%",))}

    def online(self, prefix: str) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM devices WHERE id LIKE ? AND online = 1",
                                 (prefix + "-%",)).fetchone()[0]

    def close(self) -> None:
        self.conn.close()


def fleet_args(port: int, devices: int, prefix: str, per_device: float) -> list[str]:
    args = ["--broker", f"127.0.0.1:{port}", "--devices", str(devices), "--prefix", prefix,
            "--json", "--keepalive", "30", "--drain-timeout", "120"]
    return args + (["--per-device", str(per_device)] if per_device > 0 else ["--rate", "0"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI smoke: 40 devices, 10 go offline")
    ap.add_argument("--devices", type=int, default=2000, help="connected devices in total")
    ap.add_argument("--offline", type=int, default=100, help="devices that go offline at once")
    ap.add_argument("--per-device", type=float, default=0.25,
                    help="events/s each fleet device sends throughout (0: idle)")
    ap.add_argument("--timeout", type=float, default=300.0, help="limit for each phase, s")
    a = ap.parse_args(argv)
    if a.quick:
        a.devices, a.offline, a.timeout = min(a.devices, 40), min(a.offline, 10), 120.0
    if not 0 < a.offline < a.devices:
        ap.error("--offline must be between 1 and --devices - 1")
    n_fleet = a.devices - a.offline
    fds = raise_fd_limit()
    print(f"scale benchmark: {a.devices} devices ({n_fleet} sending {a.per_device:g} events/s "
          f"each, {a.offline} idle that go offline), one MQTT connection each")
    print(f"machine: {machine()}; fd limit {fds}"
          + ("" if fds > a.devices + 200 else " (TOO LOW for the broker: raise ulimit -n)"),
          flush=True)
    ok = True
    with tempfile.TemporaryDirectory(prefix="pe-bench-scale-") as tmp:
        work = Path(tmp)
        broker = BenchBroker(work / "mosq", extra=["max_connections -1"]).start()
        gw = BenchGateway(work / "gw", broker.port).start()
        table = DeviceTable(gw.db)
        fleet = doomed = None
        try:
            time.sleep(1.0)
            rss0 = rss_kb(gw.pid())
            t0 = time.monotonic()
            fleet = LoadgenProcess(fleet_args(broker.port, n_fleet, "sc", a.per_device)
                                   + ["--reconnect", "0.25"])
            fleet.wait_started(a.timeout)
            doomed = LoadgenProcess(fleet_args(broker.port, a.offline, "off", 0))
            doomed.wait_started(a.timeout)
            wait_for(lambda: table.online("sc") + table.online("off") == a.devices, a.timeout,
                     what="every device online in the gateway's DB")
            connect_s = time.monotonic() - t0
            time.sleep(2.0)  # settle: the figure is the steady state, not the connect burst
            rss1 = rss_kb(gw.pid())
            print(f"memory: gateway RSS {rss0 / 1024:.1f} MB with no device, {rss1 / 1024:.1f} MB "
                  f"with {a.devices} online: {(rss1 - rss0) / a.devices:.1f} KB per device "
                  f"(all {a.devices} connected, born and online in {connect_s:.1f} s)", flush=True)

            # offline: every socket of the doomed process closes at once, their wills fire
            t_kill = time.monotonic()
            doomed.proc.kill()
            first = wait_for(lambda: table.online("off") < a.offline and time.monotonic(),
                             a.timeout, interval=0.005, what="the first device marked offline")
            wait_for(lambda: table.online("off") == 0, a.timeout, interval=0.005,
                     what=f"all {a.offline} devices marked offline")
            t_all = time.monotonic()
            doomed.proc.wait()
            print(f"offline detection: {a.offline} devices killed at once, all marked offline by "
                  f"the gateway in {(t_all - t_kill) * 1000:.0f} ms (first after "
                  f"{(first - t_kill) * 1000:.0f} ms); {n_fleet} others still online: "
                  f"{table.online('sc')}", flush=True)

            # birth storm: restart the broker, everything reconnects at once
            before = table.sessions("sc")
            broker.stop()
            time.sleep(0.5)
            broker.start()
            t_up = time.monotonic()

            def reborn() -> bool:
                now = table.sessions("sc")
                return sum(1 for d, (s, on) in now.items() if on and s > before[d][0]) == n_fleet
            wait_for(reborn, a.timeout, interval=0.05,
                     what=f"all {n_fleet} devices back online with a new session")
            storm_s = time.monotonic() - t_up
            time.sleep(2.0)  # keep the load on a little after the storm
            summary = fleet.stop(timeout=a.timeout)
            fleet = None
            stats = gw.get("/stats")
        finally:
            for proc in (fleet, doomed):
                if proc is not None and proc.proc.poll() is None:
                    proc.proc.kill()
                    proc.proc.wait()
            table_final = table.sessions("sc")
            table.close()
            gw.stop()
            broker.stop()
        check = check_db(gw.db, summary["sent_per_device"])
    sessions = summary["session_per_device"]
    births_stored = sum(1 for d, s in sessions.items() if table_final.get(d, (0, 0))[0] == s)
    print(f"birth storm: broker restarted; all {n_fleet} devices reconnected and re-born in the "
          f"gateway's DB {storm_s:.2f} s after the broker was back ({summary['reconnects']} "
          f"device reconnects, {summary['births']} births sent in the run, {summary['resent']} "
          f"events re-sent; gateway MQTT connects {stats['mqtt']['connects']})", flush=True)
    birth_ok = births_stored == n_fleet
    ok &= check["ok"] and birth_ok and summary["drained"]
    print(f"integrity: {'OK' if ok else 'FAILED'}  events sent {check['sent']}, persisted "
          f"{check['stored']}, lost {check['lost']}, duplicates {check['duplicates']}; latest "
          f"session stored for {births_stored} of {n_fleet} devices; unacked at end "
          f"{summary['unacked']}; rejections {stats.get('rejections', {})}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
