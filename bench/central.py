"""Head office: how many stores one central (3-node NATS cluster + `phygital central` +
PostgreSQL, all on this machine) absorbs, and which part saturates first.

    .venv/bin/python bench/central.py                 # 20 stores, 1,500 events each, plain
    .venv/bin/python bench/central.py --secure        # per-store users and TLS, as deployed
    .venv/bin/python bench/central.py --quick         # CI smoke: 4 stores x 100 events

Each simulated store is one MQTT connection to the cluster, as its bridge is (client id
`pe-bridge-<store>`, clean session false, QoS 1, up to 100 in flight, the nodes taken in
turn), publishing real chain envelopes (`chain_payload`, ~300 bytes) as fast as the cluster
acknowledges them: a closed loop, so the figure is the most the central absorbs, not an
offered load. The consumer's session exists before they start (docs/chain.md, "Order of
deployment").

Figures: the rate the cluster acknowledged the stores' messages (ingress), the rate
PostgreSQL got them (`chain_seqs` rows over time, from the first PUBACK to the last row),
and the CPU each part used over that time (/proc: the three nats-server nodes, the
consumer, every PostgreSQL process, this process's publishers) as a share of one core. The
part near 100 % of a core (the consumer is one Python thread doing the work) or the machine
(2 cores) is the bottleneck. Stores absorbed = stored/s ÷ a store's rate: the busy-hour peak
estimate (100 events/s, docs/chain.md) and a busy average (20/s).

Integrity: PostgreSQL holds exactly the (store, seq) sent, each once. Exits 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from gateway.central.schema import create_schema
from gateway.integrations.chain import chain_payload
from hil.central_rig import CentralProcess, NatsCluster, Postgres
from hil.harness import wait_for

PEAK, AVERAGE = 100, 20        # a busy store's events/s: peak hour, and a busy day's average


def envelope(store: str, seq: int) -> tuple[str, bytes]:
    now = int(time.time() * 1000)
    data = {"id": seq, "device": f"pad-{seq % 7}", "epoch": "e1", "seq": seq,
            "type": "tag.placed", "t_device": now, "t_gateway": now,
            "body": {"uid": f"04{seq:010x}", "gtin": "09506000134352"}}
    row = {"id": seq, "stream_id": 1000 + seq, "type": "event.tag.placed", "created": now,
           "data": json.dumps(data)}
    return f"chain/1/{store}/event/pad-{seq % 7}", chain_payload(store, row)


class Store(threading.Thread):
    def __init__(self, store: str, port: int, n: int, user: str | None, pw: str | None,
                 cafile: str | None) -> None:
        super().__init__(daemon=True, name=store)
        self.store, self.n = store, n
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pe-bridge-{store}",
                             clean_session=False)
        self.c.max_inflight_messages_set(100)
        self.c.max_queued_messages_set(200)
        if user:
            self.c.username_pw_set(user, pw)
        if cafile:
            self.c.tls_set(ca_certs=cafile)
        self.c.connect("127.0.0.1", port, 30)
        self.c.loop_start()
        self.acked = 0
        self.last_ack = 0.0

    def run(self) -> None:
        infos = []
        for seq in range(1, self.n + 1):
            topic, payload = envelope(self.store, seq)
            while True:
                info = self.c.publish(topic, payload, qos=1)
                if info.rc == mqtt.MQTT_ERR_SUCCESS:
                    break
                time.sleep(0.005)          # the client's queue is full: the cluster pushes back
            infos.append(info)
            if len(infos) >= 100:
                infos.pop(0).wait_for_publish(120)
        for info in infos:
            info.wait_for_publish(120)
        self.last_ack = time.monotonic()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()   # after "pid (comm)"
    except OSError:
        return None


def cpu_of(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes used so far (Linux /proc)."""
    total = 0.0
    for pid in pids:
        st = _stat(pid)
        if st is not None:
            total += (int(st[11]) + int(st[12])) / TICK        # utime, stime
    return total


def postgres_procs(pg: Postgres) -> list[int]:
    """The postmaster and its children (backends, checkpointer, WAL writer...)."""
    root = int((pg.data / "postmaster.pid").read_text().split()[0])
    kids = [int(d) for d in os.listdir("/proc") if d.isdigit()
            and (st := _stat(int(d))) is not None and int(st[1]) == root]
    return [root, *kids]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stores", type=int, default=20)
    ap.add_argument("--events", type=int, default=1500, help="events per store")
    ap.add_argument("--batch", type=int, default=500, help="the consumer's --batch")
    ap.add_argument("--secure", action="store_true", help="per-store users and TLS")
    ap.add_argument("--drain", action="store_true",
                    help="stop the consumer while the stores publish, then time how fast it "
                         "drains the cluster (the consumer path alone)")
    ap.add_argument("--max-ack-pending", type=int, default=1000,
                    help="the cluster's MQTT max_ack_pending (unacknowledged per subscription)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.stores, args.events = 4, 100
    load = os.getloadavg()
    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    print(f"machine: {cpu}, {os.cpu_count()} cores, load average before "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    ids = [f"store-{i:04d}" for i in range(args.stores)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        parts: list = []
        try:
            pg = Postgres().init().start()
            parts.append(pg)
            tls_dir, passwords = None, None
            if args.secure:
                from gateway.provision import make_certs
                tls_dir = work / "ca"
                tls_dir.mkdir()
                make_certs(tls_dir, "central", ["localhost"], ["127.0.0.1"])
                passwords = {s: os.urandom(12).hex() for s in ids}
            cluster = NatsCluster(work / "nats", users=passwords, tls_dir=tls_dir,
                                  max_ack_pending=args.max_ack_pending).start()
            parts.append(cluster)
            extra = ["--batch", str(args.batch)]
            if args.secure:
                (work / "pw").write_text(str(cluster.central_password))
                extra += ["--username", "central", "--password-file", str(work / "pw"),
                          "--cafile", str(cluster.cafile)]
            central = CentralProcess(work / "central", pg.dsn, cluster.mqtt_ports, *extra).start()
            parts.append(central)

            def stored() -> int:
                try:
                    with psycopg.connect(pg.dsn, autocommit=True) as c:
                        row = c.execute("SELECT count(*) FROM chain_seqs").fetchone()
                        return int(row[0]) if row else 0
                except psycopg.Error:
                    return -1
            with psycopg.connect(pg.dsn, autocommit=True) as c:
                create_schema(c)              # the consumer creates it at its first batch
            wait_for(lambda: "connects=1" in central.log.read_text(), 60, interval=0.3,
                     what="the consumer connected")
            time.sleep(1)                     # and subscribed
            ports = cluster.mqtt_ports
            stores = [Store(s, ports[i % len(ports)], args.events,
                            f"bridge-{s}" if passwords else None,
                            passwords[s] if passwords else None, cluster.cafile)
                      for i, s in enumerate(ids)]
            nats = [p.pid for p in cluster.procs if p is not None]
            consumer = central.proc.pid   # type: ignore[union-attr]
            pgp = postgres_procs(pg)
            me = os.getpid()
            if args.drain:                    # its session keeps what arrives meanwhile
                central.stop()
                for s in stores:
                    s.start()
                for s in stores:
                    s.join(600)
                t_acked = max(s.last_ack for s in stores)
                print(f"published with the consumer stopped: {args.stores * args.events} events")
                central.start()
                consumer_pid = central.proc.pid   # type: ignore[union-attr]
            before = {"nats": cpu_of(nats), "consumer": cpu_of([consumer]),
                      "postgres": cpu_of(pgp), "publishers": cpu_of([me])}
            total = args.stores * args.events
            t0 = time.monotonic()
            if args.drain:
                consumer = consumer_pid
                before["consumer"] = 0.0
                t_acked = t0 + 1e-9
            else:
                for s in stores:
                    s.start()
                for s in stores:
                    s.join(600)
                t_acked = max(s.last_ack for s in stores)
            wait_for(lambda: stored() >= total, 600, interval=0.1, what="every event stored")
            t_stored = time.monotonic()
            pgp = postgres_procs(pg)          # backends started during the run included
            used = {"nats": cpu_of(nats) - before["nats"],
                    "consumer": cpu_of([consumer]) - before["consumer"],
                    "postgres": cpu_of(pgp) - before["postgres"],
                    "publishers": cpu_of([me]) - before["publishers"]}
            span = t_stored - t0
            ingress = total / (t_acked - t0)
            rate = total / span
            load = os.getloadavg()
            print(f"stores {args.stores} x {args.events} events ({total}), "
                  f"{'per-store users + TLS' if args.secure else 'plain'}, consumer batch "
                  f"{args.batch}, max_ack_pending {args.max_ack_pending}"
                  + (", drain of the backlog (consumer started after)" if args.drain else ""))
            print(("" if args.drain else f"cluster acknowledged: {ingress:.0f} events/s; ")
                  + f"stored in PostgreSQL: {rate:.0f} events/s ({span:.1f} s)")
            print("CPU over the run, share of one core: " + ", ".join(
                f"{k} {v / span * 100:.0f} %" for k, v in used.items())
                + f" (machine: {os.cpu_count()} cores)")
            print("CPU per event: " + ", ".join(f"{k} {v / total * 1e6:.0f} us"
                                                 for k, v in used.items())
                  + " -> one core each would take: " + ", ".join(
                      f"{k} {total / v:.0f}/s" for k, v in used.items()
                      if k != "publishers" and v > 0))
            busiest = max(("nats", "consumer", "postgres"), key=lambda k: used[k])
            print(f"busiest part: {busiest} ({used[busiest] / span * 100:.0f} % of a core; the "
                  "shares add up to less than the 2 cores when other work loads the machine)")
            print(f"stores absorbed: {rate / PEAK:.0f} at a busy store's peak ({PEAK} events/s), "
                  f"{rate / AVERAGE:.0f} at a busy average ({AVERAGE}/s)")
            print(f"load average after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
            with psycopg.connect(pg.dsn, autocommit=True) as c:
                rows = c.execute("SELECT store, count(*), count(DISTINCT seq), min(seq), max(seq) "
                                 "FROM chain_events GROUP BY store").fetchall()
            ok = len(rows) == args.stores and all(
                n == d == args.events and lo == 1 and hi == args.events for _s, n, d, lo, hi in rows)
            print(f"integrity: {'OK' if ok else 'FAILED'} ({len(rows)} stores, each seq 1.."
                  f"{args.events} exactly once)")
            for s in stores:
                s.close()
            return 0 if ok else 1
        finally:
            for p in reversed(parts):
                p.close() if isinstance(p, Postgres) else p.stop()


if __name__ == "__main__":
    sys.exit(main())
