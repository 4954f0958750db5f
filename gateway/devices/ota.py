"""Over-the-air firmware updates, the gateway's side (docs/ota.md): bundles, the per-device
signature, the chunk server.

A bundle is a zip: `manifest.json` (version, target kinds and boards, minimum heap, and for
each file its path, size and sha256) and the `.mpy` files it lists (`edge/**.mpy`, built by
`tools.firmware build` with mpy-cross from firmware/). `read_bundle` refuses anything else.

The signature is per device: HMAC-SHA256 under a key derived from the device's CoAP key
(tools/provision.py gives every device one; the gateway has them in coap-keys.json), over the
device id, the version and the manifest's sha256. The device checks it before it fetches a
byte, then each file against the manifest. Why HMAC and not a public-key signature, and what
an attacker who owns one device can do: docs/ota.md.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import zipfile
from dataclasses import dataclass
from typing import Any

from gateway.devices import protocol

MAX_BUNDLE = 1024 * 1024     # an upload (zip) of at most this many bytes
MAX_FILES = 64               # the firmware has ~30 modules
MAX_TOTAL = 512 * 1024       # uncompressed .mpy bytes (the firmware is ~65 KB)
MAX_MANIFEST = 8192          # what a device accepts (edge/ota.py)
MAX_CHUNK = 2048             # bytes per chunk (a device asks for what fits its receive buffer)
HEAD = 512                   # the manifest's fields before its file list (edge/ota_get.py HEAD)
ENTRY = 160                  # one file entry, as a device reads it (edge/ota_get.py ENTRY)
VERSION_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+-]{0,31}\Z")
PATH_RE = re.compile(r"edge/[a-z0-9_/]{1,56}\.mpy\Z")
NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}\Z")
KEY_LABEL = b"phygital-ota-v1"
OTA_CHANNEL = "ota"


class BundleError(ValueError):
    """A bundle the gateway refuses; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class Bundle:
    version: str
    manifest: dict[str, Any]
    manifest_bytes: bytes
    files: tuple[bytes, ...]

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.manifest_bytes).hexdigest()

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {"version": self.version, "kinds": m["kinds"], "boards": m["boards"],
                "min_heap": m["min_heap"], "files": len(self.files),
                "bytes": sum(len(f) for f in self.files), "sha256": self.sha}


def make_bundle(version: str, files: list[tuple[str, bytes]], kinds: list[str],
                boards: list[str], min_heap: int) -> bytes:
    """The zip `read_bundle` takes (files: (path on the device, bytes))."""
    manifest = {"format": 1, "version": version, "kinds": sorted(kinds), "boards": sorted(boards),
                "min_heap": min_heap,
                "files": [[p, len(d), hashlib.sha256(d).hexdigest()] for p, d in files]}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        # a fixed date on every entry: the same files make the same bytes (reproducible)
        for p, d in [("manifest.json", json.dumps(manifest, separators=(",", ":")).encode()),
                     *files]:
            z.writestr(zipfile.ZipInfo(p, date_time=(1980, 1, 1, 0, 0, 0)), d,
                       compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def read_bundle(data: bytes) -> Bundle:
    """Check a bundle whole (sizes, paths, every hash) before the gateway keeps it."""
    if len(data) > MAX_BUNDLE:
        raise BundleError(f"bundle is {len(data)} bytes, more than {MAX_BUNDLE}: a firmware "
                          "bundle holds edge/**.mpy only (build it with `phygital firmware build`)")
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
        names = z.namelist()
        if "manifest.json" not in names or len(names) > MAX_FILES + 1:
            raise BundleError("not a firmware bundle: no manifest.json, or more than "
                              f"{MAX_FILES} files (build it with `phygital firmware build`)")
        info = z.getinfo("manifest.json")
        if info.file_size > MAX_MANIFEST:
            raise BundleError(f"manifest.json is over {MAX_MANIFEST} bytes")
        mbytes = z.read("manifest.json")
        m = json.loads(mbytes)
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, KeyError) as exc:
        raise BundleError(f"not a firmware bundle ({exc}): upload the zip "
                          "`phygital firmware build` writes") from None
    if not isinstance(m, dict) or m.get("format") != 1:
        raise BundleError("manifest.json: format must be 1")
    version = m.get("version")
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise BundleError("manifest.json: version must be 1-32 characters of 0-9 A-Z a-z . _ + -")
    for key in ("kinds", "boards"):
        v = m.get(key)
        if not isinstance(v, list) or not v or not all(isinstance(s, str) and NAME_RE.match(s) for s in v):
            raise BundleError(f"manifest.json: {key} must be a non-empty list of names")
    if not isinstance(m.get("min_heap"), int) or not 0 <= m["min_heap"] <= 16 * 1024 * 1024:
        raise BundleError("manifest.json: min_heap must be bytes (an integer)")
    entries = m.get("files")
    if not isinstance(entries, list) or not 0 < len(entries) <= MAX_FILES:
        raise BundleError(f"manifest.json: files must list 1-{MAX_FILES} files")
    files: list[bytes] = []
    total = 0
    seen: set[str] = set()
    for e in entries:
        if not (isinstance(e, list) and len(e) == 3 and isinstance(e[0], str)
                and PATH_RE.match(e[0]) and ".." not in e[0] and "//" not in e[0]
                and isinstance(e[1], int) and isinstance(e[2], str) and e[0] not in seen):
            raise BundleError(f"manifest.json: bad file entry {str(e)[:80]}: [path under edge/ "
                              "ending .mpy, size, sha256], each path once")
        seen.add(e[0])
        try:
            zi = z.getinfo(e[0])
        except KeyError:
            raise BundleError(f"{e[0]} is in the manifest but not in the bundle") from None
        total += zi.file_size
        if total > MAX_TOTAL:
            raise BundleError(f"the files are more than {MAX_TOTAL} bytes")
        d = z.read(e[0])
        if len(d) != e[1] or hashlib.sha256(d).hexdigest() != e[2]:
            raise BundleError(f"{e[0]}: size or sha256 differs from the manifest (a corrupted "
                              "bundle: build it again)")
        files.append(d)
    try:
        if [e[0] for e in device_entries(mbytes)] != [e[0] for e in entries]:
            raise ValueError("the file list differs")
    except (ValueError, IndexError, TypeError, json.JSONDecodeError) as exc:
        raise BundleError(f"manifest.json: a device could not read it ({exc}): build the bundle "
                          "with `phygital firmware build`") from None
    if "edge/__init__.mpy" not in seen or "edge/boot.mpy" not in seen:
        raise BundleError("the bundle must hold the whole edge package (edge/__init__.mpy, "
                          "edge/boot.mpy...): a device boots only from a complete set")
    return Bundle(version, m, mbytes, tuple(files))


def ota_key(coap_key: bytes) -> bytes:
    """The device's update key, derived from its CoAP key (firmware/edge/ota_offer.py ota_key)."""
    return hmac.new(coap_key, KEY_LABEL, hashlib.sha256).digest()


def offer_mac(key: bytes, dev: str, version: str, sha: str) -> str:
    msg = b"pe-ota-1\0" + dev.encode() + b"\0" + version.encode() + b"\0" + sha.encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def offer_args(bundle: Bundle, dev: str, coap_key: bytes, offer_id: str) -> dict[str, Any]:
    """The `ota` command's args for one device."""
    return {"id": offer_id, "version": bundle.version, "sha": bundle.sha,
            "size": len(bundle.manifest_bytes),
            "mac": offer_mac(ota_key(coap_key), dev, bundle.version, bundle.sha)}


def parse_request(topic: str, payload: bytes) -> tuple[str, str, int, int, int]:
    """A device's chunk request on pe/1/{dev}/ota: (dev, offer id, file, offset, length);
    ValueError if it is not one."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[3] != OTA_CHANNEL or not protocol.is_device_id(parts[2]):
        raise ValueError("not an ota topic")
    if len(payload) > protocol.MAX_PAYLOAD:
        raise ValueError("oversized")
    msg = json.loads(payload)
    if not isinstance(msg, dict) or msg.get("v") != 1 or msg.get("dev") != parts[2] \
            or msg.get("type") != "get" or not isinstance(msg.get("body"), dict):
        raise ValueError("not a chunk request")
    b = msg["body"]
    oid, f, o, n = b.get("id"), b.get("f"), b.get("o"), b.get("n")
    if not (isinstance(oid, str) and 0 < len(oid) <= 32 and type(f) is int and type(o) is int
            and type(n) is int and -1 <= f < MAX_FILES and 0 <= o <= MAX_TOTAL and 0 < n):
        raise ValueError("bad chunk request")
    return parts[2], oid, f, o, min(n, MAX_CHUNK)


def chunk_message(bundle: Bundle | None, dev: str, oid: str, f: int, o: int, n: int,
                  now: int | None, err: str | None = None) -> bytes:
    """The answer on pe/1/{dev}/ctl. The bytes go binary (a device writes them to flash from
    its receive buffer: no JSON, no base64): `0x00`, file + 1, offset (4 bytes, big-endian),
    len(offer id), offer id, the bytes. A refusal is JSON: `ota.chunk` with `err`."""
    if err is None and bundle is not None:
        data = bundle.manifest_bytes if f == -1 else (bundle.files[f] if f < len(bundle.files) else None)
        if data is None or o >= len(data):
            err = "no-such-chunk"
        else:
            oid_b = oid.encode()
            return bytes((0, f + 1)) + o.to_bytes(4, "big") + bytes((len(oid_b),)) + oid_b + data[o:o + n]
    body: dict[str, Any] = {"id": oid, "f": f, "o": o, "err": err or "no-bundle"}
    return json.dumps({"v": 1, "dev": dev, "type": "ota.chunk", "t": now, "body": body},
                      separators=(",", ":")).encode()


def read_chunk(msg: bytes) -> tuple[int, int, str, bytes]:
    """(file, offset, offer id, bytes) of a binary chunk (what a device reads; for tests)."""
    if len(msg) < 7 or msg[0] != 0:
        raise ValueError("not a binary chunk")
    k = 7 + msg[6]
    return msg[1] - 1, int.from_bytes(msg[2:6], "big"), msg[7:k].decode(), msg[k:]


def device_entries(mbytes: bytes) -> list[tuple[str, int, str]]:
    """The manifest as a device reads it (firmware/edge/ota_get.py: no file list in RAM): the
    fields before `"files":[` within the first HEAD bytes, then one `[path, size, sha256]` of at
    most ENTRY bytes after another, the list and the object closed by `]}`. ValueError if a
    device could not read it."""
    i = mbytes[:HEAD].find(b'"files":[')
    if i < 0:
        raise ValueError(f'"files" must be the manifest\'s last field, within its first {HEAD} bytes')
    json.loads(mbytes[:i] + b'"files":0}')
    pos = i + 9
    out = []
    while True:
        s = mbytes[pos:pos + ENTRY]
        j = s.find(b"]")
        if s[:1] != b"[" or j < 0:
            raise ValueError(f"file entry at byte {pos} is not [path,size,sha256] of at most {ENTRY} bytes")
        e = json.loads(s[:j + 1])
        out.append((e[0], e[1], e[2]))
        nxt = s[j + 1:j + 3]
        if nxt == b"]}" and pos + j + 3 == len(mbytes):
            return out
        if nxt[:1] != b",":
            raise ValueError(f"after the file entry at byte {pos}: ',' or ']}}' (the end) expected")
        pos += j + 2
