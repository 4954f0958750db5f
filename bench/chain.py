"""Chain of stores: events/s from devices to a central consumer, and bridge catch-up.

    .venv/bin/python bench/chain.py            # 20 devices x 200 events, backlog of 5,000
    .venv/bin/python bench/chain.py --quick    # CI smoke: 4 devices x 25 events, backlog 200

Two real Mosquittos on loopback (store + central, the store one bridged with the config of
`gateway.integrations.chain.bridge_config`), the gateway as a subprocess with `[chain] store_id`, fake
devices (hil/fakes.py, paho threads) on the store broker and a consumer with a
persistent session on the central broker.

1. **End to end**: every device emits its events at once (16 in flight, as the firmware);
   figure = events at the central consumer / time from the first emit to the last arrival.
   Each event goes device → store broker → gateway (persist, ack, chain outbox) → store
   broker → bridge → central broker → consumer.
2. **Catch-up**: the central broker is stopped, a backlog of events is emitted, persisted and
   drained from the gateway's outbox into the store broker's bridge queue, then the central
   is started again; figure = backlog / time from the restart to the last arrival (includes
   the bridge's reconnect delay, 1–2 s with the test bridge's `restart_timeout 1 2`).

Integrity: every event arrives at the central side (by device and seq), chain `seq` has no
gap. Exits 1 otherwise.
"""
from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hil.fakes import ChainRig, FakeDevice
from hil.harness import wait_for

STORE = "store-bench"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--events", type=int, default=200, help="events per device (phase 1)")
    ap.add_argument("--backlog", type=int, default=5000, help="events while central is down")
    args = ap.parse_args()
    if args.quick:
        args.devices, args.events, args.backlog = 4, 25, 200
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rig = ChainRig(work, STORE, '[logging]\nlevel = "WARNING"\n').start()
        central, store, consumer = rig.central, rig.store, rig.consumer
        devs = [FakeDevice(f"pad-{secrets.token_hex(3)}", store.port, journal_size=100_000)
                for _ in range(args.devices)]
        try:
            for d in devs:
                d.connect()
            sent: dict[str, list[int]] = {d.dev: [] for d in devs}

            def arrived() -> int:
                return sum(len(consumer.events(d)) for d in sent)

            total = args.devices * args.events
            t0 = time.monotonic()
            for i in range(args.events):
                for d in devs:
                    sent[d.dev].append(d.emit("bench", {"i": i}))
            for d in devs:
                d.wait_acked(sent[d.dev][-1], 600)
            acked = total / (time.monotonic() - t0)
            wait_for(lambda: arrived() >= total, 600, interval=0.05, what="phase 1 at central")
            e2e = total / (time.monotonic() - t0)
            print(f"end to end device->central events/s: {e2e:.0f}; persisted+acked at the "
                  f"gateway: {acked:.0f}/s ({args.devices} devices x {args.events} events)")

            central.stop()
            per = max(1, args.backlog // args.devices)
            for i in range(per):
                for d in devs:
                    sent[d.dev].append(d.emit("bench", {"i": i, "backlog": True}))
            for d in devs:
                d.wait_acked(sent[d.dev][-1], 600)
            wait_for(lambda: rig.chain_backlog() == 0, 600, interval=0.2,
                     what="chain outbox drained into the store broker")
            backlog = per * args.devices
            t1 = time.monotonic()
            central.start()
            wait_for(lambda: arrived() >= total + backlog, 600, interval=0.05,
                     what="backlog at central")
            rate = backlog / (time.monotonic() - t1)
            print(f"bridge catch-up events/s: {rate:.0f} (backlog {backlog}, central down)")

            lost = sum(len(set(s) - set(consumer.events(dev))) for dev, s in sent.items())
            seqs = sorted(consumer.by_seq)
            gaps = len(seqs) and (seqs[-1] - seqs[0] + 1 - len(seqs))
            ok = lost == 0 and gaps == 0
            print(f"integrity: {'OK' if ok else 'FAILED'} lost {lost}, chain seq gaps {gaps}")
            return 0 if ok else 1
        finally:
            for d in devs:
                d.close()
            rig.stop()


if __name__ == "__main__":
    sys.exit(main())
