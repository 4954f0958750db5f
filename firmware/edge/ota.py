# Over-the-air updates, the device side (docs/ota.md). Loaded only when an update is offered,
# downloading, on trial or just rolled back: a device that never had one pays no heap for it.
#
# Two sets, ota/a and ota/b (each an edge/ package of .mpy files + `version`); main.py boots the
# one ota/state.json names. An offer (the `ota` command) is checked against the device's own
# key before a byte is fetched, the set is fetched chunk by chunk into the set that is not in
# use (resumable: a file is appended to <path>.part on flash, never held in RAM), each file's
# sha256 is checked against the manifest, and only then does the switch happen: state.json
# names it `try` (one rename), when the app is not busy, then a reboot. The new firmware
# confirms it (`cur`) once it is online again and its self-test passed; main.py gives up on it
# after TRIES boots without that.
import asyncio
import gc
import json
import os
from binascii import a2b_base64, hexlify, unhexlify
from hashlib import sha256

from edge import fsutil

STATE = "ota/state.json"
CHUNK = 512           # bytes per request: 684 B of base64 (larger ones fail on a fragmented 96 KB heap)
WAIT_MS = 4000        # a chunk not answered by then is asked for again
TRIAL_MS = 300000     # a trial not confirmed by then reboots (main.py counts the boots)
IDLE_MS = 500         # how often a staged update looks again whether the app is still busy
MAX_FILES = 64
MAX_BYTES = 512 * 1024


class Refused(Exception):
    pass


def _pads(key):
    k = key + bytes(64 - len(key))
    return bytes(b ^ 0x36 for b in k), bytes(b ^ 0x5C for b in k)


def hmac(key, *parts):
    # HMAC-SHA256 (RFC 2104; the boards' hashlib has no hmac), key <= 64 bytes
    ki, ko = _pads(key)
    h = sha256(ki)
    for p in parts:
        h.update(p)
    o = sha256(ko)
    o.update(h.digest())
    return o.digest()


def ota_key(cfg):
    """The device's update key: derived from its CoAP key (tools/provision.py gives every
    device one), so an update MAC can never pass for a CoAP request tag or the reverse."""
    c = cfg.get("coap") or {}
    k = c.get("key") or (cfg.get("mqtt") or {}).get("key")
    if not isinstance(k, str) or len(k) != 64:
        return None
    return hmac(unhexlify(k), b"phygital-ota-v1")


def offer_mac(key, dev, version, sha):
    # what the gateway signs for this device: its id, the version and the manifest's sha256
    return hmac(key, b"pe-ota-1\0", dev.encode(), b"\0", version.encode(), b"\0", sha.encode())


def _eq(a, b):
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0


def _size(p):
    try:
        return os.stat(p)[6]
    except OSError:
        return -1


def rmtree(p):
    try:
        entries = list(os.ilistdir(p))
    except OSError:
        return
    for e in entries:
        q = p + "/" + e[0]
        if e[1] == 0x4000:
            rmtree(q)
        else:
            os.remove(q)
    os.rmdir(p)


def file_sha(p):
    h = sha256()
    buf = bytearray(256)
    with open(p, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(buf if n == 256 else buf[:n])
    return hexlify(h.digest()).decode()


def _safe(path):
    return isinstance(path, str) and path.startswith("edge/") and path.endswith(".mpy") \
        and ".." not in path and "//" not in path and len(path) <= 64


class Ota:
    def __init__(self, rt):
        self.rt = rt
        self.st = fsutil.load_json(STATE, {"cur": None, "try": None, "n": 0})
        p = __import__("sys").path[0]
        self.running = p[4:] if p.startswith("ota/") else None
        self.want = None   # (f, o) of the chunk asked for
        self.got = None
        self.ev = asyncio.Event()
        self.task = None
        self.stats = {"chunks": 0, "retries": 0}
        self.min_free = None

    # --- boot ---------------------------------------------------------------------------
    def version(self):
        if self.running:
            try:
                with open("ota/" + self.running + "/version") as f:
                    return f.read().strip()
            except OSError:
                pass
        return None

    def trial(self):
        return self.running is not None and self.st.get("try") == self.running

    def boot(self):
        """At start: report a rollback main.py made; resume a download cut by a reset."""
        back = self.st.get("back")
        if back:
            self.rt.emit("ota.rolled_back", {"version": self._slot_version(back), "boots": self.st.get("n", 0),
                                             "running": self.rt.fw_version})
            self.st["back"] = None
            self.st["n"] = 0
            self._save()
        if self.trial():
            self.task = asyncio.create_task(self._confirm_when_ready())
            return
        off = fsutil.load_json(self._dir() + "/offer.json")
        if off:
            self.task = asyncio.create_task(self._run(off))

    def _slot_version(self, slot):
        try:
            with open("ota/" + slot + "/version") as f:
                return f.read().strip()
        except OSError:
            return None

    def _save(self):
        fsutil.makedirs("ota")
        fsutil.save_json(STATE, self.st)

    def _dir(self):
        # the set that is neither confirmed nor running
        return "ota/" + ("b" if "a" in (self.st.get("cur"), self.running) else "a")

    # --- trial ----------------------------------------------------------------------------
    async def _confirm_when_ready(self):
        rt = self.rt
        t0 = rt.uptime_ms()
        while True:
            if rt.client.is_connected() and rt.uptime_ms() - t0 > 2000:
                why = self.self_test()
                if why is None:
                    break
                rt.log("ota: self-test:", why)
            if rt.uptime_ms() - t0 > TRIAL_MS:
                rt.log("ota: not confirmed in time: rebooting")
                rt.hal.reset()
            await asyncio.sleep_ms(500)
        prev = self.st.get("cur")
        self.st["cur"] = self.running
        self.st["try"] = None
        self.st["n"] = 0
        self._save()  # the confirmation is this one rename
        rt.emit("ota.installed", {"version": rt.fw_version, "previous": self._slot_version(prev) if prev else None})
        rt.log("ota: confirmed", rt.fw_version)

    def self_test(self):
        """None when the update may stay: the app runs (its heartbeat moved since boot), the
        journal reads back, and the app's own `self_test()` (reader answers...) passed."""
        rt = self.rt
        if rt._alive == rt._boot_alive:
            return "app not started"
        try:
            rt.journal.entries(rt.journal.first - 1, 1)
        except Exception as e:
            return "journal: %r" % e
        test = getattr(rt.app, "self_test", None)
        if test:
            try:
                why = test()
            except Exception as e:
                why = repr(e)
            if why:
                return why
        return None

    # --- offer and download -------------------------------------------------------------
    def offer(self, args):
        """The `ota` command: check the offer against our key; start or resume the download."""
        rt = self.rt
        oid, version, sha, mac, size = (args.get(k) for k in ("id", "version", "sha", "mac", "size"))
        if not (isinstance(oid, str) and 0 < len(oid) <= 32 and isinstance(version, str) and 0 < len(version) <= 32
                and isinstance(sha, str) and len(sha) == 64 and isinstance(mac, str) and len(mac) == 64
                and isinstance(size, int) and 0 < size <= 8192):
            raise Refused("bad-args")
        key = ota_key(rt.cfg)
        if key is None:
            raise Refused("no-key")
        if not _eq(offer_mac(key, rt.dev, version, sha), unhexlify(mac)):
            raise Refused("bad-signature")
        if self.trial():
            raise Refused("on-trial")
        if version == rt.fw_version:
            return {"version": version, "already": True}
        if self.task is not None:
            off = fsutil.load_json(self._dir() + "/offer.json")
            if off and off.get("sha") == sha:
                return {"version": version, "resumed": True}
            raise Refused("busy-updating")
        off = {"id": oid, "version": version, "sha": sha, "mac": mac, "size": size}
        d = self._dir()
        cur = fsutil.load_json(d + "/offer.json")
        if not cur or cur.get("sha") != sha:
            rmtree(d)  # another set's leftovers: start clean
            fsutil.makedirs(d)
            fsutil.save_json(d + "/offer.json", off)
        self.task = asyncio.create_task(self._run(off))
        return {"version": version}

    def on_chunk(self, body):
        w = self.want
        if w and body.get("f") == w[0] and body.get("o") == w[1]:
            self.got = body
            self.ev.set()

    async def _fetch(self, oid, f, o, n):
        rt = self.rt
        self.want = (f, o)
        while True:
            if rt.client.is_connected():
                self.got = None
                self.ev.clear()
                gc.collect()  # the answer is parsed in one piece: give it the largest hole
                try:
                    await rt.client.publish(rt.prefix + "ota", rt._msg("get", {"id": oid, "f": f, "o": o, "n": n}), 0)
                    await asyncio.wait_for_ms(self.ev.wait(), WAIT_MS)
                except (OSError, asyncio.TimeoutError):
                    pass
                if self.got is not None:
                    b = self.got
                    self.got = None
                    self.want = None
                    if b.get("err"):
                        raise Refused(str(b["err"])[:32])
                    return a2b_base64(b.get("d") or "")
                self.stats["retries"] += 1
            else:
                await asyncio.sleep_ms(500)

    async def _get_file(self, oid, f, path, size):
        part = path + ".part"
        o = _size(part)
        if o > size:
            os.remove(part)
            o = -1
        if o < 0:
            open(part, "wb").close()
            o = 0
        while o < size:
            data = await self._fetch(oid, f, o, min(CHUNK, size - o))
            if not data or len(data) > size - o:
                raise Refused("bad-chunk")
            with open(part, "ab") as fh:  # appended straight to flash: resumable, no whole file in RAM
                fh.write(data)
            o += len(data)
            self.stats["chunks"] += 1
            data = None
            free = gc.mem_free()
            if self.min_free is None or free < self.min_free:
                self.min_free = free
        return part

    async def _run(self, off):
        rt = self.rt
        d = self._dir()
        try:
            m = await self._download(off, d)
        except Refused as e:
            rt.log("ota: refused", off["version"], e)
            rmtree(d)
            rt.emit("ota.failed", {"version": off["version"], "reason": str(e)})
            self.task = None
            return
        except Exception as e:  # a bug or a full flash: keep the running firmware
            rt.log("ota: failed", repr(e))
            rmtree(d)
            rt.emit("ota.failed", {"version": off["version"], "reason": "error: %s" % e})
            self.task = None
            return
        rt.emit("ota.staged", {"version": m, "chunks": self.stats["chunks"], "retries": self.stats["retries"],
                               "min_free": self.min_free})
        await self._switch(d[4:])

    async def _download(self, off, d):
        rt = self.rt
        oid = off["id"]
        mpath = d + "/manifest.json"
        if _size(mpath) < 0:
            part = await self._get_file(oid, -1, mpath, off["size"])
            if file_sha(part) != off["sha"]:
                os.remove(part)
                raise Refused("bad-manifest-hash")
            os.rename(part, mpath)
        gc.collect()
        with open(mpath) as f:
            man = json.load(f)
        files = man.get("files")
        if man.get("version") != off["version"] or not isinstance(files, list) or not 0 < len(files) <= MAX_FILES:
            raise Refused("bad-manifest")
        if rt.cfg["kind"] not in (man.get("kinds") or ()):
            raise Refused("wrong-kind")
        board = rt.cfg.get("board") or "unknown"
        if board not in (man.get("boards") or ()):
            raise Refused("wrong-board")
        heap = gc.mem_free() + gc.mem_alloc()
        if heap < (man.get("min_heap") or 0):
            raise Refused("heap-too-small")
        total = 0
        for e in files:
            if not (isinstance(e, list) and len(e) == 3 and _safe(e[0]) and isinstance(e[1], int)
                    and 0 <= e[1] <= MAX_BYTES and isinstance(e[2], str) and len(e[2]) == 64):
                raise Refused("bad-manifest")
            total += e[1]
        if total > MAX_BYTES:
            raise Refused("too-large")
        try:
            fs = os.statvfs(d)
            if total > fs[0] * fs[4]:
                raise Refused("no-space")
        except (AttributeError, OSError):
            pass
        man = None
        gc.collect()
        for i in range(len(files)):
            path, size, digest = files[i]
            final = d + "/" + path
            if _size(final) == size:  # renamed only after its hash matched
                continue
            fsutil.makedirs(final.rsplit("/", 1)[0])
            part = await self._get_file(oid, i, final, size)
            if file_sha(part) != digest:
                raise Refused("bad-hash " + path[:40])
            os.rename(part, final)
        with open(d + "/version", "w") as f:
            f.write(off["version"])
        os.remove(d + "/offer.json")  # the set is complete: nothing to resume
        return off["version"]

    async def _switch(self, slot):
        """Never mid-action: wait until the app is not busy and no command runs, then name the
        set `try` (one rename) and reboot into it."""
        rt = self.rt
        busy = getattr(rt.app, "busy", None)
        while rt._running or (busy and busy()):
            await asyncio.sleep_ms(IDLE_MS)
        self.st["try"] = slot
        self.st["n"] = 0
        self._save()
        rt.log("ota: switching to", slot)
        await asyncio.sleep_ms(300)  # let the sender publish ota.staged (it stays journaled anyway)
        rt.hal.reset()
