"""Ten stores → head office, with faults, counted against the stores' own databases.

Each store keeps the gateway's SQLite (its events and chain outbox, `hil.central_rig.
OutboxStores`) and its Mosquitto, bridged through a relay that can cut it off
(`PartitionProxy`) to the 3-node NATS cluster, with a user per store (it may publish only on
its own store's subjects) and TLS (a test CA); `phygital central` writes into PostgreSQL.
After every fault, PostgreSQL holds per store exactly seq 1..N, N = the chain items committed
in that store's SQLite, with the same stream ids, and no gap left open.

CI runs the module-scoped rig's tests (credentials, a short partition, the consumer killed);
the cluster node and PostgreSQL kills are `slow`. The partition lasts `PE_PARTITION_S`
seconds (default 3); the report's 10-minute run is `PE_PARTITION_S=600` (docs/chain.md).
"""
from __future__ import annotations

import os
import socket
import ssl
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.integrations.chain import chain_payload
from hil.central_rig import HeadOfficeRig
from hil.harness import wait_for

STORES = 10
PARTITION_S = float(os.environ.get("PE_PARTITION_S", "3"))


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = HeadOfficeRig(tmp_path_factory.mktemp("chain10"), STORES)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def fresh_rig(tmp_path):
    r = HeadOfficeRig(tmp_path, STORES)
    try:
        yield r
    finally:
        r.close()


def _report(rig, what, counts):
    names = ("received", "stored", "duplicates", "db_errors", "connects", "sessions_lost")
    print(f"\n{what}: {sum(counts.values())} events from {len(counts)} stores, "
          + " ".join(f"{n}={rig.counter(n)}" for n in names))


def _client(rig, user, password, *, tls=True, client_id=None):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{os.urandom(3).hex()}")
    c.username_pw_set(user, password)
    if tls:
        c.tls_set(ca_certs=rig.cluster.cafile)
    return c


def test_ten_stores_with_their_own_credentials_over_tls(rig):
    for sid in rig.brokers:
        rig.stores.produce(sid, 30)
    rig.wait_all_stored()
    counts = rig.check()
    assert counts == {sid: 30 for sid in rig.brokers}
    assert rig.violations() == []

    # store-0001's own credentials (a store gateway gone rogue, or its leaked password)
    port = rig.cluster.mqtt_ports[0]
    c = _client(rig, "bridge-store-0001", rig.passwords["store-0001"])
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        # on another store's topic: the cluster acknowledges and drops it, and logs it
        forged = chain_payload("store-0002", {"id": 31, "stream_id": 999_999,
                                              "type": "event.tag.placed",
                                              "created": int(time.time() * 1000),
                                              "data": '{"device":"pad-1"}'})
        c.publish("chain/1/store-0002/event/pad-1", forged, qos=1).wait_for_publish(10)
        # on its own topic, naming another store: refused by the consumer (store_mismatch)
        c.publish("chain/1/store-0001/event/pad-1", forged, qos=1).wait_for_publish(10)
        # the other store's bridge notification: dropped too
        c.publish("chain-bridge/store-0002/state", b"0", qos=1, retain=True).wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()
    wait_for(lambda: len(rig.violations()) == 2, 30,
             what="two publish violations logged by the cluster")
    assert all('User "bridge-store-0001"' in v for v in rig.violations())
    wait_for(lambda: rig.counter("refused.store_mismatch") == 1, 30,
             what="the consumer refusing the envelope naming another store")
    assert rig.bridge_up("store-0002") is True                  # its state not overwritten

    # a wrong password, no TLS, an unknown CA: no connection
    refused = []
    bad = _client(rig, "bridge-store-0001", "wrong")
    bad.on_connect = lambda _c, _u, _f, rc, _p: refused.append(str(rc))
    bad.connect("127.0.0.1", port)
    bad.loop_start()
    wait_for(lambda: refused, 10, what="CONNACK for a wrong password")
    bad.loop_stop()
    assert refused == ["Not authorized"]
    with pytest.raises((OSError, ssl.SSLError)):
        plain = _client(rig, "bridge-store-0001", rig.passwords["store-0001"], tls=False)
        plain.connect("127.0.0.1", port)
        for _ in range(20):                  # the TLS listener closes a plain-text CONNECT
            if plain.loop(0.25) != mqtt.MQTT_ERR_SUCCESS:
                raise OSError("closed by the TLS listener")
    with pytest.raises(ssl.SSLError):
        other = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="t-other-ca")
        other.tls_set(ca_certs=None)         # the system CAs: they do not know the test CA
        other.connect("127.0.0.1", port)

    # nothing of it was stored; every store is still exactly its own database
    assert rig.check() == counts
    assert rig.counter("stored") == sum(counts.values())


def test_store_partitioned_from_the_central_then_back(rig):
    """Store 0003's link to every node goes dead (bytes dropped, new connections refused)
    for PE_PARTITION_S seconds while all ten stores keep producing; then it comes back."""
    sid = "store-0003"
    proxy = rig.proxies[sid]
    before = {s: len(rig.stores.committed(s)) for s in rig.brokers}
    stored_before = {q for q, _s in rig.stored().get(sid, [])}
    proxy.partition()
    # the stores produce for the partition's length (about 2 events/s each)
    rounds = max(1, int(PARTITION_S / 0.5))
    rig.stores.start_stream(rounds, per_batch=1, pause_s=0.5)
    rig.stores.join(PARTITION_S + 600)
    # the cluster notices the dead link by the bridge's keepalive (its will: bridge down)
    wait_for(lambda: rig.bridge_up(sid) is False, 60, interval=0.3,
             what="the cluster noticing the store's bridge gone (its last will)")
    # the others' events arrive meanwhile; the partitioned store's wait in its broker
    others = [s for s in rig.brokers if s != sid]
    wait_for(lambda: all(s not in rig.missing() for s in others), 120, interval=0.3,
             what="the other stores' events stored during the partition")
    wait_for(lambda: rig.stores.outbox_left(sid) == 0, 30,  # handed to its store broker ...
             what="the partitioned store's outbox emptied into its broker")
    held = {q for q, _s in rig.stored().get(sid, [])}
    assert held == stored_before, "events crossed the partition"   # ... which holds them
    assert proxy.dropped_bytes > 0                        # the link really was cut
    proxy.heal()
    rig.wait_all_stored(max(120.0, PARTITION_S))
    counts = rig.check()
    assert counts[sid] == before[sid] + rounds
    wait_for(lambda: rig.bridge_up(sid) is True, 30, what="the bridge up again")
    _report(rig, f"store partitioned {PARTITION_S:.0f} s", counts)


def test_consumer_sigkill_mid_stream(rig):
    rig.stores.start_stream(60, per_batch=10, pause_s=0.05)
    base = rig.counter("stored")
    wait_for(lambda: rig.counter("stored") >= base + 100, 120, interval=0.2,
             what="some events stored")
    rig.central.kill()
    for sid in rig.brokers:                         # the stores keep producing meanwhile
        rig.stores.produce(sid, 20)
    rig.central.start()
    rig.stores.join()
    rig.wait_all_stored()
    counts = rig.check()
    _report(rig, "consumer SIGKILL", counts)


@pytest.mark.slow  # a long scenario: `pytest -m slow` (README, "Tests")
def test_cluster_node_sigkill_mid_stream(fresh_rig):
    rig = fresh_rig
    rig.stores.start_stream(300, per_batch=10, pause_s=0.05)
    wait_for(lambda: rig.counter("stored") >= 500, 120, interval=0.2, what="some events stored")
    rig.cluster.kill(0)        # the consumer's node, first choice of stores 0, 3, 6, 9's bridges
    for sid in rig.brokers:
        rig.stores.produce(sid, 20)
    rig.stores.join()
    rig.wait_all_stored(240)
    counts = rig.check()
    assert rig.counter("sessions_lost") == 0
    _report(rig, "node SIGKILL", counts)


@pytest.mark.slow  # a long scenario: `pytest -m slow` (README, "Tests")
def test_postgres_restart_mid_stream(fresh_rig):
    rig = fresh_rig
    rig.stores.start_stream(300, per_batch=10, pause_s=0.05)
    wait_for(lambda: rig.counter("stored") >= 500, 120, interval=0.2, what="some events stored")
    rig.pg.kill()                                  # a crash, not a clean stop
    for sid in rig.brokers:
        rig.stores.produce(sid, 20)
    wait_for(lambda: "PostgreSQL write failed" in rig.central.log.read_text(), 60,
             what="the consumer meeting the outage")
    rig.pg.start()
    rig.stores.join()
    rig.wait_all_stored()
    counts = rig.check()
    _report(rig, "PostgreSQL SIGKILL+restart", counts)


def test_partition_proxy_really_cuts(tmp_path):
    """The relay itself: bytes pass, then are dropped and new connections refused, then pass
    again on a new connection."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    from hil.central_rig import PartitionProxy
    proxy = PartitionProxy([srv.getsockname()[1]]).start()
    try:
        c = socket.create_connection(("127.0.0.1", proxy.ports[0]), timeout=5)
        s, _ = srv.accept()
        s.settimeout(5)
        c.sendall(b"one")
        assert s.recv(10) == b"one"
        proxy.partition()
        c.sendall(b"two")
        s.settimeout(1)
        with pytest.raises(TimeoutError):
            s.recv(10)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.ports[0]), timeout=2)
        proxy.heal()
        assert c.recv(10) == b""                      # the dead connection is closed at heal
        c2 = socket.create_connection(("127.0.0.1", proxy.ports[0]), timeout=5)
        s2, _ = srv.accept()
        s2.settimeout(5)
        c2.sendall(b"three")
        assert s2.recv(10) == b"three"
        assert proxy.dropped_bytes == 3
        for x in (c, c2, s, s2):
            x.close()
    finally:
        proxy.close()
        srv.close()


def test_the_count_against_a_store_database_sees_loss_doubles_and_strangers():
    from hil.central_rig import differences
    assert differences([(1, 10), (2, 12)], [10, 12]) is None
    assert differences([(1, 10), (1, 10), (2, 12)], [10, 12]) == "an event stored twice"
    assert "lost: [2]" in str(differences([(1, 10)], [10, 12]))
    assert "unknown: [3]" in str(differences([(1, 10), (2, 12), (3, 13)], [10, 12]))
    assert differences([(1, 10), (2, 13)], [10, 12]) == "stream ids differ"
