"""Run the gateway.

    python -m gateway --broker 127.0.0.1:1883 --db var/gw.db --http 127.0.0.1:8080 \\
        --samples samples.json
    python -m gateway --config /etc/phygital/gateway.toml     # docs/configuration.md

With `--config`, flags given explicitly on the command line override the file.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway.app import Gateway, GatewayConfig
from gateway.config_file import ConfigError
from gateway.config_file import load as load_config_file
from gateway.kinds.base import CliFlag
from gateway.kinds.registry import cli_flags, config_errors
from gateway.logs import setup_logging
from gateway.net import host_port

log = logging.getLogger("gateway")

GIL_SWITCH_S = 0.001  # sys.setswitchinterval of the gateway process (CPython's default: 0.005)


class _Parser(argparse.ArgumentParser):
    """Adds the device kinds' flags (gateway/kinds/registry.py) where each says it goes in
    `--help`: right after the flag it names in `after`, else after its kind's previous one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._after: dict[str, list[CliFlag]] = {}
        prev = None
        for flag in cli_flags():
            self._after.setdefault(flag.after or prev or "", []).append(flag)
            prev = flag.option
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        for option in action.option_strings:
            for flag in self._after.pop(option, ()):
                self.add_argument(flag.option, dest=flag.dest, **flag.options)
        return action

    def check_flags_placed(self) -> None:
        if self._after:
            missing = ", ".join(f.option for flags in self._after.values() for f in flags)
            raise RuntimeError(f"kind flags {missing}: their `after` flag does not exist")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m gateway",
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
    p.check_flags_placed()
    return p


# which GatewayConfig fields each flag sets (for flags that override a --config file)
_FLAG_FIELDS = {"broker": ("broker_host", "broker_port"), "db": ("db_path",),
                "http": ("http_host", "http_port"), "coap": ("coap_host", "coap_port"),
                "coap_heartbeat": ("coap_heartbeat_s",),
                "client_id": ("client_id",), "keepalive": ("keepalive_s",),
                "publish_timeout": ("publish_timeout_s",), "batch": ("ingest_batch_max",),
                "ack_linger_ms": ("ack_linger_s",),
                **{f.dest: (f.field,) for f in cli_flags()},  # the device kinds' flags
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
                         client_id=args.client_id,
                         keepalive_s=args.keepalive, publish_timeout_s=args.publish_timeout,
                         ingest_batch_max=args.batch,
                         ack_linger_s=args.ack_linger_ms / 1000,
                         coap_host=args.coap[0] if args.coap else "127.0.0.1",
                         coap_port=args.coap[1] if args.coap else None,
                         coap_heartbeat_s=args.coap_heartbeat,
                         coap_keys_file=args.coap_keys,
                         coap_allow_unauthenticated=args.coap_allow_unauthenticated,
                         **{f.field: getattr(args, f.dest) for f in cli_flags()})


def settle_heap() -> None:
    """Once the gateway has started: collect, then move every object alive now (modules, the
    app and its routes, the services) out of the garbage collector's sight (`gc.freeze`).

    Why: at 15,000 events/s objects that outlive a batch reach the oldest generation quickly,
    so CPython runs a full collection every second or two, and a full collection walks every
    tracked object with the GIL held: 40-105 ms in which no HTTP request, reply or commit
    moves (the event loop's longest stalls and a command's p99, docs/benchmarks.md "Issue 18,
    session 12"). Frozen objects are still freed by reference counting; only cycles among
    them are kept, and what exists at startup lives as long as the process anyway."""
    gc.collect()
    gc.freeze()


async def serve(config: GatewayConfig) -> None:
    loop = asyncio.get_running_loop()
    async with Gateway(config) as gw:
        settle_heap()
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
    # what means the configuration is wrong (a device kind adds its own, e.g. a bad stock file)
    bad_config: tuple[type[Exception], ...] = (OSError, RuntimeError, ValueError, *config_errors())
    # The event loop and the SQLite writer thread share the GIL: while the writer applies a
    # batch, a loop that wakes for an HTTP request or a reply waits up to the switch interval
    # (CPython's 5 ms) at every hand-off, and a command crosses ~6 of them
    # (docs/benchmarks.md, "Issue 18, session 7")
    sys.setswitchinterval(GIL_SWITCH_S)
    try:
        asyncio.run(serve(config))
    except bad_config as exc:
        log.error("gateway cannot run: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
