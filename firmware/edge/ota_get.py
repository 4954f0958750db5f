# Over-the-air updates: the download (docs/ota.md). Loaded only while a set is downloading.
#
# Heap is the constraint (a device has ~96 KB and its app keeps running): no file, chunk or
# file list is ever whole in RAM. The manifest is read one file entry at a time from flash
# (its header, then `[path, size, sha256]` after `[path, size, sha256]`); a chunk arrives as a
# binary message on ctl (no JSON, no base64) in the MQTT client's own receive buffer, and is
# written to flash and hashed right there, so a chunk allocates nothing; each file's sha256 is
# computed as it arrives (a resumed file's part on flash is hashed once first).
import asyncio
import gc
import json
import os
from binascii import unhexlify
from hashlib import sha256
from time import ticks_diff, ticks_ms

from edge import fsutil
from edge.ota import NO_ROOM, Refused, again, size_of, where

WAIT_MS = 4000        # a chunk not answered by then is asked for again
POLL_MS = 5           # how often a request looks whether its chunk came
MAX_FILES = 64
MAX_BYTES = 512 * 1024
HEAD = 512            # the manifest's fields before its file list (gateway.devices.ota: the same)
ENTRY = 160           # one file entry, read from flash at a time
HDR = 7               # a binary chunk: 0, file + 1, offset (4 bytes, big-endian), len(id), id, bytes


def _safe(path):
    return isinstance(path, str) and path.startswith("edge/") and path.endswith(".mpy") \
        and ".." not in path and "//" not in path and len(path) <= 65


def head(mpath):
    """The manifest without its file list, and where the list's first entry starts."""
    s = b""
    with open(mpath, "rb") as f:
        while True:  # in small reads: the fields are ~250 bytes, no 512-byte hole needed
            b = f.read(64)
            s += b
            i = s.find(b'"files":[')
            if i >= 0 or not b or len(s) >= HEAD:
                break
    b = None
    if not 0 <= i <= HEAD - 9:
        raise Refused("bad-manifest")
    try:
        m = json.loads(s[:i] + b'"files":0}')
    except ValueError:
        raise Refused("bad-manifest")
    return m, i + 9


def entry(mpath, pos):
    """The file entry at `pos`: ((path, size, sha256 bytes), where the next starts or -1)."""
    with open(mpath, "rb") as f:
        f.seek(pos)
        s = f.read(ENTRY)
    j = s.find(b"]")
    e = _entry(s[:j + 1] if s[:1] == b"[" and j > 0 else None)
    nxt = s[j + 1:j + 3]
    if nxt == b"]}":
        pos = -1
    elif nxt[:1] == b",":
        pos += j + 2
    else:
        raise Refused("bad-manifest")
    return e, pos


def _entry(s):
    try:
        e = json.loads(s) if s else None
        if isinstance(e, list) and len(e) == 3 and _safe(e[0]) and isinstance(e[1], int) \
                and 0 <= e[1] <= MAX_BYTES and isinstance(e[2], str) and len(e[2]) == 64:
            return e[0], e[1], unhexlify(e[2])
    except ValueError:
        pass
    raise Refused("bad-manifest")


class Getter:
    def __init__(self, ota, off, d):
        self.ota = ota
        self.rt = ota.rt
        self.off = off
        self.d = d
        self.oid = off["id"].encode()
        self.want = None  # (f, o, n) of the chunk asked for
        self.got = None   # bytes written, or a refusal (str)
        self.fh = None    # the .part being written
        self.h = None     # its sha256 so far
        self.topic = self.rt.prefix + "ota"
        self.chunks = 0
        self.retries = 0  # requests asked again (no answer in WAIT_MS, or no heap for them)
        self.nomem = 0    # MemoryErrors the download went on after (edge/ota.py _resumed)
        self.min_free = None
        # what a chunk may carry: it must fit the client's receive buffer with its topic
        room = getattr(self.rt.client, "rx_size", 512) - 4 - len(self.rt.prefix) - 3 - HDR - len(self.oid)
        self.chunk = max(64, room & ~15)

    def _low(self):
        # the lowest free heap after a collection (what is in use, not garbage), per file
        gc.collect()
        free = gc.mem_free()
        if self.min_free is None or free < self.min_free:
            self.min_free = free

    # --- the chunk receiver (runtime._on_message, from the link's reader: must not wait) ---
    def on_data(self, mv):
        """A binary chunk; `mv` is the link's receive buffer: written and hashed here."""
        w = self.want
        if w is None or len(mv) < HDR or mv[1] != w[0] + 1 \
                or (mv[2] << 24 | mv[3] << 16 | mv[4] << 8 | mv[5]) != w[1]:
            return
        oid = self.oid
        k = HDR + len(oid)
        if mv[6] != len(oid) or len(mv) < k:
            return
        for i in range(len(oid)):  # compared in place: no copy of it per chunk
            if mv[HDR + i] != oid[i]:
                return
        d = mv[k:]
        self.want = None
        if not 0 < len(d) <= w[2]:
            self.got = "bad-chunk"
        else:
            try:
                self.fh.write(d)
                self.h.update(d)
                self.got = len(d)
            except OSError as e:
                self.got = "error: %s" % e
            except MemoryError:  # what is on flash and the hash may differ now: go on from
                self.got = -1    # the part on flash (_fetch: as any MemoryError, resumed)

    def on_chunk(self, body):
        """A JSON `ota.chunk`: the gateway's refusal (`err`) of the chunk asked for."""
        w = self.want
        if w and body.get("f") == w[0] and body.get("o") == w[1]:
            self.want = None
            self.got = str(body.get("err") or "bad-chunk")[:32]

    async def _fetch(self, f, o, n):
        rt = self.rt
        short = 0  # requests in a row that found no room in the heap
        while True:
            if rt.client.is_connected():
                self.got = None
                self.want = (f, o, n)
                try:
                    await rt.client.publish(self.topic, rt._msg(
                        "get", {"id": self.off["id"], "f": f, "o": o, "n": n}), 0)
                    # the answer polled for: sleep_ms allocates nothing, while a wait_for's
                    # task and frames (~350 B) were the allocation that failed most at 96 KB
                    t = ticks_ms()
                    while self.got is None and ticks_diff(ticks_ms(), t) < WAIT_MS:
                        await asyncio.sleep_ms(POLL_MS)
                except OSError:
                    pass
                except MemoryError as e:  # a fragmented heap had no hole for the request: the
                    short += 1       # app's garbage moves on, ask again (a download waits, never
                    if short > NO_ROOM:  # fails on one allocation), up to NO_ROOM times in a row
                        where(rt, e)
                        raise Refused("no-heap")
                    await asyncio.sleep_ms(200)
                g = self.got
                if g == -1:  # the chunk met a MemoryError on its way to flash: the download
                    raise MemoryError("chunk")  # resumes from the part (edge/ota.py _resumed)
                if g is not None:
                    if isinstance(g, str):
                        raise Refused(g)
                    return g
                self.retries += 1
            else:
                await asyncio.sleep_ms(500)

    async def _get_file(self, f, path, size, digest):
        part = path + ".part"
        o = size_of(part)
        if o > size:
            os.remove(part)
            o = -1
        h = sha256()
        if o > 0:  # resumed after a reset: hash what is on flash already
            buf = bytearray(128)
            with open(part, "rb") as fh:
                while True:
                    k = fh.readinto(buf)
                    if not k:
                        break
                    h.update(memoryview(buf)[:k])
            buf = None
        o = max(o, 0)
        self.h = h
        self.fh = open(part, "ab")  # appended straight to flash: resumable, no whole file in RAM
        try:
            while o < size:
                co = None
                for _ in range(NO_ROOM):  # the request's frame (~250 B), the MemoryError met
                    try:                  # most at 96k: made again here, not resumed from flash
                        co = self._fetch(f, o, min(self.chunk, size - o))
                        break
                    except MemoryError:
                        self.nomem += 1
                        await asyncio.sleep_ms(200)
                if co is None:
                    raise MemoryError("no hole for a request")
                o += await co
                co = None
                self.chunks += 1
        finally:
            self.fh.close()
            self.fh = None
            self.h = None
        if h.digest() != digest:
            os.remove(part)
            return None
        os.rename(part, path)
        return path

    # the steps are small functions on purpose: each function's bytecode is one allocation
    # when the module loads, and a fragmented heap has no large holes (a 508-byte one failed)
    async def run(self):
        off = self.off
        mpath = self.d + "/manifest.json"
        if size_of(mpath) < 0:
            if not await self._get_file(-1, mpath, off["size"], unhexlify(off["sha"])):
                raise Refused("bad-manifest-hash")
        first = await again(self._check, mpath)
        self._low()
        await again(self._room, mpath, first)
        i = 0
        pos = first
        while pos >= 0:
            e, pos = await again(entry, mpath, pos)
            await self._file(i, e)
            i += 1
            self._low()
        with open(self.d + "/version", "w") as f:
            f.write(off["version"])
        os.remove(self.d + "/offer.json")  # the set is complete: nothing to resume
        return off["version"]

    def _check(self, mpath):
        # the manifest's fields: for us? (its file list is read entry by entry)
        cfg = self.rt.cfg
        man, first = head(mpath)
        if man.get("version") != self.off["version"]:
            raise Refused("bad-manifest")
        if cfg["kind"] not in (man.get("kinds") or ()):
            raise Refused("wrong-kind")
        if (cfg.get("board") or "unknown") not in (man.get("boards") or ()):
            raise Refused("wrong-board")
        if gc.mem_free() + gc.mem_alloc() < (man.get("min_heap") or 0):
            raise Refused("heap-too-small")
        return first

    def _room(self, mpath, pos):
        # every entry checked, and the sizes added up, before a byte of a file is fetched
        total = count = 0
        while pos >= 0:
            e, pos = entry(mpath, pos)
            total += e[1]
            count += 1
            if count > MAX_FILES:
                raise Refused("bad-manifest")
        if total > MAX_BYTES:
            raise Refused("too-large")
        try:
            fs = os.statvfs(self.d)
            if total > fs[0] * fs[4]:
                raise Refused("no-space")
        except (AttributeError, OSError):
            pass

    async def _file(self, i, e):
        path, size, digest = e
        final = self.d + "/" + path
        if size_of(final) == size:  # renamed only after its hash matched
            return
        fsutil.makedirs(final.rsplit("/", 1)[0])
        if not await self._get_file(i, final, size, digest):
            raise Refused("bad-hash " + path[:40])
