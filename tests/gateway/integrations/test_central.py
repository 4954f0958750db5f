"""Head office (`phygital central`): the parser's refusals, and simulated stores → their
Mosquitto → bridge → a 3-node NATS cluster (JetStream, MQTT) → the consumer → a real
PostgreSQL: exactly once, a duplicate, forged and malformed messages, a gap opened then
closed. The faults with ten stores counted against their own databases, per-store credentials
and TLS are in test_central_stores.py."""
from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.central.messages import BridgeState, ChainEvent, GatewayState, Refused, parse
from gateway.integrations.chain import chain_payload
from hil.central_rig import CentralProcess, NatsCluster, Postgres, SimStore, StoreBridge
from hil.harness import wait_for

NOW_MS = int(time.time() * 1000)


def _env(store="store-1", seq=1, **over):
    m = {"v": 1, "store": store, "seq": seq, "stream_id": 10, "type": "event.tag.placed",
         "t": NOW_MS, "data": {"device": "pad-1"}} | over
    return json.dumps(m).encode()


@pytest.mark.parametrize(("topic", "payload", "reason"), [
    ("chain/1/store-1/event/pad-1", b"{not json", "bad_json"),
    ("chain/1/store-1/event/pad-1", b"x" * (64 * 1024 + 1), "too_large"),
    ("chain/1/store-1/event/pad-1", _env(store="store-2"), "store_mismatch"),
    ("chain/1/store-1/event/pad-1", _env(seq=0), "bad_envelope"),
    ("chain/1/store-1/event/pad-1", _env(seq="7"), "bad_envelope"),
    ("chain/1/store-1/event/pad-1", _env(v=2), "bad_envelope"),
    ("chain/1/store-1/event/pad-1", _env(type="command.done"), "bad_envelope"),
    ("chain/1/store-1/event/pad-1", _env(data=[1]), "bad_envelope"),
    ("chain/1/store-1/event/pad-1", _env(t=NOW_MS + 10 * 86_400_000), "bad_time"),
    ("chain/1/Store 1/event/pad-1", _env(), "bad_topic"),
    ("chain/1/store-1/event", _env(), "bad_topic"),
    ("chain-bridge/store-1/state", b"yes", "bad_bridge_state"),
    ("chain/1/store-1/gateway/state", b"[1]", "bad_envelope"),
])
def test_bad_input_is_refused_with_its_reason(topic, payload, reason):
    with pytest.raises(Refused) as exc:
        parse(topic, payload)
    assert exc.value.reason == reason


def test_good_input_is_parsed():
    e = parse("chain/1/store-1/event/pad-1", _env(seq=5))
    assert isinstance(e, ChainEvent) and (e.store, e.seq, e.kind, e.device) == ("store-1", 5, "event", "pad-1")
    assert e.t == datetime.fromtimestamp(NOW_MS / 1000, UTC)
    assert parse("chain-bridge/store-1/state", b"0") == BridgeState("store-1", False)
    assert parse("chain/1/store-1/gateway/state", b'{"up":true}') == GatewayState("store-1", {"up": True})
    # what the gateway's outbox publishes is accepted as it is
    row = {"id": 3, "stream_id": 9, "type": "command.late.done", "created": NOW_MS,
           "data": json.dumps({"id": "c1", "device": "lk-1", "status": "done"})}
    c = parse("chain/1/store-9/command/lk-1", chain_payload("store-9", row))
    assert isinstance(c, ChainEvent) and (c.seq, c.type) == (3, "command.late.done")


# --- the rig -------------------------------------------------------------------------------

class Rig:
    def __init__(self, tmp_path, stores: int):
        self.tmp = tmp_path
        self.parts: list = []
        self.pg = Postgres().init().start()
        self.parts.append(self.pg)
        self.cluster = NatsCluster(tmp_path / "nats").start()
        self.parts.append(self.cluster)
        ports = self.cluster.mqtt_ports
        self.brokers, self.stores = [], []
        for i in range(stores):
            sid = f"store-{i:04d}"
            order = ports[i % 3:] + ports[:i % 3]     # bridges spread over the nodes
            b = StoreBridge(tmp_path / sid, sid, order).start()
            self.brokers.append(b)
            self.stores.append(SimStore(sid, b.port))
        self.central = CentralProcess(tmp_path / "central", self.pg.dsn, ports).start()
        # the consumer's session must exist before the stores send (MQTT drops what has no
        # subscriber): the bridges' retained notifications arrive once it has subscribed
        wait_for(lambda: self.bridges_up() == len(self.stores), 60, interval=0.3,
                 what=f"consumer subscribed (central log {self.central.log})")

    def bridges_up(self) -> int:
        try:
            with self.db() as c:
                return c.execute("SELECT count(*) FROM chain_stores WHERE bridge_up").fetchone()[0]
        except psycopg.Error:
            return 0

    def db(self):
        return psycopg.connect(self.pg.dsn, autocommit=True)

    def stored(self) -> list[tuple[str, int]]:
        try:
            with self.db() as c:
                return [(r[0], r[1]) for r in c.execute("SELECT store, seq FROM chain_events")]
        except psycopg.Error:
            return []

    def sent(self) -> list[tuple[str, int]]:
        return [(s.store_id, q) for s in self.stores for q in s.sent]

    def wait_all_stored(self, timeout: float = 120) -> None:
        want = set(self.sent())
        wait_for(lambda: want <= set(self.stored()), timeout, interval=0.5,
                 what=f"every sent event in PostgreSQL ({len(want)}; missing "
                      f"{_Missing(self, want)}; central log {self.central.log})")

    def assert_exactly_once(self) -> None:
        stored = self.stored()
        sent = self.sent()
        assert len(sent) == len(set(sent))
        assert len(stored) == len(set(stored)), "an event stored twice"
        assert sorted(stored) == sorted(sent), "PostgreSQL differs from what the stores sent"
        with self.db() as c:
            gaps = c.execute("SELECT store, first_seq, last_seq FROM chain_gaps "
                             "WHERE closed IS NULL").fetchall()
        assert gaps == [], f"open gaps: {gaps}"

    def close(self):
        for s in self.stores:
            s.close()
        self.central.stop()
        for b in self.brokers:
            b.stop()
        self.cluster.stop()
        self.pg.close()


class _Missing:
    def __init__(self, rig, want):
        self.rig, self.want = rig, want

    def __str__(self):
        missing = sorted(self.want - set(self.rig.stored()))
        return f"{len(missing)}: {missing[:10]}"


@pytest.fixture
def rig(request, tmp_path):
    r = None
    try:
        r = Rig(tmp_path, getattr(request, "param", 3))
        yield r
    finally:
        if r is not None:
            r.close()


def _counter(rig, name) -> int:
    return rig.central.counter(name)  # hil.central_rig.CentralProcess


def _report(rig, what):
    names = ("received", "stored", "duplicates", "db_errors", "connects", "sessions_lost")
    print(f"\n{what}: {len(rig.sent())} sent, " + " ".join(f"{n}={_counter(rig, n)}" for n in names))


def _publisher(port, client_id="intruder"):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def test_stores_to_postgres_idempotent_gaps_and_refusals(rig):
    for s in rig.stores:
        s.publish(20)
    rig.wait_all_stored()
    rig.assert_exactly_once()
    with rig.db() as c:
        months = c.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = "
                           "'chain_events'::regclass").fetchone()[0]
        assert months >= 1                                   # events went into a month partition
        up = c.execute("SELECT store, bridge_up FROM chain_stores ORDER BY store").fetchall()
        assert up == [(s.store_id, True) for s in rig.stores]   # the bridges' notifications

    # straight on the cluster: a duplicate, forged and malformed messages, and a gap
    p = _publisher(rig.cluster.mqtt_ports[1])
    s0 = rig.stores[0]
    dup = chain_payload(s0.store_id, s0.row(5))
    forged = chain_payload("store-0001", s0.row(21))         # another store's id in the envelope
    for topic, payload in [(f"chain/1/{s0.store_id}/event/pad-5", dup),
                           (f"chain/1/{s0.store_id}/event/pad-0", forged),
                           (f"chain/1/{s0.store_id}/event/pad-0", b"{oops"),
                           (f"chain/1/{s0.store_id}/event/pad-3",
                            chain_payload(s0.store_id, s0.row(24)))]:   # 21..23 missing
        p.publish(topic, payload, qos=1).wait_for_publish(10)
    wait_for(lambda: (s0.store_id, 24) in rig.stored(), 60, what="seq 24 stored")
    with rig.db() as c:
        gaps = c.execute("SELECT first_seq, last_seq, missing, closed IS NULL FROM chain_gaps "
                         "WHERE store = %s", (s0.store_id,)).fetchall()
    assert gaps == [(21, 23, 3, True)]
    wait_for(lambda: _counter(rig, "refused.store_mismatch") == 1
             and _counter(rig, "refused.bad_json") == 1 and _counter(rig, "duplicates") >= 1,
             30, what="refusals and the duplicate counted")
    assert (s0.store_id, 21) not in rig.stored()             # the forged one was not stored
    # the store sends 21..23 late: the gap closes
    for seq in (21, 22, 23):
        p.publish(f"chain/1/{s0.store_id}/event/pad-0", chain_payload(s0.store_id, s0.row(seq)),
                  qos=1).wait_for_publish(10)
    s0.sent += [21, 22, 23, 24]
    s0._seq = 24
    rig.wait_all_stored(60)
    wait_for(lambda: rig.db().execute("SELECT missing, closed IS NOT NULL FROM chain_gaps").fetchall()
             == [(0, True)], 30, what="gap closed")
    rig.assert_exactly_once()
    p.disconnect()
    p.loop_stop()
