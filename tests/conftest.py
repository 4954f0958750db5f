import pytest

# Every fixture shared between test files, registered here once (pytest reads pytest_plugins
# from the root conftest only); their helpers are imported from tests/support/ by name.
pytest_plugins = ["hil.pytest_plugin", "pytester",
                  "tests.support.browser",   # browser (headless Chromium)
                  "tests.support.fitting",   # fitting_gw, room
                  "tests.support.lockers"]   # bank, gateway_args

from hil.harness import GatewayProcess, Mosquitto


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """One real Mosquitto for the whole session (tests use distinct device ids)."""
    b = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    yield b
    b.stop()


@pytest.fixture
def own_broker(tmp_path):
    """A broker this test may stop, pause and restart (outage tests)."""
    b = Mosquitto(tmp_path / "mosquitto").start()
    yield b
    b.stop()


@pytest.fixture
def gw_store(tmp_path):
    """A migrated gateway database of its own (gateway.storage.store.Store), for tests of the write
    path without a running gateway."""
    from gateway.storage.store import Store, connect_all

    conn = connect_all(tmp_path / "gw.db")  # the command file attached: one Store for both
    yield Store(conn)
    conn.close()


@pytest.fixture
def gw(tmp_path, broker):
    """A gateway process of its own on the session broker (files in tmp_path/gw). Tests that
    need other options or a longer life define their own `gw`."""
    g = GatewayProcess(tmp_path / "gw", broker.port).start()
    yield g
    g.stop()


@pytest.fixture
def pins():
    """gpiozero's mock pins for the Raspberry Pi code (tag station, Pi rig)."""
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    Device.pin_factory = MockFactory()
    yield Device.pin_factory
    Device.pin_factory.reset()  # close() does not release mock pins
