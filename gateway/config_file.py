"""The gateway's TOML config file (`phygital gateway --config FILE`), validated at start.

Every key is documented in docs/configuration.md (a test checks that the two agree). The
file maps onto `GatewayConfig`; what it does not set keeps the `GatewayConfig` default, and
command-line flags given explicitly override the file. All problems are reported at once:

    gateway.toml: 2 problems
      [broker] port: expected an integer 1..65535, got 70000
      [http] hots: unknown key (did you mean `host`?); known keys: host, port

Relative paths (`database.path`, `samples.file`) are relative to the config file's folder,
so a unit file can point at /etc/phygital/gateway.toml and keep data paths beside it.
"""
from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gateway.app import GatewayConfig
from gateway.http.screen_texts import LANG_RE
from gateway.integrations.chain import DEFAULT_KINDS, STORE_ID_RE
from gateway.kinds.base import ConfigKey, nonempty, positive
from gateway.kinds.registry import config_sections

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")


class ConfigError(ValueError):
    pass


Key = ConfigKey  # (GatewayConfig field, type, check): see gateway/kinds/base.py
_positive, _nonempty = positive, nonempty


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else f"must be >= 0, got {v}"


def _percent(v: Any) -> str | None:
    return None if 0 <= v <= 100 else f"must be 0..100 (percent of the disk), got {v}"


def _batch_rows(v: Any) -> str | None:
    return None if 1 <= v <= 100_000 else f"must be 1..100000 (rows per transaction), got {v}"


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in choices else f"must be one of {', '.join(choices)}, got {v!r}"
    return check


def _store_id(v: Any) -> str | None:
    return None if STORE_ID_RE.match(v) else \
        f"must match [a-z0-9][a-z0-9-]{{0,31}} (an MQTT topic level), got {v!r}"


def _language(v: Any) -> str | None:
    return None if LANG_RE.match(v) else f"must be a language code (en, fr, nl-BE), got {v!r}"


def _http_url(v: Any) -> str | None:
    ok = re.match(r"https?://[^\s/?#]+(/[^\s?#]*)?\Z", v) is not None and len(v) <= 300
    return None if ok else f"expected an http(s) URL of head office, e.g. " \
                           f"https://central.example:8443, got {v[:80]!r}"


def _stations(v: Any) -> str | None:
    bad = [x for x in v if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}=[A-Za-z0-9._-]{1,64}", x)]
    return f"each entry is \"<device>=<tube station>\", e.g. \"pad-1=floor-womens\"; got {bad}" \
        if bad else None


def _kinds(v: Any) -> str | None:
    bad = [k for k in v if k not in DEFAULT_KINDS]
    return None if not bad else f"unknown kind(s) {bad}; choose from {', '.join(DEFAULT_KINDS)}"


_CORE: dict[str, dict[str, Key]] = {
    "broker": {
        "host": Key("broker_host", "str", _nonempty),
        "port": Key("broker_port", "port"),
        "client_id": Key("client_id", "str", _nonempty),
        "keepalive_s": Key("keepalive_s", "int", _positive),
        "publish_timeout_s": Key("publish_timeout_s", "float", _positive),
        # credentials + store CA (tools/provision.py, docs/operations.md)
        "user": Key("mqtt_user", "str", _nonempty),
        "password": Key("mqtt_password", "str", _nonempty),
        "ca_file": Key("mqtt_ca", "path"),
        # the command lane's own user (a broker with use_username_as_clientid needs it)
        "cmd_user": Key("mqtt_cmd_user", "str", _nonempty),
        "cmd_password": Key("mqtt_cmd_password", "str", _nonempty),
    },
    "http": {
        "host": Key("http_host", "str", _nonempty),
        "port": Key("http_port", "port0"),
    },
    "database": {
        "path": Key("db_path", "path"),
        "stream_keep": Key("stream_keep", "int", _positive),
        # disk.low alert (gateway/integrations/capacity.py): below the larger of the two; 0 = off
        "disk_alert_free_percent": Key("disk_alert_free_percent", "float", _percent),
        "disk_alert_free_mb": Key("disk_alert_free_mb", "float", _non_negative),
        "capacity_check_s": Key("capacity_check_s", "float", _positive),
    },
    "retention": {  # gateway/storage/retention.py; days, 0 = keep forever
        "events_days": Key("retention_events_days", "float", _non_negative),
        "commands_days": Key("retention_commands_days", "float", _non_negative),
        "audit_days": Key("retention_audit_days", "float", _non_negative),
        "alerts_days": Key("retention_alerts_days", "float", _non_negative),
        "webhook_deliveries_days": Key("retention_webhook_days", "float", _non_negative),
        "event_hours_days": Key("retention_event_hours_days", "float", _non_negative),
        "aisle_days": Key("retention_aisle_days", "float", _non_negative),
        "batch_rows": Key("retention_batch_rows", "int", _batch_rows),
        "vacuum_pages": Key("retention_vacuum_pages", "int", _positive),
        "interval_s": Key("retention_interval_s", "float", _positive),
    },
    "ingest": {
        "batch_max": Key("ingest_batch_max", "int", _positive),
        "ack_linger_ms": Key("ack_linger_s", "ms", _non_negative),
    },
    "commands": {
        "resend_s": Key("command_resend_s", "float", _positive),
        "grace_s": Key("command_grace_s", "float", _non_negative),
    },
    "devices": {
        "silent_s": Key("device_silent_s", "float", _non_negative),
        "answer_s": Key("device_answer_s", "float", _positive),
    },
    "screens": {  # customer screens: the kiosk, the mirror (gateway/http/screen_texts.py)
        "language": Key("screens_language", "str", _language),
        "texts_file": Key("screens_texts_file", "path"),
    },
    "coap": {
        "enabled": Key("coap_enabled", "bool"),
        "host": Key("coap_host", "str", _nonempty),
        "port": Key("coap_port", "port0"),
        "heartbeat_s": Key("coap_heartbeat_s", "float", _positive),
        "dedupe_max": Key("coap_dedupe_max", "int", _positive),
        "keys_file": Key("coap_keys_file", "path"),
        "allow_unauthenticated": Key("coap_allow_unauthenticated", "bool"),
    },
    "aisle": {  # the endless aisle (gateway/aisle/, docs/endless-aisle.md)
        "stations": Key("aisle_stations", "list", _stations),
        "backoff_min_s": Key("aisle_backoff_min_s", "float", _positive),
        "backoff_max_s": Key("aisle_backoff_max_s", "float", _positive),
        "max_attempts": Key("aisle_max_attempts", "int", _positive),
    },
    "webhooks": {
        "backoff_min_s": Key("webhook_backoff_min_s", "float", _positive),
        "backoff_max_s": Key("webhook_backoff_max_s", "float", _positive),
        "timeout_s": Key("webhook_timeout_s", "float", _positive),
        "max_pending": Key("webhook_max_pending", "int", _positive),
    },
    "chain": {
        "store_id": Key("store_id", "str", _store_id),
        "kinds": Key("chain_kinds", "list", _kinds),
        # head office's chain-wide availability: the mirror's and kiosk's other stores
        "central_url": Key("chain_central_url", "str", _http_url),
        "central_token_file": Key("chain_central_token_file", "path"),
        "outbox_alert_rows": Key("chain_outbox_alert_rows", "int", _positive),
    },
    "logging": {
        "level": Key("log_level", "str", _one_of(*LOG_LEVELS)),
        "format": Key("log_format", "str", _one_of(*LOG_FORMATS)),
    },
    "gateway": {"shutdown_timeout_s": Key("shutdown_timeout_s", "float", _positive)},
}


def _with_kinds(core: dict[str, dict[str, Key]], kinds: dict[str, dict[str, Key]],
                before: str = "screens") -> dict[str, dict[str, Key]]:
    """The core sections with the device kinds': a kind's own section ([samples], [lockers]...)
    goes before [`before`]; keys a kind adds to a core section ([retention] `fitting_days`:
    `DeviceKind.retention`) follow the core keys. A key declared twice is a ValueError."""
    out: dict[str, dict[str, Key]] = {}
    for name, keys in core.items():
        if name == before:
            out |= {s: dict(k) for s, k in kinds.items() if s not in core}
        out[name] = dict(keys)
        for key, spec in kinds.get(name, {}).items():
            if key in out[name]:
                raise ValueError(f"config key [{name}] {key} declared by a kind and the core")
            out[name][key] = spec
    return out


SPEC: dict[str, dict[str, Key]] = _with_kinds(_CORE, config_sections())

_TYPE_TEXT = {"str": "a string", "int": "an integer", "float": "a number", "ms": "a number",
              "bool": "true or false", "path": "a path (string)", "list": "a list of strings",
              "port": "an integer 1..65535", "port0": "an integer 0..65535 (0: any free port)"}


@dataclass(frozen=True)
class FileConfig:
    gateway: GatewayConfig
    log_level: str = "INFO"
    log_format: str = "text"


def _convert(key: Key, value: Any, base: Path) -> Any:
    """The typed value, or raise ValueError with what was expected."""
    k = key.kind
    ok = {"str": isinstance(value, str), "path": isinstance(value, str),
          "bool": isinstance(value, bool),
          "int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool),
          "list": isinstance(value, list) and all(isinstance(x, str) for x in value)}
    ok["ms"] = ok["float"]
    ok["port"] = ok["port0"] = ok["int"]
    if not ok[k] or (k == "port" and not 0 < value < 65536) or \
            (k == "port0" and not 0 <= value < 65536):
        raise ValueError(f"expected {_TYPE_TEXT[k]}, got {value!r}")
    if key.check is not None and (problem := key.check(value)):
        raise ValueError(problem)
    if k == "path":
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p
    if k == "float":
        return float(value)
    if k == "ms":
        return value / 1000
    if k == "list":
        return tuple(value)
    return value


def parse(data: dict[str, Any], *, source: str = "config", base: Path = Path(".")) -> FileConfig:
    problems: list[str] = []
    values: dict[str, Any] = {}
    for section, body in data.items():
        if section not in SPEC:
            close = difflib.get_close_matches(section, list(SPEC), n=1)
            hint = f" (did you mean [{close[0]}]?)" if close else ""
            problems.append(f"[{section}]: unknown section{hint}; known sections: "
                            f"{', '.join(SPEC)}")
            continue
        if not isinstance(body, dict):
            problems.append(f"{section}: expected a [{section}] table, got {body!r}")
            continue
        for name, value in body.items():
            key = SPEC[section].get(name)
            if key is None:
                close = difflib.get_close_matches(name, list(SPEC[section]), n=1)
                hint = f" (did you mean `{close[0]}`?)" if close else ""
                problems.append(f"[{section}] {name}: unknown key{hint}; known keys: "
                                f"{', '.join(SPEC[section])}")
                continue
            try:
                values[key.field] = _convert(key, value, base)
            except ValueError as exc:
                problems.append(f"[{section}] {name}: {exc}")
    lo = values.get("webhook_backoff_min_s", GatewayConfig.webhook_backoff_min_s)
    hi = values.get("webhook_backoff_max_s", GatewayConfig.webhook_backoff_max_s)
    if lo > hi:
        problems.append(f"[webhooks] backoff_min_s ({lo}) must not exceed backoff_max_s ({hi})")
    if ("mqtt_cmd_user" in values) != ("mqtt_cmd_password" in values):
        problems.append("[broker] cmd_user and cmd_password go together")
    raw_chain = data.get("chain")
    chain: dict[str, Any] = raw_chain if isinstance(raw_chain, dict) else {}
    if "central_url" in chain and "store_id" not in chain:
        problems.append("[chain] central_url needs store_id (this store's own figures are "
                        "left out of its other stores)")
    if ("central_url" in chain) != ("central_token_file" in chain):
        problems.append("[chain] central_url and central_token_file go together")
    if problems:
        n = len(problems)
        raise ConfigError(f"{source}: {n} problem{'s' if n > 1 else ''}\n  " +
                          "\n  ".join(problems))
    log_level = values.pop("log_level", "INFO")
    log_format = values.pop("log_format", "text")
    coap_enabled = values.pop("coap_enabled", False)
    if coap_enabled:
        values.setdefault("coap_port", 5683)
    else:
        values["coap_port"] = None
    return FileConfig(replace(GatewayConfig(), **values), log_level, log_format)


def load(path: str | Path) -> FileConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse(data, source=str(path), base=path.resolve().parent)
