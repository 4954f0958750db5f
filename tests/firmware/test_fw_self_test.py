"""Every app's self-test before an update is confirmed (docs/ota.md, "Trial and confirmation"),
with the real firmware of each kind in the virtual store against a real Mosquitto.

The trial is planted as a download leaves it (test_fw_ota.py shows the download and the switch):
the bundle of firmware 9.0.0 in ota/a, state.json naming it `try`, on its last boot (`n` = 2 of
main.py's 3). For the rollback the trial window is 6 s instead of 5 min (the bundle's
edge/ota_trial.py, patched); the trial that is mended keeps the 5 min (no race with the test).
With its hardware at fault, each app's self-test says why, the trial is not confirmed, the board
resets when the window ends and main.py goes back to the factory firmware, which reports
`ota.rolled_back`; with its hardware sound, the same trial is confirmed."""
from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hil.harness import wait_for
from hil.sim.firmware import FIRMWARE, FirmwareProcess
from hil.sim.store import VirtualStore
from tools.firmware import build

TRIAL_SRC = (FIRMWARE / "edge" / "ota_trial.py").read_text()


@pytest.fixture(scope="module")
def short_trial() -> bytes:
    assert "TRIAL_MS = 300000" in TRIAL_SRC
    return build("9.0.0", patch={"edge/ota_trial.py": TRIAL_SRC.replace("TRIAL_MS = 300000", "TRIAL_MS = 6000")})


@pytest.fixture(scope="module")
def trial() -> bytes:
    return build("9.0.0")


def plant_trial(fw: FirmwareProcess, bundle: bytes, n: int) -> None:
    """ota/a as the download and the switch leave it: the set, its version, `try` = a."""
    d = fw.workdir / "ota" / "a"
    with zipfile.ZipFile(io.BytesIO(bundle)) as z:
        for name in z.namelist():
            if name.startswith("edge/"):
                (d / name).parent.mkdir(parents=True, exist_ok=True)
                (d / name).write_bytes(z.read(name))
    (d / "version").write_text("9.0.0")
    (fw.workdir / "ota" / "state.json").write_text(json.dumps({"cur": None, "try": "a", "n": n}))


def _state(fw: FirmwareProcess) -> dict:
    return json.loads((fw.workdir / "ota" / "state.json").read_text())


def _tube(kind: str, app: dict) -> Callable[[VirtualStore, str], Any]:
    def add(store: VirtualStore, dev: str) -> Any:  # a tube board alone, its inputs set by the test
        store.devices[dev] = FirmwareProcess(store._config(dev, kind, app), store.workdir, store.heap)
        return None
    return add


def _doors(sim, v: int) -> None:
    for n in (1, 2):
        sim.set_input(f"door_{n}", v)


def _limits(sim, v: int) -> None:
    sim.set_input("d1.left", v)
    sim.set_input("d1.right", v)


# kind: (add it to the store, break its hardware, mend it, the self-test's reason)
APPS: dict[str, tuple[Callable[[VirtualStore, str], Any], Callable, Callable, str]] = {
    "sample-pad": (lambda s, d: s.add_pad(d),
                   lambda sim, st: st.update(chip=sim.spi.pop("rfid")),  # off the bus: MISO reads 0xFF
                   lambda sim, st: sim.spi.__setitem__("rfid", st["chip"]),
                   r"reader: no answer \(VersionReg 0xff\)"),
    "fitting-room": (lambda s, d: s.add_fitting_room(d),
                     lambda sim, st: st.update(chip=sim.spi.pop("rfid")),
                     lambda sim, st: sim.spi.__setitem__("rfid", st["chip"]),
                     r"reader: no answer \(VersionReg 0xff\)"),
    "locker-bank": (lambda s, d: s.add_locker(d, ["S", "M"]),
                    lambda sim, st: _doors(sim, 1),  # the door harness unplugged: every reed reads open
                    lambda sim, st: _doors(sim, 0),
                    r"doors: every door reads open"),
    "tube-station": (_tube("tube-station", {"station": "s1"}),
                     lambda sim, st: sim.set_input("estop", 1),  # the loop open: pressed or cut
                     lambda sim, st: sim.set_input("estop", 0),
                     r"e-stop: the loop reads open"),
    "tube-line": (_tube("tube-line", {"diverters": [{"id": "d1", "positions": ["left", "right"],
                                                     "travel_ms": 500}]}),
                  lambda sim, st: _limits(sim, 1),  # both position switches closed: a short
                  lambda sim, st: (_limits(sim, 0), sim.set_input("d1.left", 1)),
                  r"diverter d1: 2 position switches closed, 1 expected"),
    "door-counter": (lambda s, d: s.add("door-counter", d),
                     lambda sim, st: (sim.set_input("beam_a", 1), sim.set_input("beam_b", 1)),
                     lambda sim, st: (sim.set_input("beam_a", 0), sim.set_input("beam_b", 0)),
                     r"beams: both read blocked"),
    "rack-display": (lambda s, d: s.add("rack-display", d),
                     lambda sim, st: sim.faulty.add("display"),  # its SPI bus errs
                     lambda sim, st: sim.faulty.discard("display"),
                     r"display: not drawn \(OSError\('rig: SPI display: bus fault'"),
}


@pytest.fixture
def store(tmp_path: Path, broker):
    s = VirtualStore(tmp_path, broker_port=broker.port, keepalive=5)
    yield s
    s.stop()


def _device(store: VirtualStore, kind: str, bundle: bytes, n: int, broken: bool):
    add, brk, mend, reason = APPS[kind]
    dev = f"st-{kind}"
    add(store, dev)
    fw, sim = store.devices[dev], store.rig.device(dev)
    if kind == "tube-line":
        mend(sim, {})  # at rest at a position, as the switch leaves it
    st: dict = {}
    if broken:
        brk(sim, st)
    plant_trial(fw, bundle, n)
    return fw, sim, st, mend, reason


@pytest.mark.parametrize("kind", list(APPS))
def test_a_trial_whose_hardware_fails_its_self_test_is_not_confirmed_and_rolls_back(store, short_trial, kind):
    fw, _sim, _st, _mend, reason = _device(store, kind, short_trial, 2, broken=True)
    fw.start()
    fw.wait_line(r"boot \d+ fw 9\.0\.0", 20)  # the trial runs (its 3rd and last boot)
    fw.wait_line(r"ota: self-test: " + reason, 20)
    wait_for(lambda: not fw.alive(), 20, what="the reset when the trial window ends")
    assert fw.proc is not None and fw.proc.returncode == 3, fw.lines[-20:]  # hal.reset()
    assert not [ln for ln in fw.lines if "ota: confirmed" in ln], fw.lines[-20:]
    assert _state(fw)["cur"] is None and _state(fw)["n"] == 3
    start = len(fw.lines)
    fw.start()  # the 4th boot: main.py gives up on the trial, the factory firmware reports it
    fw.wait_line(r"boot \d+ fw 0\.1\.0", 20, start)
    wait_for(lambda: _state(fw)["back"] is None and _state(fw)["try"] is None and _state(fw)["n"] == 0,
             20, what="ota.rolled_back reported")
    assert _state(fw)["cur"] is None


@pytest.mark.parametrize("kind", list(APPS))
def test_a_trial_is_confirmed_once_the_hardware_answers(store, trial, kind):
    fw, sim, st, mend, reason = _device(store, kind, trial, 0, broken=True)
    fw.start()
    fw.wait_line(r"ota: self-test: " + reason, 20)
    assert _state(fw)["cur"] is None  # the trial stays a trial
    mend(sim, st)
    fw.wait_line(r"ota: confirmed 9\.0\.0", 20)
    assert _state(fw) == {"cur": "a", "try": None, "n": 0}
