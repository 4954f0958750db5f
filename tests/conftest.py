import pytest

pytest_plugins = ["hil.pytest_plugin", "pytester"]

from tests.support.support import Mosquitto


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
    from gateway.storage.store import Store, connect, migrate

    conn = connect(tmp_path / "gw.db")
    migrate(conn)
    yield Store(conn)
    conn.close()
