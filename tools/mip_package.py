"""The firmware as a mip package: ``package.json`` at the repository root.

    python -m tools.mip_package            # check: exit 1 if package.json is stale
    python -m tools.mip_package --write    # regenerate it

mip's package format (micropython-lib, ``mip`` on the board and ``mpremote mip``):
``{"urls": [[dest, src], ...], "deps": [[name, version], ...], "version": ...}``; a relative
``src`` is taken from the folder package.json came from (a local folder, or
``github:owner/repo`` at a branch or tag). The file list is the deploy's
(`tools.deploy.firmware_sources`: ``edge/**.py`` and ``main.py``), the freeze manifest's
(``boards/manifest.py``) and this one: tests/tools/test_mpremote_deploy.py checks that they agree.

Install (``--target /``: a board runs ``/main.py`` and imports ``edge`` from ``/``; mip's
default target ``/lib`` would leave ``main.py`` where the board never runs it):

    mpremote connect /dev/ttyUSB0 mip install --target / package.json
    mpremote connect /dev/ttyUSB0 mip install --target / github:OWNER/REPO@v0.1.0

then ``config.json`` and ``board.json`` with ``mpremote cp`` (or use ``tools.deploy``, which
also validates them, skips unchanged files and waits for the firmware to come up).
No ``deps``: the firmware uses only modules built into the ESP32 and RP2 ports
(docs/hil.md, "micropython-lib").
"""
from __future__ import annotations

import argparse
import json
import re
import sys

from tools.deploy import FIRMWARE, ROOT, firmware_sources

PACKAGE_JSON = ROOT / "package.json"


def firmware_version() -> str:
    m = re.search(r'^FW_VERSION = "([^"]+)"', (FIRMWARE / "edge" / "runtime.py").read_text(), re.MULTILINE)
    if not m:
        raise SystemExit("firmware/edge/runtime.py has no FW_VERSION = \"...\" line")
    return m.group(1)


def build() -> dict:
    return {"urls": [[dest, src.relative_to(ROOT).as_posix()] for dest, src in firmware_sources()],
            "deps": [],
            "version": firmware_version()}


def render() -> str:
    pkg = build()
    lines = ",\n".join(f"    {json.dumps(u)}" for u in pkg["urls"])
    return (f'{{\n  "urls": [\n{lines}\n  ],\n  "deps": {json.dumps(pkg["deps"])},\n'
            f'  "version": {json.dumps(pkg["version"])}\n}}\n')


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.mip_package",
                                 description="Check or write package.json, the firmware's mip package.")
    ap.add_argument("--write", action="store_true", help="regenerate package.json")
    args = ap.parse_args(argv)
    text = render()
    if args.write:
        PACKAGE_JSON.write_text(text)
        print(f"wrote {PACKAGE_JSON.relative_to(ROOT)} ({len(build()['urls'])} files)")
        return 0
    current = PACKAGE_JSON.read_text() if PACKAGE_JSON.exists() else ""
    if current != text:
        print("package.json does not match the firmware's files: run python -m tools.mip_package --write "
              "and commit it", file=sys.stderr)
        return 1
    print("package.json is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
