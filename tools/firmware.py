"""`phygital firmware`: build a firmware bundle, upload it to a gateway, roll it out (docs/ota.md).

    phygital firmware build --version 0.2.0 -o var/fw-0.2.0.zip
    phygital firmware upload var/fw-0.2.0.zip
    phygital firmware rollout 0.2.0 [--canary pad-1] [--percent 25] [--device pad-1 ...]
    phygital firmware status [ROLLOUT_ID]          # bundles and rollouts, or one rollout
    phygital firmware halt ROLLOUT_ID

The bundle is the firmware's `edge/**.py` (the list `tools.deploy.firmware_sources()` gives,
without main.py: a device's main.py picks the set and is never replaced over the air),
compiled with mpy-cross, plus a manifest (gateway/devices/ota.py).

upload, rollout and halt need a token with the admin scope, status one with read (`--token`,
default $PHYGITAL_TOKEN); `--url` is the gateway (default $PHYGITAL_URL or
http://127.0.0.1:8080). Exit codes: 0 done, 1 refused (the reason is printed), 2 a bundle
that cannot be built, 3 gateway unreachable.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from gateway.devices.ota import BundleError, make_bundle, read_bundle
from tools.deploy import firmware_sources
from tools.gateway_api import UNREACHABLE, call, refused

BOARDS = ("esp32-devkitc", "esp32-tube-station", "rp2-pico-w", "rp2-tube-line", "sim")
# The GC heap a device reports (gc.mem_free() + gc.mem_alloc()) for a 96 KB heap: the heap goal.
# `micropython -X heapsize=96k` gives 97,024 B (the rest is the GC's allocation table), so a
# min_heap of 96 * 1024 refused every 96 KB device with heap-too-small.
MIN_HEAP = 94 * 1024


def build(version: str, *, kinds: list[str] | None = None, boards: list[str] | None = None,
          min_heap: int = MIN_HEAP, patch: dict[str, str] | None = None) -> bytes:
    """A bundle of the firmware as it is in firmware/ (`patch`: {path: source} replaces or
    adds files, for test variants)."""
    from gateway.kinds.registry import device_kinds
    from hil.sim.firmware import mpy_cross_binary

    sources = {rel: src.read_text() for rel, src in firmware_sources() if rel != "main.py"}
    sources.update(patch or {})
    files: list[tuple[str, bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for rel in sorted(sources):
            src = Path(tmp) / rel
            src.parent.mkdir(parents=True, exist_ok=True)
            src.write_text(sources[rel])
            out = src.with_suffix(".mpy")
            r = subprocess.run([mpy_cross_binary(), "-o", str(out), "-s", rel, str(src)],
                               capture_output=True, text=True, check=False)
            if r.returncode != 0:
                raise BundleError(f"mpy-cross failed on {rel}: {r.stderr.strip()}")
            files.append((Path(rel).with_suffix(".mpy").as_posix(), out.read_bytes()))
    data = make_bundle(version, files, kinds or list(device_kinds()), list(boards or BOARDS), min_heap)
    read_bundle(data)  # what the gateway will check
    return data


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="phygital firmware", description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--url", default=os.environ.get("PHYGITAL_URL", "http://127.0.0.1:8080"),
                    help="the gateway's HTTP API (default $PHYGITAL_URL or http://127.0.0.1:8080)")
    ap.add_argument("--token", default=None, help="API token: admin for upload, rollout and halt, "
                    "read for status (default: $PHYGITAL_TOKEN; docs/security.md)")
    ap.add_argument("--timeout", type=float, default=60.0, help="HTTP timeout in seconds")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="compile firmware/ into a bundle (zip)")
    b.add_argument("--version", required=True, help="the bundle's version (what births report)")
    b.add_argument("-o", "--output", type=Path, required=True)
    b.add_argument("--kind", action="append", help="target kind (repeatable; default: every kind)")
    b.add_argument("--board", action="append", help="target board (repeatable; default: every board file)")
    b.add_argument("--min-heap", type=int, default=MIN_HEAP, help="bytes of heap a device needs")
    u = sub.add_parser("upload", help="give the gateway a bundle (POST /firmware)")
    u.add_argument("bundle", type=Path, help="the zip `phygital firmware build` wrote")
    r = sub.add_parser("rollout", help="start a staged rollout: the canary, a percentage, then all")
    r.add_argument("version", help="an uploaded bundle's version")
    r.add_argument("--device", action="append", dest="devices",
                   help="a device to update (repeatable; default: every device of the bundle's kinds)")
    r.add_argument("--canary", help="the first device, alone (default: the first id)")
    r.add_argument("--percent", type=int, default=25, help="the second stage: this share of the others")
    r.add_argument("--deadline", type=int, default=600,
                   help="seconds a device has to come back on the version before the rollout halts")
    s = sub.add_parser("status", help="bundles and rollouts, or one rollout device by device")
    s.add_argument("rollout", nargs="?", help="a rollout id (ro-...)")
    h = sub.add_parser("halt", help="halt a rollout: nothing more is offered, downloads stop")
    h.add_argument("rollout", help="the rollout id (ro-...)")
    return ap


def _api(args: argparse.Namespace) -> tuple[str, str, dict[str, Any]]:
    """(method, path, httpx keywords) of an API command."""
    if args.cmd == "upload":
        try:
            data = args.bundle.read_bytes()
        except OSError as exc:
            raise BundleError(f"cannot read {args.bundle}: {exc.strerror}") from None
        return "POST", "/firmware", {"content": data, "headers": {"Content-Type": "application/zip"}}
    if args.cmd == "rollout":
        body = {"version": args.version, "devices": args.devices, "canary": args.canary,
                "percent": args.percent, "deadline_s": args.deadline}
        return "POST", "/firmware/rollouts", {"json": {k: v for k, v in body.items() if v is not None}}
    if args.cmd == "status":
        return "GET", f"/firmware/rollouts/{args.rollout}" if args.rollout else "/firmware", {}
    return "POST", f"/firmware/rollouts/{args.rollout}/halt", {}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.cmd == "build":
            data = build(args.version, kinds=args.kind, boards=args.board, min_heap=args.min_heap)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_bytes(data)
            s = read_bundle(data).summary()
            print(f"{args.output}: {s['files']} files, {s['bytes']} bytes, version {s['version']}")
            return 0
        method, path, kw = _api(args)
    except BundleError as exc:
        print(f"firmware: {exc}", file=sys.stderr)
        return 2
    answer = call(args.url, method, path, args.token, args.timeout, **kw)
    if answer is None:
        return UNREACHABLE
    return refused(*answer)

if __name__ == "__main__":
    sys.exit(main())
