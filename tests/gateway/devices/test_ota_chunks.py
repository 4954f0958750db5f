"""The chunk and manifest formats a device reads with little heap (docs/ota.md, "Download"):
binary chunks, JSON refusals, and a manifest a device can read one file entry at a time."""
from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest

from gateway.devices import ota


def _files() -> list[tuple[str, bytes]]:
    return [("edge/__init__.mpy", b"M" * 31), ("edge/boot.mpy", bytes(range(256)) * 3)]


def _zip(manifest: bytes, files: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("manifest.json", manifest)
        for p, d in files:
            z.writestr(p, d)
    return buf.getvalue()


def test_a_chunk_is_binary_and_a_refusal_is_json():
    b = ota.read_bundle(ota.make_bundle("1.0.0", _files(), ["sample-pad"], ["sim"], 96256))
    msg = ota.chunk_message(b, "pad-1", "ro-abc", 1, 512, 480, None)
    assert msg[0] == 0  # never the start of JSON
    assert ota.read_chunk(msg) == (1, 512, "ro-abc", b.files[1][512:992])
    assert len(msg) == 7 + len("ro-abc") + 256  # the file's last 256 bytes: no padding
    head = ota.read_chunk(ota.chunk_message(b, "pad-1", "ro-abc", -1, 0, 64, None))
    assert head[0] == -1 and head[3] == b.manifest_bytes[:64]
    for f, o, err in ((1, 768, "no-such-chunk"), (7, 0, "no-such-chunk"), (0, 0, "halted")):
        m = json.loads(ota.chunk_message(b, "pad-1", "ro-abc", f, o, 10, 5, "halted" if err == "halted" else None))
        assert m == {"v": 1, "dev": "pad-1", "type": "ota.chunk", "t": 5,
                     "body": {"id": "ro-abc", "f": f, "o": o, "err": err}}


def test_the_manifest_is_read_as_a_device_reads_it():
    data = ota.make_bundle("1.0.0", _files(), ["sample-pad"], ["sim"], 96256)
    b = ota.read_bundle(data)
    assert ota.device_entries(b.manifest_bytes) == [
        (p, len(d), hashlib.sha256(d).hexdigest()) for p, d in _files()]


@pytest.mark.parametrize("shape, why", [
    ("files-first", r"\(the end\) expected"),
    ("long-head", "last field, within its first 512 bytes"),
    ("spaced", "last field"),
])
def test_a_manifest_a_device_cannot_read_is_refused(shape, why):
    files = _files()
    entries = [[p, len(d), hashlib.sha256(d).hexdigest()] for p, d in files]
    head = {"format": 1, "version": "1.0.0", "kinds": ["sample-pad"], "boards": ["sim"], "min_heap": 1}
    if shape == "files-first":
        m = json.dumps({"files": entries, **head}, separators=(",", ":"))
    elif shape == "long-head":
        head["boards"] = [f"board-{i:03d}" for i in range(60)]  # > 512 bytes before "files"
        m = json.dumps({**head, "files": entries}, separators=(",", ":"))
    else:
        m = json.dumps({**head, "files": entries})  # valid JSON, but `"files": [` has a space
    with pytest.raises(ota.BundleError, match="a device could not read it"):
        ota.read_bundle(_zip(m.encode(), files))
    with pytest.raises(ValueError, match=why):
        ota.device_entries(m.encode())


def test_a_bundle_is_the_same_bytes_whenever_it_is_built(monkeypatch):
    """The zip's entries carry no build time: the same files give the same bundle (and the same
    hash) a second later. A test that built one twice failed in CI when the two builds fell on
    either side of a 2-second boundary of the zip's DOS time."""
    import time as _time
    files = [("edge/__init__.mpy", b"M\x06init"), ("edge/boot.mpy", b"M\x06boot")]
    first = ota.make_bundle("1.0.0", files, ["sample-pad"], ["sim"], 96 * 1024)
    later = _time.time() + 3600
    monkeypatch.setattr(_time, "time", lambda: later)
    monkeypatch.setattr(_time, "localtime", lambda t=None: _time.gmtime(later))
    assert ota.make_bundle("1.0.0", files, ["sample-pad"], ["sim"], 96 * 1024) == first
