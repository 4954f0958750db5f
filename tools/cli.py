"""`phygital` command line: `phygital demo` runs a whole virtual store; `phygital gateway` the gateway.

Here in tools/, not in gateway/: the command fronts the gateway, the tools (provision, lockers,
conformance) and hil (the demo's virtual store), and the product imports neither of the last two."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import sys
from pathlib import Path

import gateway

DEMO_SAMPLES = Path(gateway.__file__).parent / "demo" / "samples.json"


def _hostport(value: str, default_port: int) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host:
        return value, default_port
    try:
        return host, int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected host:port, got {value!r}") from None


async def _customer(store, samples: list[str], stop: asyncio.Event, rng: random.Random) -> None:
    """A scripted customer: picks up samples and puts them on pads, one after another."""
    from hil.sim.mfrc522 import NtagTag

    tags = {sid: NtagTag.with_text(bytes([0x04, 0xDE, 0x30, 0x00, 0x00, 0x00, i + 1]), sid)
            for i, sid in enumerate(samples)}
    pads = list(store.pads.values())
    while not stop.is_set():
        pad = rng.choice(pads)
        sid = rng.choice(samples)
        print(f"  customer puts sample {sid} on {pad.dev}")
        pad.place(tags[sid])
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(2.0, 4.0))
        pad.remove()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(1.0, 2.0))


def line_buffered_stdout() -> None:
    """The demo narrates as it goes: each line reaches a file or a pipe when printed. Python
    block-buffers stdout that is not a terminal, so `phygital demo > demo.log` showed a line only
    when a log record happened to flush the buffer after it (CI: the endless aisle's line was
    still in the buffer when the test read the log)."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(line_buffering=True)


async def demo(args: argparse.Namespace) -> int:
    from gateway.aisle.demo import aisle_day
    from gateway.app import Gateway, GatewayConfig
    from gateway.http.auth import create_token
    from gateway.kinds.fitting_room.demo import DEMO_STOCK, fitting_customer
    from gateway.kinds.locker_bank.demo import locker_day
    from gateway.kinds.rack_display.demo import rack_day
    from gateway.kinds.tube.demo import DEMO_TUBE, tube_day
    from gateway.transport.embedded_broker import EmbeddedBroker
    from hil.sim.mfrc522 import NtagTag
    from hil.sim.store import VirtualStore

    line_buffered_stdout()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async with contextlib.AsyncExitStack() as stack:
        if args.broker:
            host, port = args.broker
            print(f"broker: using {host}:{port}")
        else:
            broker = await stack.enter_async_context(EmbeddedBroker())
            host, port = broker.host, broker.port
            print(f"broker: embedded (amqtt) on {host}:{port}")
        http_host, http_port = args.http
        # the API needs a token (docs/security.md): the demo makes itself an admin one
        token = os.environ.setdefault("PHYGITAL_ADMIN_TOKEN", f"pe_demo_{secrets.token_hex(16)}")
        from gateway.kinds.locker_bank.keys import ensure_key
        for bank_id in ("lk-1",):  # the demo's bank has its code key before the gateway starts
            ensure_key(workdir / "locker-keys.json", bank_id)
        chain: dict = {}
        if args.central_url:   # other stores' stock from head office (docs/chain.md)
            chain = {"store_id": args.store_id, "chain_central_url": args.central_url,
                     "chain_central_token_file": Path(args.central_token_file)}
            print(f"chain: store {args.store_id}; other stores' stock from head office at "
                  f"{args.central_url}")
        config = GatewayConfig(broker_host=host, broker_port=port, db_path=workdir / "gateway.db",
                               http_host=http_host, http_port=http_port, samples_file=DEMO_SAMPLES,
                               stock_file=DEMO_STOCK, tube_network=DEMO_TUBE,
                               locker_keys_file=workdir / "locker-keys.json",
                               aisle_stations=("pad-1=floor-womens",), **chain)  # docs/endless-aisle.md
        gw = await stack.enter_async_context(Gateway(config))
        gw_task = asyncio.create_task(gw.run())
        stack.push_async_callback(_cancel, gw_task)

        store = VirtualStore(workdir / "store", broker_host=host, broker_port=port,
                             locker_keys=workdir / "locker-keys.json")  # the bank's code key
        for i in range(args.pads):
            store.add_pad(f"pad-{i + 1}")
        room = store.add_fitting_room("room-1")  # docs/fitting-rooms.md
        bank = store.add_locker("lk-1", ["S", "S", "M", "M", "L", "L"])  # docs/lockers.md
        # docs/tube.md, "In the demo": inputs polled every 25 ms (not 10: each poll is a round
        # trip to the rig in this process), so a passing capsule blocks an eye for 300 ms
        tube = store.add_tube(DEMO_TUBE, poll_ms=25, pass_ms=300, dt=0.02)
        rack = store.add("rack-display", "rack-1", label="DENIM")  # docs/rack-display.md: an OLED on the rig
        store.start()
        stack.callback(store.stop)
        await asyncio.to_thread(store.wait_online, 30)

        base = f"http://{http_host}:{http_port}"
        print(f"""
Phygital Edge demo store is running on real MicroPython firmware: {args.pads} sample pads,
a fitting room, a locker bank, a tube line (stockroom, womenswear till, fitting-room desk) and
a rack display showing the rack's online likes.
  staff dashboard:   {base}/dashboard
  API (OpenAPI):     {base}/docs
  devices:           {base}/devices
  events:            {base}/events
  live event stream: {base}/stream      (try: curl -N {base}/stream)
  fitting room:      {base}/mirror/room-1   (the mirror; staff: {base}/fitting/requests)
  sample kiosk:      {base}/kiosk/pad-1     (a kiosk per pad; customers come and go on their own)
  locker bank:       {base}/lockers/lk-1
  tube line:         {base}/tube/line    (dispatches: {base}/tube/dispatches)
  rack likes:        {base}/racks/rack-1   (the online shop's feed: POST {base}/likes)
  endless aisle:     {base}/aisle/orders (the kiosk's "Not here? Ask for it"; staff: {base}/aisle/outbox)
  send a command:    curl -X POST {base}/devices/pad-1/commands -H 'content-type: application/json' \\
                       -d '{{"name":"blink","args":{{"times":3}},"idempotency_key":"try-1"}}'
Ctrl-C stops everything.
""", flush=True)
        print(f"API token (admin, this demo only): {token}\n  curl -H 'Authorization: Bearer "
              f"{token}' {base}/devices\n  dashboard: {base}/dashboard#token={token}\n"
              f"  kiosk: {base}/kiosk/pad-1#token={token}\n", flush=True)
        samples = sorted(json.loads(DEMO_SAMPLES.read_text()))
        customer = asyncio.create_task(_customer(store, samples, stop, random.Random(args.seed)))
        stack.push_async_callback(_cancel, customer)
        fitting = asyncio.create_task(fitting_customer(room, stop, random.Random(args.seed), NtagTag))
        stack.push_async_callback(_cancel, fitting)
        lockers = asyncio.create_task(locker_day(bank, base, stop, random.Random(args.seed)))
        stack.push_async_callback(_cancel, lockers)
        tubes = asyncio.create_task(tube_day(tube, base, stop, random.Random(args.seed)))
        stack.push_async_callback(_cancel, tubes)
        likes = asyncio.create_task(rack_day(rack, base, stop, random.Random(args.seed)))
        stack.push_async_callback(_cancel, likes)
        # the endless aisle's customer holds a `customer` token: that and nothing else
        customer_token = await gw.db.write(lambda st: create_token(st.conn, "demo-customer", ["aisle"]))
        aisle = asyncio.create_task(aisle_day(gw.aisle.sender, bank, base, customer_token, stop,
                                              random.Random(args.seed)))
        stack.push_async_callback(_cancel, aisle)
        if args.duration:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), args.duration)
        else:
            await stop.wait()
        print("stopping ...", flush=True)
    print("demo stopped cleanly")
    return 0


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="phygital", description="Phygital Edge: connected-store devices and gateway")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="run a virtual store: broker, gateway, sample pads, a fitting "
                       "room, a locker bank and a tube line on real firmware")
    d.add_argument("--broker", type=lambda v: _hostport(v, 1883), help="use this MQTT broker (host:port) "
                   "instead of the embedded one")
    d.add_argument("--http", type=lambda v: _hostport(v, 8080), default=("127.0.0.1", 8080),
                   help="where the gateway's HTTP API listens (default 127.0.0.1:8080)")
    d.add_argument("--pads", type=int, default=3, help="number of sample pads (default 3)")
    d.add_argument("--workdir", default="var/demo", help="where the demo keeps its database and device flash")
    d.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    d.add_argument("--seed", type=int, default=None, help="seed for the scripted customer")
    d.add_argument("--central-url", default=None,
                   help="head office (phygital central --http): the mirror's and kiosk's other "
                        "stores' stock comes from there (docs/chain.md); needs "
                        "--central-token-file")
    d.add_argument("--central-token-file", default=None,
                   help="file holding head office's bearer token")
    d.add_argument("--store-id", default="store-demo",
                   help="this store's id in the chain, with --central-url (default store-demo)")
    sub.add_parser("gateway", help="run the gateway (see `phygital gateway --help`)", add_help=False)
    sub.add_parser("lockers", help="staff operations on locker banks (see `phygital lockers --help`)",
                   add_help=False)
    sub.add_parser("token", help="API tokens: create/list/revoke (see `phygital token --help`)",
                   add_help=False)
    sub.add_parser("provision", help="store CA, broker config, device credentials "
                   "(see `phygital provision --help`)", add_help=False)
    sub.add_parser("firmware", help="over-the-air updates: build, upload and roll out firmware "
                   "(see `phygital firmware --help`, docs/ota.md)", add_help=False)
    sub.add_parser("schema", help="a gateway database's schema version (see `phygital schema --help`)",
                   add_help=False)
    sub.add_parser("db", help="a gateway database: stats, backup, vacuum (see `phygital db --help`)",
                   add_help=False)
    sub.add_parser("conformance", help="check a device against docs/protocol.md, clause by clause "
                   "(see `phygital conformance --help`)", add_help=False)
    sub.add_parser("central", help="head office: the chain of stores into PostgreSQL "
                   "(see `phygital central --help`)", add_help=False)
    args, rest = ap.parse_known_args(argv)
    if args.cmd == "gateway":
        from gateway.__main__ import main as gateway_main
        return gateway_main(rest)
    if args.cmd == "lockers":
        from tools.lockers import main as lockers_main
        return lockers_main(rest)
    if args.cmd == "token":
        from gateway.http.auth import cli as token_cli
        return token_cli(rest)
    if args.cmd == "provision":
        from tools.provision import main as provision_main
        return provision_main(rest)
    if args.cmd == "firmware":
        from tools.firmware import main as firmware_main
        return firmware_main(rest)
    if args.cmd == "schema":
        from gateway.storage.schema_cli import main as schema_main
        return schema_main(rest)
    if args.cmd == "db":
        from gateway.storage.db_cli import main as db_main
        return db_main(rest)
    if args.cmd == "conformance":
        from tools.conformance import main as conformance_main
        return conformance_main(rest)
    if args.cmd == "central":
        from gateway.central.consumer import main as central_main
        return central_main(rest)
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.pads < 1:
        ap.error("--pads must be at least 1")
    if args.central_url:
        from gateway.integrations.chain import check_store_id
        if not args.central_url.startswith(("http://", "https://")):
            ap.error(f"--central-url {args.central_url!r}: give http(s)://host:port of "
                     "phygital central --http")
        if not args.central_token_file or not Path(args.central_token_file).is_file():
            ap.error("--central-url needs --central-token-file: a file holding head office's "
                     "token (phygital central --http-token-file)")
        try:
            check_store_id(args.store_id)
        except ValueError as exc:
            ap.error(f"--store-id: {exc}")
    elif args.central_token_file:
        ap.error("--central-token-file goes with --central-url")
    return asyncio.run(demo(args))


if __name__ == "__main__":
    sys.exit(main())
