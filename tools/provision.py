"""Provision a store: a store CA, the broker's TLS certificate, per-device MQTT credentials, the
Mosquitto password file + ACL + listener config, and each device's firmware config.

    python -m tools.provision init var/store --hostname broker.store.lan --ip 192.168.1.10
    python -m tools.provision device var/store pad-1 --kind sample-pad
    python -m tools.provision device var/store pad-1 --kind sample-pad --rotate   # new password
    (or `phygital provision ...`)

What it writes, and why: gateway/provision.py (the functions, also used by hil/ for the rigs'
provisioned stores).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gateway.provision import COAP_KEYS, KINDS, ProvisionError, add_device, init_store


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="provision", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init", help="create the store CA, broker cert, gateway users and "
                                    "Mosquitto config")
    i.add_argument("dir", type=Path)
    i.add_argument("--store", default="store", help="store name (in the CA's name)")
    i.add_argument("--hostname", action="append", help="broker DNS name (repeatable; first "
                   "is what devices connect to; default localhost)")
    i.add_argument("--ip", action="append", help="broker IP address in the certificate "
                   "(repeatable; default 127.0.0.1)")
    i.add_argument("--port", type=int, default=8883, help="TLS listener port (default 8883)")
    i.add_argument("--bind", default="", help="TLS listener address (default: all)")
    i.add_argument("--local-port", type=int, default=None,
                   help="also listen on 127.0.0.1:PORT without TLS (same ACL)")
    i.add_argument("--run-as", default=None, help="user mosquitto runs as (owner of the "
                   "store files; default: whoever runs this tool)")
    i.add_argument("--force", action="store_true", help="overwrite an existing store")
    d = sub.add_parser("device", help="credentials + firmware config for one device")
    d.add_argument("dir", type=Path)
    d.add_argument("device_id")
    d.add_argument("--kind", required=True, choices=KINDS)
    d.add_argument("--host", help="broker host the device connects to (default: the store's)")
    d.add_argument("--port", type=int, help="broker port (default: the TLS listener)")
    d.add_argument("--app", type=json.loads, default=None, help="app config as JSON")
    d.add_argument("--rotate", action="store_true", help="replace an existing password "
                   "and CoAP key")
    d.add_argument("--transport", choices=("mqtt", "coap"), default="mqtt",
                   help="what the device speaks (default mqtt; coap: the gateway's CoAP edge "
                        "with the device's key)")
    d.add_argument("--coap-port", type=int, default=5683, help="the gateway's CoAP port")
    d.add_argument("--rotate-code-key", action="store_true", help="locker bank: a new pickup-code "
                   "key (voids the codes the bank holds: reissue them)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "init":
            st = init_store(args.dir, store=args.store, hostnames=args.hostname, ips=args.ip,
                            port=args.port, bind=args.bind, local_port=args.local_port,
                            run_as=args.run_as, force=args.force)
            print(f"store CA and broker certificate for {', '.join(st['hostnames'])} in "
                  f"{args.dir}; run: mosquitto -c {args.dir}/mosquitto/mosquitto.conf")
        else:
            add_device(args.dir, args.device_id, args.kind, host=args.host, port=args.port,
                       app=args.app, rotate=args.rotate, transport=args.transport,
                       coap_port=args.coap_port, rotate_code_key=args.rotate_code_key)
            print(f"{args.dir}/devices/{args.device_id}.config.json: deploy it as config.json "
                  "(mosquitto reloads its password file on SIGHUP; the gateway re-reads "
                  f"{args.dir}/{COAP_KEYS} by itself)")
    except ProvisionError as exc:
        print(f"provision: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
