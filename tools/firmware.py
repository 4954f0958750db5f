"""`phygital firmware`: build a firmware bundle, upload it to a gateway, roll it out (docs/ota.md).

    phygital firmware build --version 0.2.0 -o var/fw-0.2.0.zip

(`upload | rollout | status | halt` against the gateway's API come next: docs/ota.md.)

The bundle is the firmware's `edge/**.py` (the list `tools.deploy.firmware_sources()` gives,
without main.py: a device's main.py picks the set and is never replaced over the air),
compiled with mpy-cross, plus a manifest (gateway/devices/ota.py).
"""
from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="phygital firmware", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="compile firmware/ into a bundle (zip)")
    b.add_argument("--version", required=True, help="the bundle's version (what births report)")
    b.add_argument("-o", "--output", type=Path, required=True)
    b.add_argument("--kind", action="append", help="target kind (repeatable; default: every kind)")
    b.add_argument("--board", action="append", help="target board (repeatable; default: every board file)")
    b.add_argument("--min-heap", type=int, default=MIN_HEAP, help="bytes of heap a device needs")
    # upload | rollout | status | halt (the gateway's /firmware routes): docs/ota.md "What is left"
    args = ap.parse_args(argv)
    try:
        if args.cmd == "build":
            data = build(args.version, kinds=args.kind, boards=args.board, min_heap=args.min_heap)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_bytes(data)
            s = read_bundle(data).summary()
            print(f"{args.output}: {s['files']} files, {s['bytes']} bytes, version {s['version']}")
            return 0
        raise AssertionError(args.cmd)
    except BundleError as exc:
        print(f"firmware: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
