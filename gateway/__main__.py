"""Run the gateway.

    python -m gateway --broker 127.0.0.1:1883 --db var/gw.db --http 127.0.0.1:8080 \\
        --samples samples.json
    python -m gateway --config /etc/phygital/gateway.toml     # docs/configuration.md

With `--config`, flags given explicitly on the command line override the file.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from gateway.app import Gateway, GatewayConfig
from gateway.config_file import ConfigError
from gateway.config_file import load as load_config_file
from gateway.kinds.fitting_room.stock import StockError
from gateway.kinds.sample_pad.service import CatalogError
from gateway.logs import setup_logging
from gateway.net import host_port

log = logging.getLogger("gateway")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gateway",
                                description="Phygital Edge store gateway (MQTT ↔ SQLite ↔ HTTP).")
    p.add_argument("--broker", type=host_port(1883), default=("127.0.0.1", 1883),
                   metavar="HOST:PORT", help="MQTT broker (default 127.0.0.1:1883)")
    p.add_argument("--db", type=Path, default=Path("var/gw.db"),
                   help="SQLite file (default var/gw.db)")
    p.add_argument("--http", type=host_port(8080), default=("127.0.0.1", 8080),
                   metavar="HOST:PORT", help="HTTP API listen address (default 127.0.0.1:8080)")
    p.add_argument("--coap", type=host_port(5683), default=None, metavar="HOST:PORT",
                   help="also serve CoAP devices on this UDP address, e.g. 0.0.0.0:5683 "
                        "(default: off; docs/protocol.md, CoAP mapping)")
    p.add_argument("--coap-heartbeat", type=float, default=30.0, metavar="SECONDS",
                   help="heartbeat of CoAP devices that do not declare one: offline after 3 "
                        "missed (default 30)")
    p.add_argument("--samples", type=Path, default=None,
                   help="sample catalog JSON (loaded at start, API edits written back)")
    p.add_argument("--stock", type=Path, default=None,
                   help="fitting rooms: stock JSON file (docs/fitting-rooms.md)")
    p.add_argument("--stock-url", default=None,
                   help="fitting rooms: a store system's stock API instead of --stock")
    p.add_argument("--fitting-swaps", type=int, default=3, metavar="N",
                   help="back-and-forth alert after N swaps (default 3) ...")
    p.add_argument("--fitting-swap-window", type=float, default=600.0, metavar="SECONDS",
                   help="... within this many seconds (default 600)")
    p.add_argument("--client-id", default="pe-gateway",
                   help="MQTT client id (the broker keeps this session across restarts)")
    p.add_argument("--keepalive", type=int, default=30, help="MQTT keepalive seconds")
    p.add_argument("--publish-timeout", type=float, default=5.0,
                   help="seconds to wait for the broker's PUBACK before a publish counts as "
                        "failed (default 5)")
    p.add_argument("--batch", type=int, default=2048,
                   help="max messages per ingest transaction / ack round (default 2048)")
    p.add_argument("--ack-linger-ms", type=float, default=5.0,
                   help="when a batch would be tiny and no reply waits, wait up to this long "
                        "for more messages before a commit (default 5; 0: off)")
    p.add_argument("--locker-reserve", type=float, default=4 * 3600, metavar="SECONDS",
                   help="locker banks: how long an unloaded reservation lasts (default 4 h)")
    p.add_argument("--locker-pickup-window", type=float, default=3 * 24 * 3600, metavar="SECONDS",
                   help="locker banks: how long a pickup code works (default 3 days)")
    p.add_argument("--locker-keys", type=Path, default=None, metavar="FILE",
                   help="locker banks' pickup-code keys (locker-keys.json from tools/provision.py); "
                        "a bank without a key gets no orders (no-key; docs/lockers.md)")
    p.add_argument("--tube-network", type=Path, default=None, metavar="FILE",
                   help="pneumatic tube network (default boards/tube/store-demo.json; docs/tube.md)")
    p.add_argument("--fitting-tube-station", default=None, metavar="STATION",
                   help="tube station serving the fitting rooms: stockroom sizes come by tube "
                        "(default fitting-rooms if the network has it; off: staff bring every size)")
    p.add_argument("--coap-keys", type=Path, default=None, metavar="FILE",
                   help="per-device CoAP keys (coap-keys.json from tools/provision.py); "
                        "CoAP requests without a valid MAC get 4.01 (docs/security.md)")
    p.add_argument("--coap-allow-unauthenticated", action="store_true", default=False,
                   help="also serve CoAP devices that have no key (isolated test networks only)")
    p.add_argument("--mqtt-auth", type=Path, default=None, metavar="GATEWAY_JSON",
                   help="broker users (main connection and command lane), passwords and store "
                        "CA (TLS) from the gateway.json that tools/provision.py writes "
                        "(docs/operations.md)")
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--log-format", default="text", choices=["text", "json"],
                   help="text: key=value lines; json: one JSON object per line (default text)")
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="TOML config file (docs/configuration.md); explicit flags override it")
    return p


# which GatewayConfig fields each flag sets (for flags that override a --config file)
_FLAG_FIELDS = {"broker": ("broker_host", "broker_port"), "db": ("db_path",),
                "http": ("http_host", "http_port"), "coap": ("coap_host", "coap_port"),
                "coap_heartbeat": ("coap_heartbeat_s",), "samples": ("samples_file",),
                "client_id": ("client_id",), "keepalive": ("keepalive_s",),
                "publish_timeout": ("publish_timeout_s",), "batch": ("ingest_batch_max",),
                "ack_linger_ms": ("ack_linger_s",), "stock": ("stock_file",),
                "stock_url": ("stock_url",), "fitting_swaps": ("fitting_swap_n",),
                "fitting_swap_window": ("fitting_swap_window_s",),
                "locker_reserve": ("locker_reserve_s",),
                "locker_pickup_window": ("locker_pickup_window_s",),
                "locker_keys": ("locker_keys_file",),
                "tube_network": ("tube_network",),
                "fitting_tube_station": ("fitting_tube_station",),
                "mqtt_auth": ("mqtt_user", "mqtt_password", "mqtt_ca", "mqtt_cmd_user",
                              "mqtt_cmd_password"),
                "coap_keys": ("coap_keys_file",),
                "coap_allow_unauthenticated": ("coap_allow_unauthenticated",)}


def explicit_flags(argv: Sequence[str] | None) -> set[str]:
    """Destinations of the flags actually given (a parser without defaults tells)."""
    p = build_parser()
    for action in p._actions:
        action.default = argparse.SUPPRESS
    return set(vars(p.parse_args(argv)))


def resolve(args: argparse.Namespace, argv: Sequence[str] | None
            ) -> tuple[GatewayConfig, str, str]:
    """(config, log level, log format) from the flags and the --config file if any."""
    if args.config is None:
        return config_from_args(args), args.log_level, args.log_format
    loaded = load_config_file(args.config)
    given = explicit_flags(argv)
    from_flags = config_from_args(args)
    config = replace(loaded.gateway, **{f: getattr(from_flags, f) for flag in given
                                         for f in _FLAG_FIELDS.get(flag, ())})
    return (config, args.log_level if "log_level" in given else loaded.log_level,
            args.log_format if "log_format" in given else loaded.log_format)


def _mqtt_auth(path: Path | None) -> dict[str, str | None]:
    if path is None:
        return {}
    import json
    try:
        auth = json.loads(path.read_text())
        return {"mqtt_user": auth["user"], "mqtt_password": auth["password"],
                "mqtt_ca": auth.get("ca") if auth.get("tls", True) else None,
                # the command lane's user (gateway.json from before it: the main user)
                "mqtt_cmd_user": auth.get("cmd_user"),
                "mqtt_cmd_password": auth.get("cmd_password") if auth.get("cmd_user") else None}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"--mqtt-auth {path}: not a gateway.json from tools/provision.py "
                         f"({exc!r})") from None


def config_from_args(args: argparse.Namespace) -> GatewayConfig:
    return GatewayConfig(**_mqtt_auth(args.mqtt_auth),  # type: ignore[arg-type]
                         broker_host=args.broker[0], broker_port=args.broker[1], db_path=args.db,
                         http_host=args.http[0], http_port=args.http[1],
                         samples_file=args.samples, client_id=args.client_id,
                         keepalive_s=args.keepalive, publish_timeout_s=args.publish_timeout,
                         ingest_batch_max=args.batch,
                         ack_linger_s=args.ack_linger_ms / 1000,
                         coap_host=args.coap[0] if args.coap else "127.0.0.1",
                         coap_port=args.coap[1] if args.coap else None,
                         coap_heartbeat_s=args.coap_heartbeat,
                         coap_keys_file=args.coap_keys,
                         coap_allow_unauthenticated=args.coap_allow_unauthenticated,
                         stock_file=args.stock, stock_url=args.stock_url,
                         fitting_swap_n=args.fitting_swaps,
                         fitting_swap_window_s=args.fitting_swap_window,
                         locker_reserve_s=args.locker_reserve,
                         locker_pickup_window_s=args.locker_pickup_window,
                         locker_keys_file=args.locker_keys,
                         tube_network=args.tube_network,
                         fitting_tube_station=args.fitting_tube_station)


async def serve(config: GatewayConfig) -> None:
    loop = asyncio.get_running_loop()
    async with Gateway(config) as gw:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, gw.stop)
        try:
            await gw.run()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config, level, fmt = resolve(args, argv)
    except ConfigError as exc:
        print(f"gateway: bad configuration: {exc}", file=sys.stderr)
        return 2
    setup_logging(level, fmt)
    try:
        asyncio.run(serve(config))
    except (OSError, CatalogError, StockError, RuntimeError, ValueError) as exc:
        log.error("gateway cannot run: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
