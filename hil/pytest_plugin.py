"""pytest plugin: run HIL scenarios on a chosen rig and keep a trace of each run.

Register it in tests/conftest.py (``pytest_plugins = ["hil.pytest_plugin"]``), then::

    pytest tests/hil/test_hil_scenarios.py                          # the virtual rig (default)
    pytest --rig virtual:boards/rigs/bench-1.json ...           # the bench's devices and tags, virtually
    pytest --rig pi:boards/rigs/bench-1.json ...                # the real bench
    pytest --trace-dir artifacts/traces --junitxml report.xml   # keep every trace; JUnit XML out

Fixtures:

* ``rig`` — a `hil.rig.Rig` with a fresh trace, the world reset (tags off, inputs idle) and a
  broker tap recording every protocol message. Virtual: a new virtual store per test (its
  firmware processes start on ``device.start()``). Pi: one `PiRig` for the session.
* ``rig_broker`` — (host, port) of the broker the rig's devices use; point a gateway at it.

After each test that uses ``rig``, when it failed (or always, with ``--trace-dir``), the plugin
writes ``<test>.vcd`` (GTKWave/PulseView), ``<test>.png`` (timeline), ``<test>.json`` (raw
trace) and ``<test>.console-<dev>.log`` to the trace dir (default ``artifacts/traces``), lists
them in the report and adds them as JUnit ``<property>`` entries. A reset the rig did not cause
(watchdog, crash, boot loop, a firmware process that died) fails the test at teardown.

Marker: ``@pytest.mark.rig_kinds("locker-bank")`` skips a scenario on a rig without such a
device (a bench with only a pad skips the locker scenarios instead of failing them).
``@pytest.mark.rig_own_broker``: the scenario takes the broker down (`rig.broker_down()`); on
the virtual rig it gets a Mosquitto of its own, on a Pi the wiring's `broker.stop/start`.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from hil.rig import Rig, VirtualRigBackend, parse_rig_option

ROOT = Path(__file__).resolve().parents[1]
_REPORTS = pytest.StashKey[dict]()
_OWN_BROKER = pytest.StashKey[object]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("hil", "hardware-in-the-loop rigs")
    g.addoption("--rig", default="virtual", metavar="virtual|virtual:<wiring>|pi:<wiring>",
                help="rig to run HIL scenarios on (default: virtual, boards/rigs/virtual.json)")
    g.addoption("--trace-dir", default=None, metavar="DIR",
                help="write VCD/PNG/JSON traces of every scenario here (default: failures only, "
                     "to artifacts/traces)")
    g.addoption("--no-protocol-trace", action="store_true", default=False,
                help="do not subscribe to the broker to record protocol messages in traces")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "rig_kinds(*kinds): skip unless the rig has devices of these kinds")
    config.addinivalue_line("markers", "rig_own_broker: the scenario stops/starts the broker (rig.broker_down/"
                                       "broker_up); virtual: a broker of its own, Pi: the wiring's broker commands")
    try:
        parse_rig_option(config.getoption("--rig"))
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    rep = outcome.get_result()
    item.stash.setdefault(_REPORTS, {})[rep.when] = rep


def _failed(item: pytest.Item) -> bool:
    reps = item.stash.get(_REPORTS, {})
    return any(r.failed for r in reps.values())


def _stem(nodeid: str) -> str:
    name = nodeid.split("::", 1)[-1] if "::" in nodeid else nodeid
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:120]


@pytest.fixture(scope="session")
def _pi_rig(request: pytest.FixtureRequest):
    kind, path = parse_rig_option(request.config.getoption("--rig"))
    if kind != "pi":
        yield None
        return
    from hil.pi.rig import PiRig

    log_dir = Path(request.config.getoption("--trace-dir") or ROOT / "artifacts" / "traces")
    rig = PiRig(path, log_dir=log_dir)
    yield rig
    rig.close()


@pytest.fixture
def rig_broker(request: pytest.FixtureRequest, _pi_rig) -> tuple[str, int]:
    if _pi_rig is not None:
        return _pi_rig.broker
    if request.node.get_closest_marker("rig_own_broker"):  # the scenario stops and restarts it
        from hil.harness import Mosquitto

        b = Mosquitto(request.getfixturevalue("tmp_path") / "rig-own-broker").start()
        request.addfinalizer(b.stop)
        request.node.stash[_OWN_BROKER] = b
        return ("127.0.0.1", b.port)
    try:
        b = request.getfixturevalue("broker")  # the suite's session Mosquitto (tests/conftest.py)
    except pytest.FixtureLookupError:
        from hil.harness import Mosquitto

        tmp = request.getfixturevalue("tmp_path_factory").mktemp("rig-broker")
        b = Mosquitto(tmp).start()
        request.addfinalizer(b.stop)
    return ("127.0.0.1", b.port)


@pytest.fixture
def rig(request: pytest.FixtureRequest, _pi_rig, rig_broker, tmp_path) -> Rig:
    kind, path = parse_rig_option(request.config.getoption("--rig"))
    if kind == "pi":
        r: Rig = _pi_rig
        r.begin(request.node.nodeid)
        r.reset_world()
    else:
        r = VirtualRigBackend(tmp_path / "rig", rig_broker, wiring=path)
        r.trace.title = request.node.nodeid
        r.broker_control = request.node.stash.get(_OWN_BROKER, None)
    marker = request.node.get_closest_marker("rig_kinds")
    if marker:
        missing = [k for k in marker.args if not r.has_kind(k)]
        if missing:
            if kind != "pi":
                r.close()
            pytest.skip(f"rig {r.name!r} has no {', '.join(missing)}")
    if not request.config.getoption("--no-protocol-trace"):
        r.tap_broker()
    r.trace.step(f"begin {request.node.nodeid} on {r.backend} rig {r.name}")
    try:
        yield r
    finally:
        r.trace.step("end")
        r.trace.stop()
        unexpected = r.unexpected_resets()
        trace_dir = request.config.getoption("--trace-dir")
        if trace_dir or _failed(request.node) or unexpected:
            out = Path(trace_dir) if trace_dir else ROOT / "artifacts" / "traces"
            paths = write_artifacts(r, out, _stem(request.node.nodeid))
            for p in paths:
                request.node.user_properties.append(("hil_artifact", str(p)))
            request.node.add_report_section("teardown", "hil trace", "\n".join(str(p) for p in paths))
        if kind != "pi":  # the Pi rig (and its broker tap) lives for the session
            r.close()
        if unexpected:
            pytest.fail("resets the rig did not cause:\n" + "\n".join(unexpected), pytrace=False)


def write_artifacts(r: Rig, out: Path, stem: str) -> list[Path]:
    """VCD, PNG and JSON of the rig's trace plus the devices' console logs."""
    from hil.timeline import write_timeline
    from hil.vcd import write_vcd

    out.mkdir(parents=True, exist_ok=True)
    paths = [write_vcd(r.trace, out / f"{stem}.vcd"), r.trace.save_json(out / f"{stem}.json")]
    try:
        paths.append(write_timeline(r.trace, out / f"{stem}.png"))
    except ImportError:  # Pillow missing: the VCD is the record
        pass
    paths += r.collect_logs(out, stem=f"{stem}.")
    return paths
