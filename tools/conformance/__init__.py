"""Conformance kit: runs the device contract (docs/protocol.md) against any device, ours or
another team's, and prints a pass/fail line per clause.

    python -m tools.conformance --dev pad-7 \\
        --device-cmd "python my_device.py --config {config}"      # the kit launches it
    python -m tools.conformance --dev pad-7 --broker 10.0.0.5:1883   # a device already running
    python -m tools.conformance --dev pad-7 --transport coap --device-cmd "..."   # over CoAP
    phygital conformance ...                                         # the same

Over MQTT the kit starts its own Mosquitto on a free loopback port (unless `--broker` is
given); over CoAP it serves the CoAP resources itself (tools/conformance/coap.py: the gateway's
own CoAP edge and authentication, with a throwaway key it writes into the device's config).
It plays the gateway for the device (acks, commands, rebirths) and drives it with the test
hook, the `conformance` command (docs/protocol.md "Conformance")."""
from __future__ import annotations

import argparse
import json
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tools.conformance.clauses import CLAUSES, DOC, Broken, Clause, Ctx, Skipped
from tools.conformance.link import MqttGatewaySide

PLACEHOLDERS = "{config} {host} {port} {dev} {workdir}"


@dataclass
class Result:
    clause: Clause
    status: str  # "pass" | "fail" | "skip" | "n/a" (the clause has no meaning over this transport)
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Report:
    dev: str
    transport: str
    broker: str
    results: list[Result] = field(default_factory=list)
    error: str | None = None  # the run could not start (no birth, no broker, ...)

    @property
    def failed(self) -> list[str]:
        return [r.clause.id for r in self.results if r.status == "fail"]

    @property
    def passed(self) -> list[str]:
        return [r.clause.id for r in self.results if r.status == "pass"]

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed and bool(self.results)

    def text(self) -> str:
        where = "broker" if self.transport == "mqtt" else "gateway"
        head = f"conformance of {self.dev} over {self.transport} ({where} {self.broker}), clauses of {DOC}"
        lines = [head]
        if self.error:
            lines.append(f"ERROR  {self.error}")
        w = max([len(r.clause.id) for r in self.results] + [4])
        for r in self.results:
            lines.append(f"{r.status.upper():5} {r.clause.id:{w}}  {r.clause.section} "
                         f"(#{r.clause.anchor}): {r.clause.says}")
            if r.detail:
                lines.append(f"{'':5} {'':{w}}  -> {r.detail}")
        n = {s: sum(1 for r in self.results if r.status == s) for s in ("pass", "fail", "skip", "n/a")}
        lines.append(f"{n['pass']} passed, {n['fail']} failed, {n['skip']} skipped, "
                     f"{n['n/a']} not applicable over {self.transport}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"dev": self.dev, "transport": self.transport, "ok": self.ok, "error": self.error,
                "clauses": [{"id": r.clause.id, "section": r.clause.section,
                             "anchor": f"{DOC}#{r.clause.anchor}", "status": r.status,
                             "detail": r.detail, "seconds": round(r.seconds, 2)} for r in self.results]}


@dataclass
class Options:
    dev: str
    device_cmd: str | None = None
    device_config: dict | None = None  # merged under what the kit writes (board, data dir, ...)
    broker: tuple[str, int] | None = None
    workdir: Path | None = None
    timeout: float = 20.0
    boot_timeout: float = 60.0
    only: list[str] | None = None
    kind: str = "sample-pad"
    keepalive: int = 10  # over CoAP: the heartbeat interval `hb`
    transport: str = "mqtt"
    coap_port: int = 0  # 0: a free one


class Device:
    """A device the kit launches: the config it writes and the process of `--device-cmd`."""

    def __init__(self, opts: Options, host: str, port: int, workdir: Path, key: bytes | None = None):
        cfg = {"device_id": opts.dev, "kind": opts.kind, "data_dir": str(workdir / "flash")}
        cfg.update(opts.device_config or {})
        cfg["device_id"] = opts.dev
        cfg["transport"] = opts.transport
        link = {"host": host, "port": port, "keepalive": opts.keepalive}
        if key is not None:  # the kit's throwaway CoAP key (docs/protocol.md "Conformance")
            link["key"] = key.hex()
        cfg[opts.transport] = {**cfg.get(opts.transport, {}), **link}
        cfg["conformance"] = True
        self.config = workdir / "device-config.json"
        self.config.write_text(json.dumps(cfg, indent=1))
        subst = {"config": str(self.config), "host": host, "port": str(port), "dev": opts.dev,
                 "workdir": str(workdir)}
        try:
            self.argv = [a.format(**subst) for a in shlex.split(opts.device_cmd)]
        except (KeyError, IndexError, ValueError) as e:
            raise SystemExit(f"--device-cmd: bad placeholder {e} (known: {PLACEHOLDERS}; "
                             "write {{ and }} for literal braces)") from None
        self.log = workdir / "device.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run(opts: Options, out=None) -> Report:
    """Run the clauses (all, or `opts.only`) and return the report; `out`: print progress."""
    def say(line: str) -> None:
        if out is not None:
            print(line, file=out, flush=True)

    clauses = [c for c in CLAUSES if not opts.only or c.id in opts.only]
    unknown = set(opts.only or ()) - {c.id for c in CLAUSES}
    if unknown:
        raise SystemExit(f"unknown clause(s) {sorted(unknown)}; known: {[c.id for c in CLAUSES]}")
    tmp = None
    if opts.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="conformance-")
        opts.workdir = Path(tmp.name)
    workdir = Path(opts.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    broker = device = link = None
    try:
        key = None
        if opts.transport == "coap":
            from tools.conformance.coap import CoapGatewaySide
            host = "127.0.0.1"
            link = CoapGatewaySide(host, opts.coap_port, opts.dev, heartbeat_s=opts.keepalive)
            link.start()
            port, key = link.port, link.key
            where = f"coap://{host}:{port}/pe/1/{opts.dev}/birth"
        else:
            if opts.broker:
                host, port = opts.broker
            else:
                from hil.harness import Mosquitto
                broker = Mosquitto(workdir / "broker", persistence=False).start()
                host, port = "127.0.0.1", broker.port
            link = MqttGatewaySide(host, port, opts.dev)
            link.start()
            where = f"pe/1/{opts.dev}/birth"
        report = Report(opts.dev, opts.transport, f"{host}:{port}")
        if opts.device_cmd:
            device = Device(opts, host, port, workdir, key)
            device.start()
            say(f"device started: {' '.join(device.argv)} (console: {device.log})")
        else:
            say(f"waiting for {opts.dev} on {host}:{port} (its config needs \"conformance\": true)")
        ctx = Ctx(link, opts.dev, opts.timeout, device.alive if device else None)
        if link.wait(lambda m: m.channel == "birth", 0, opts.boot_timeout) is None:
            why = "" if device is None or device.alive() else \
                f" (the device process exited {device.proc.returncode}; see {device.log})"
            report.error = (f"no birth from {opts.dev} on {where} within "
                            f"{opts.boot_timeout:.0f} s{why}: check the device id and "
                            f"{'broker' if opts.transport == 'mqtt' else 'gateway'} address")
            return report
        for c in clauses:
            t0 = time.monotonic()
            why = c.not_applicable(opts.transport)
            if why is not None:
                report.results.append(Result(c, "n/a", why))
                say(f"N/A   {c.id}: {why}")
                continue
            try:
                c.check(ctx)
                r = Result(c, "pass")
            except Skipped as e:
                r = Result(c, "skip", str(e))
            except Broken as e:
                r = Result(c, "fail", str(e))
            except Exception as e:  # noqa: BLE001 - a kit bug must not hide the other clauses
                r = Result(c, "fail", f"kit error: {e!r}")
            r.seconds = time.monotonic() - t0
            report.results.append(r)
            say(f"{r.status.upper():5} {c.id}" + (f": {r.detail}" if r.detail else ""))
        return report
    finally:
        if link:
            link.stop()
        if device:
            device.stop()
        if broker:
            broker.stop()
        if tmp is not None:
            tmp.cleanup()


def _hostport(v: str) -> tuple[str, int]:
    host, _, port = v.rpartition(":")
    try:
        return (host or "127.0.0.1"), int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected host:port, got {v!r}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="phygital conformance",
        description=f"Check a device against the device contract ({DOC}), clause by clause.",
        epilog=f"--device-cmd placeholders: {PLACEHOLDERS}. The config the kit writes is JSON: "
               "device_id, kind, transport, data_dir, mqtt.host/port/keepalive (over CoAP: "
               "coap.host/port/keepalive/key, a throwaway key the kit made) and "
               '"conformance": true, over the keys of --device-config. Exit status 0: every '
               "applicable clause passed; 1: a clause failed or was skipped; 2: the run could "
               "not start.")
    ap.add_argument("--dev", required=True, help="the device id (a-z, 0-9, '-')")
    ap.add_argument("--transport", choices=("mqtt", "coap"), default="mqtt")
    ap.add_argument("--device-cmd", help="command line that starts the device (placeholders above)")
    ap.add_argument("--device-config", type=Path,
                    help="JSON object merged into the config the kit writes (e.g. board, app)")
    ap.add_argument("--kind", default="sample-pad", help="kind written to the config (default sample-pad)")
    ap.add_argument("--broker", type=_hostport,
                    help="use this broker (host:port) instead of starting Mosquitto; "
                    "for a device that is already running (MQTT only)")
    ap.add_argument("--coap-port", type=int, default=0,
                    help="UDP port the kit serves CoAP on (default: a free one; {port} in "
                    "--device-cmd)")
    ap.add_argument("--workdir", type=Path, help="keep the device config, flash and console here")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for each answer")
    ap.add_argument("--boot-timeout", type=float, default=60.0, help="seconds to wait for the first birth")
    ap.add_argument("--only", action="append", metavar="CLAUSE",
                    help=f"run only this clause (repeatable): {', '.join(c.id for c in CLAUSES)}")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    a = ap.parse_args(argv)
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", a.dev) or a.dev == "gateway":
        ap.error(f"--dev {a.dev!r}: a device id is 1-32 of a-z, 0-9 and '-' (not first), "
                 "and not `gateway` (docs/protocol.md#encoding)")
    if not 0 < a.timeout <= 600 or not 0 < a.boot_timeout <= 3600:
        ap.error("--timeout must be in (0, 600] s and --boot-timeout in (0, 3600] s")
    if a.transport == "coap" and (a.broker or not a.device_cmd):
        ap.error("over CoAP the kit is the gateway and makes the device's key: give --device-cmd "
                 "(it writes the config with the key; --broker is for MQTT)")
    if not 0 <= a.coap_port < 65536:
        ap.error("--coap-port must be 0-65535 (0: a free port)")
    if not a.device_cmd and not a.broker:
        ap.error("give --device-cmd (the kit starts the device) or --broker (a device already "
                 "running and connected to that broker)")
    device_config = None
    if a.device_config:
        try:
            raw = a.device_config.read_bytes()
            if len(raw) > 65536:
                ap.error(f"--device-config {a.device_config} is over 64 KB: a device config is small")
            device_config = json.loads(raw)
        except (OSError, ValueError) as e:
            ap.error(f"--device-config {a.device_config}: {e}")
        if not isinstance(device_config, dict):
            ap.error("--device-config must hold a JSON object")
    opts = Options(a.dev, a.device_cmd, device_config, a.broker, a.workdir, a.timeout,
                   a.boot_timeout, a.only, a.kind, transport=a.transport, coap_port=a.coap_port)
    report = run(opts, out=None if a.json else sys.stdout)
    print(json.dumps(report.as_dict(), indent=1) if a.json else report.text())
    if report.error:
        return 2
    return 0 if report.ok and not any(r.status == "skip" for r in report.results) else 1


__all__ = ["CLAUSES", "Options", "Report", "main", "run"]
