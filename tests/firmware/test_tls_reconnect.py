"""MQTT over TLS (firmware/edge/tls.py) across reconnects, in the real MicroPython binary,
against the production broker config (tools/provision.py: TLS listener, store CA, ACL).

On rp2 mbedTLS allocates from the MicroPython heap: an SSL context (the parsed store CA, the
DRBG) and, per connection, a 16 KB input and a 4 KB output record buffer. A reconnect that
builds a new context while the lost connection's socket (and through it the old context) is
still referenced needs both at once; that is where a device at 96 KB ran out (docs/benchmarks.md,
"Heap with TLS"). On the unix port mbedTLS uses the C heap, so this test checks what the
firmware holds, not bytes: one context for the client's life, no SSL socket while down.
"""
import json
import signal

import pytest

from hil.harness import ProvisionedMosquitto, free_port
from tests.support.micropython import run_micropython
from tools import provision

PROGRAM = """
import asyncio, gc, json, ssl, tls
from edge import config
import edge.tls
made = []
def counting(cls):  # an SSLContext class that counts the contexts built
    def make(proto):
        made.append(1)
        return cls(proto)
    return make
class CountingTls:  # the `tls` module edge.tls uses, counting
    def __init__(self):
        for k in dir(tls):
            setattr(self, k, getattr(tls, k))
        self.SSLContext = counting(tls.SSLContext)
ssl.SSLContext = counting(ssl.SSLContext)  # edge.tls through the `ssl` wrapper
edge.tls.tls = CountingTls()  # or the `tls` module directly
from edge.tls import TLSClient
from edge.link import UP
cfg = config.load({path!r})
mq = cfg["mqtt"]
async def main():
    c = TLSClient(cfg["device_id"], "127.0.0.1", {port}, keepalive=10, user=mq["user"],
                  password=mq["password"], tls=mq.get("tls"), response_timeout=10, backoff_max=1)
    asyncio.create_task(c.run())
    held = []
    for n in range(1, 4):
        for _ in range(600):  # up to 30 s: a loaded CI machine
            if c.stats["connects"] >= n and c._state == UP:
                break
            await asyncio.sleep_ms(50)
        c._lost()  # the link drops (what a read or write error does)
        held.append(c._tls_sock is not None)
    for _ in range(600):
        if c.stats["connects"] >= 4:
            break
        await asyncio.sleep_ms(50)
    print(json.dumps({{"connects": c.stats["connects"], "contexts": len(made), "held_while_down": held,
                      "error": repr(c.last_error)}}))
    await c.close()
asyncio.run(main())
"""


@pytest.fixture
def store(tmp_path):
    d = tmp_path / "store"
    tls_port = free_port()
    provision.init_store(d, store="t", port=tls_port, bind="127.0.0.1")
    provision.add_device(d, "pad-r", "sample-pad", host="127.0.0.1", port=tls_port)
    broker = ProvisionedMosquitto(d).start()
    broker.proc.send_signal(signal.SIGHUP)
    yield d, tls_port
    broker.stop()


def test_reconnects_reuse_one_context_and_hold_no_lost_socket(store):
    d, port = store
    r = run_micropython(PROGRAM.format(path=str(d / "devices" / "pad-r.config.json"), port=port),
                        heap="256k", timeout=60)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert lines, r.stdout + r.stderr
    out = json.loads(lines[-1])
    assert out["connects"] >= 4, out  # it did come back over TLS each time
    assert out["held_while_down"] == [False, False, False], out
    assert out["contexts"] == 1, out


@pytest.mark.parametrize("kind", ["sample-pad", "fitting-room"])
def test_a_device_at_96k_comes_back_over_tls_after_broker_restarts(tmp_path, kind):
    """The real firmware (main.py, a provisioned config, TLS with the store CA) at a board's
    96 KB: online, then the broker restarts three times and the device comes back each time.
    Before the SSL context was made once at boot, a pad's reconnect failed with MemoryError
    (a 3 KB allocation: the context; docs/operations.md)."""
    from hil.sim.store import VirtualStore
    d = tmp_path / "store"
    tls_port = free_port()
    provision.init_store(d, store="t", port=tls_port, bind="127.0.0.1")
    broker = ProvisionedMosquitto(d).start()
    vs = VirtualStore(tmp_path / "vs", broker_port=tls_port, heap="96k", provisioned=d)
    try:
        if kind == "sample-pad":
            vs.add_pad("dev-1")
        else:
            vs.add_fitting_room("dev-1")
        broker.reload()  # the new device's credentials
        vs.start()
        fw = vs.devices["dev-1"]
        fw.wait_line(r"online session", 60)
        for _ in range(3):
            mark = len(fw.lines)
            broker.stop()
            broker.start()
            fw.wait_line(r"online session", 60, start=mark)
        assert fw.alive(), "\n".join(fw.lines[-20:])
        assert not [ln for ln in fw.lines if "MemoryError" in ln], "\n".join(fw.lines[-20:])
    finally:
        vs.stop()
        broker.stop()
