"""The secrets model (docs/security.md, "Secrets"): what is a secret, and who sees which.

Secrets by value class, whatever field they sit in:

* **pickup codes** (the plain 6 digits): shown to the order system that created them (scope
  `lockers`) and to `admin` — in the answer of the POST that issued them and on the live
  stream (`order.ready` / `order.code`), and to a webhook subscription that opted in
  (`include_secrets`, set by `admin`), and to the customer of an endless-aisle order in the
  one message its outbox sends (gateway/aisle/service.py: read from memory when sending).
  Nobody else, nowhere else; never stored.
* **code verifiers** (the hash or MAC of a code in `set_order` / `load_codes` arguments, and
  the idempotency key derived from it): only the gateway and the bank need them. Every API
  view of a command shows them as `REDACTED`, for every scope, and so do the stream, the
  webhooks and the chain of stores (they all carry `store.public_command`).
* **OTA offer MACs** (the `mac` of an `ota` command, docs/ota.md): not a secret (it lets only
  that device take that bundle), redacted in every API view all the same: no reader needs it.
* **device passwords and keys, API tokens, webhook signing secrets**: never in any response,
  except a webhook secret (and a new API token, CLI only) once, where it is created.

Enforcement is by rule table, one row per command or event type that carries a secret: a
command that starts carrying one needs a row in `COMMAND_SECRETS`, or
`tests/gateway/http/test_secrets_exposure.py` (which searches every GET response for the values it issued)
fails.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"

#: command name -> argument paths holding a code or its verifier (`*`: every list element).
#: Both `hash` (SHA-256 verifier) and `mac` (keyed verifier) are listed, and `code` in case a
#: caller ever sends one plain: whichever the gateway and firmware use, none is shown.
_VERIFIER = ("hash", "mac", "code")
COMMAND_SECRETS: dict[str, tuple[tuple[str, ...], ...]] = {
    "set_order": tuple((f,) for f in _VERIFIER),
    "load_codes": tuple(("orders", "*", f) for f in _VERIFIER),
    # an OTA offer's MAC (docs/ota.md) only lets that one device take that one bundle, so it
    # is not a secret by design; no reader has a use for it, so no API view shows it either
    "ota": (("mac",),),
}
#: commands whose idempotency key is derived from a verifier (`lk:<order>:set_order:<hash16>`:
#: 64 bits of a hash identify a 6-digit code as surely as the whole hash); an offer's key is
#: `ota-<rollout id>`
SECRET_KEYED_COMMANDS = frozenset({"set_order", "load_codes"})

#: device event type -> body fields holding a code (none of today's firmware sends one; a
#: typed code in a rejection would be one digit from a real code)
EVENT_SECRETS: dict[str, tuple[str, ...]] = {
    "code.rejected": _VERIFIER,
    "code.reused": _VERIFIER,
    "code.accepted": _VERIFIER,
}

#: scopes that may see a plain pickup code (admin satisfies every scope)
CODE_SCOPES = ("lockers",)


def _redact_path(value: Any, path: tuple[str, ...]) -> Any:
    if not path:
        return REDACTED
    head, rest = path[0], path[1:]
    if head == "*":
        if isinstance(value, list):
            return [_redact_path(v, rest) for v in value]
        return value
    if isinstance(value, dict) and head in value:
        return {**value, head: _redact_path(value[head], rest)}
    return value


def redact_args(name: str, args: Any) -> Any:
    """`args` of command `name` with every secret path replaced by `REDACTED` (a copy)."""
    for path in COMMAND_SECRETS.get(name, ()):
        args = _redact_path(args, path)
    return args


def redact_command(cmd: dict[str, Any]) -> dict[str, Any]:
    """A command record as any API client, stream subscriber or webhook sees it."""
    name = cmd.get("name")
    if name not in COMMAND_SECRETS:
        return cmd
    out = {**cmd, "args": redact_args(name, cmd.get("args"))}
    if "idem_key" in out and name in SECRET_KEYED_COMMANDS:
        out["idem_key"] = REDACTED
    return out


def redact_event(event: dict[str, Any]) -> dict[str, Any]:
    """A device event (`{"type", "body", ...}`) without the code fields of its type."""
    fields = EVENT_SECRETS.get(event.get("type"))  # type: ignore[arg-type]
    body = event.get("body")
    if not fields or not isinstance(body, dict) or not any(f in body for f in fields):
        return event
    return {**event, "body": {k: (REDACTED if k in fields else v) for k, v in body.items()}}


def redact_item(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """A stream item as committed (rows written before this module existed included)."""
    if kind == "command":
        return redact_command(data)
    if kind == "event":
        return redact_event(data)
    if kind == "locker" and "code" in data:
        # committed locker rows never hold the code (LockerService.render adds it from memory
        # for readers that may see it): one that does is old or hand-made
        return {**data, "code": REDACTED}
    return data


def may_see_codes(scopes: Iterable[str]) -> bool:
    """Plain pickup codes: the order system (`lockers`) and `admin`."""
    s = set(scopes)
    return "admin" in s or any(c in s for c in CODE_SCOPES)
