"""Staff command line for locker banks, through the gateway's HTTP API (docs/lockers.md).

    phygital lockers show lk-1                       # compartments and orders
    phygital lockers assign lk-1 ord-1042 M          # order system: reserve a compartment
    phygital lockers load lk-1 ord-1042              # open the reserved compartment to load it
    phygital lockers order lk-1 ord-1042
    phygital lockers cancel lk-1 ord-1042
    phygital lockers reissue lk-1 ord-1042           # a new pickup code (printed once)
    phygital lockers retrieve lk-1 ord-1042          # take an expired/unwanted parcel back
    phygital lockers open lk-1 7                     # open one door for service
    phygital lockers open-all lk-1
    phygital lockers out-of-order lk-1 7 [--off] [--force]
    phygital lockers clear lk-1 7                    # release a forced/jammed compartment

(`python -m tools.lockers ...` is the same.) `--url` is the gateway (default
$PHYGITAL_URL or http://127.0.0.1:8080). Operations that change something send an idempotency
key (`--key`, default a fresh one, printed on stderr): run the command again with the same
`--key` after a timeout and it is not done twice. Exit codes: 0 done, 1 refused (the reason
is printed), 2 the bank has not answered yet (the command waits for it), 3 gateway unreachable.
"""
from __future__ import annotations

import argparse
import os
import secrets
import sys

from tools.gateway_api import UNREACHABLE, call, refused

# name -> (HTTP method, path template, positional arguments, takes an idempotency key)
OPS = {
    "show": ("GET", "/lockers/{bank}", [], False),
    "order": ("GET", "/lockers/{bank}/orders/{order}", ["order"], False),
    "assign": ("POST", "/lockers/{bank}/orders", ["order", "size"], False),
    "load": ("POST", "/lockers/{bank}/orders/{order}/load", ["order"], False),
    "cancel": ("POST", "/lockers/{bank}/orders/{order}/cancel", ["order"], True),
    "reissue": ("POST", "/lockers/{bank}/orders/{order}/reissue", ["order"], True),
    "retrieve": ("POST", "/lockers/{bank}/orders/{order}/retrieve", ["order"], True),
    "open": ("POST", "/lockers/{bank}/compartments/{compartment}/open", ["compartment"], True),
    "open-all": ("POST", "/lockers/{bank}/open-all", [], True),
    "out-of-order": ("POST", "/lockers/{bank}/compartments/{compartment}/out-of-order", ["compartment"], True),
    "clear": ("POST", "/lockers/{bank}/compartments/{compartment}/clear", ["compartment"], True),
}
HELP = {"show": "compartments and orders", "order": "one order", "assign": "reserve a compartment",
        "load": "open the reserved compartment for loading", "cancel": "cancel an unloaded order",
        "reissue": "a new pickup code", "retrieve": "open an order's compartment to take it back",
        "open": "open one door for service", "open-all": "open every door for service",
        "out-of-order": "take a compartment out of service (--off: back in)",
        "clear": "release a blocked compartment (door forced, lock jammed)"}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="phygital lockers", description="Staff operations on locker banks")
    ap.add_argument("--url", default=os.environ.get("PHYGITAL_URL", "http://127.0.0.1:8080"),
                    help="the gateway's HTTP API (default $PHYGITAL_URL or http://127.0.0.1:8080)")
    ap.add_argument("--timeout", type=float, default=60.0, help="HTTP timeout in seconds")
    ap.add_argument("--token", default=None, help="API token with the operations scope "
                    "(default: $PHYGITAL_TOKEN; docs/security.md)")
    sub = ap.add_subparsers(dest="op", required=True)
    for name, (_, _, pos, keyed) in OPS.items():
        p = sub.add_parser(name, help=HELP[name])
        p.add_argument("bank", help="the locker bank's device id")
        for a in pos:
            p.add_argument(a, type=int if a == "compartment" else str)
        if keyed:
            p.add_argument("--key", help="idempotency key (repeat it to retry safely)")
        if name == "out-of-order":
            p.add_argument("--off", action="store_true", help="back in service")
            p.add_argument("--force", action="store_true", help="even with an order inside")
    return ap


def request(args: argparse.Namespace) -> tuple[str, str, dict | None]:
    method, tmpl, pos, keyed = OPS[args.op]
    path = tmpl.format(**{k: getattr(args, k) for k in ["bank", *pos]})
    body: dict | None = None
    if args.op == "assign":
        body = {"order": args.order, "size": args.size}
    elif keyed:
        body = {"idempotency_key": args.key or f"cli-{secrets.token_hex(6)}"}
        if args.op == "out-of-order":
            body.update(on=not args.off, force=args.force)
    return method, path, body


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    method, path, body = request(args)
    if body and "idempotency_key" in body and not args.key:
        print(f"idempotency key: {body['idempotency_key']} (repeat with --key to retry)", file=sys.stderr)
    answer = call(args.url, method, path, args.token, args.timeout, json=body)
    if answer is None:
        return UNREACHABLE
    r, data = answer
    if r.status_code == 202:
        print("the bank has not answered yet: the command waits for it (GET "
              f"{r.headers.get('Location', '/commands')})", file=sys.stderr)
        return 2
    return refused(r, data)

if __name__ == "__main__":
    sys.exit(main())
