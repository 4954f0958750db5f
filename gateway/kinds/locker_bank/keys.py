"""Locker banks' pickup-code keys: one secret 32-byte key per bank (docs/lockers.md, Codes).

A bank verifies codes offline as HMAC-SHA256(key, salt + code), so the key is on the bank
(its config, `app.code_key`) and here. `tools/provision.py device ... --kind locker-bank`
writes it to the bank's config and to `locker-keys.json` (`{bank id: 64 hex digits}`, mode
0600, beside `coap-keys.json`), which the gateway reads (`--locker-keys`, `[lockers]
keys_file`). The gateway's database only ever holds MACs: a backup of it, or a leaked
`set_order`, reveals no code without this file.

The file is read at start and again whenever it changes (a bank provisioned while the gateway
runs gets codes without a restart). A bank with no key gets no codes: assigning an order to it
is refused `no-key`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from gateway.transport.coap_auth import KeyFileError, parse_keys
from gateway.transport.coap_auth import add_key as _add_key

log = logging.getLogger("gateway.lockers")


class LockerKeys:
    """`get(bank)`: the bank's code key, or None. Re-reads the file when its mtime changes."""

    def __init__(self, path: Path | None = None, keys: dict[str, bytes] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.keys: dict[str, bytes] = dict(keys or {})
        self._mtime: int | None = None
        if self.path is not None:
            self.reload(force=True)
            check_mode(self.path)

    def reload(self, force: bool = False) -> None:
        """A missing or bad file at start is an error; later, the keys loaded before stay."""
        if self.path is None:
            return
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            if force:
                raise KeyFileError(f"locker keys file {self.path} not found (tools/provision.py "
                                   "writes it: locker-keys.json)") from None
            return
        if not force and mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            keys = parse_keys(self.path.read_text(), str(self.path))
        except (KeyFileError, OSError) as exc:
            if force:
                raise KeyFileError(str(exc)) from None
            log.error("locker keys file not reloaded (keeping %d keys) error=%s", len(self.keys), exc)
            return
        self.keys = keys
        log.info("locker code keys loaded banks=%d file=%s", len(keys), self.path)

    def get(self, bank: str) -> bytes | None:
        self.reload()  # one stat per call: the service asks once per bank per tick
        return self.keys.get(bank)


def add_key(path: Path, bank: str, rotate: bool = False) -> str:
    """Give `bank` a new random code key in the keys file (0600); returns it as hex. Refuses to
    replace an existing one unless `rotate` (that voids the codes the bank holds)."""
    try:
        return _add_key(path, bank, rotate=rotate)
    except KeyFileError:
        raise KeyFileError(f"bank {bank!r} already has a code key in {path}; rotating it voids "
                           "the codes the bank holds (reissue them)") from None


def ensure_key(path: Path, bank: str, rotate: bool = False) -> str:
    """The bank's code key (hex) from the keys file, or a new one written there (0600)."""
    import json
    try:
        current = json.loads(Path(path).read_text())
    except FileNotFoundError:
        current = {}
    if isinstance(current.get(bank), str) and not rotate:
        return current[bank]
    return _add_key(path, bank, rotate=True)


def check_mode(path: Path) -> None:
    """Warn when the keys file is readable by others (it should be 0600)."""
    try:
        if os.stat(path).st_mode & 0o077:
            log.warning("locker keys file %s is readable by group/others: chmod 600 it", path)
    except OSError:
        pass
