# Over-the-air updates, the device side (docs/ota.md). Loaded only when an update is offered,
# downloading, on trial or just rolled back: a device that never had one pays no heap for it.
#
# Two sets, ota/a and ota/b (each an edge/ package of .mpy files + `version`); main.py boots the
# one ota/state.json names. An offer (the `ota` command) is checked against the device's own
# key before a byte is fetched, the set is fetched chunk by chunk into the set that is not in
# use (edge/ota_get.py, loaded only then: resumable, a file is appended to <path>.part on flash,
# never held in RAM), each file's sha256 is checked against the manifest, and only then does
# the switch happen: state.json names it `try` (one rename), when the app is not busy, then a
# reboot. The new firmware confirms it (`cur`) once it is online again and its self-test passed
# (edge/ota_trial.py, loaded only on trial); main.py gives up on it after TRIES boots without that.
import asyncio
import os

from edge import fsutil

STATE = "ota/state.json"
IDLE_MS = 500         # how often a staged update looks again whether the app is still busy


class Refused(Exception):
    pass


async def _resumed(g):
    # a MemoryError anywhere in the download (a fragmented heap with no hole at that moment):
    # pause and go on where it stopped (the download resumes from the parts on flash)
    for _ in range(5):
        try:
            return await g.run()
        except MemoryError:
            await asyncio.sleep_ms(1000)
    raise Refused("no-heap")


async def _load_getter():
    # the download's module, loaded now: on a fragmented heap a function's bytecode may find
    # no hole at once; the app's garbage moves on, so try again for a while before giving up
    for _ in range(20):
        try:
            from edge.ota_get import Getter
            return Getter
        except MemoryError:
            drop("ota_get")
            await asyncio.sleep_ms(500)
    raise Refused("no-heap")


def drop(name):
    """Forget module edge.<name> (loaded for one step): its code leaves the heap (~2 KB of
    ota_offer's 3.7 KB; its names stay interned)."""
    import sys
    import edge
    sys.modules.pop("edge." + name, None)
    try:
        delattr(edge, name)
    except (AttributeError, KeyError):  # MicroPython: KeyError when it is not there
        pass


def size_of(p):
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


class Ota:
    def __init__(self, rt):
        self.rt = rt
        self.st = fsutil.load_json(STATE, {"cur": None, "try": None, "n": 0})
        p = __import__("sys").path[0]
        self.running = p[4:] if p.startswith("ota/") else None
        self.task = None
        self.get = None    # the download under way (edge/ota_get.py Getter)

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
            self.rt.emit("ota.rolled_back", {"version": self.slot_version(back), "boots": self.st.get("n", 0),
                                             "running": self.rt.fw_version})
            self.st["back"] = None
            self.st["n"] = 0
            self.save()
        if self.trial():
            from edge.ota_trial import confirm_when_ready
            self.task = asyncio.create_task(confirm_when_ready(self))
            return
        off = fsutil.load_json(self._dir() + "/offer.json")
        if off:
            self.task = asyncio.create_task(self._run(off))

    def slot_version(self, slot):
        try:
            with open("ota/" + slot + "/version") as f:
                return f.read().strip()
        except OSError:
            return None

    def save(self):
        fsutil.makedirs("ota")
        fsutil.save_json(STATE, self.st)

    def _dir(self):
        # the set that is neither confirmed nor running
        return "ota/" + ("b" if "a" in (self.st.get("cur"), self.running) else "a")

    # --- offer and download -------------------------------------------------------------
    def offer(self, args):
        """The `ota` command: check the offer against our key; start or resume the download."""
        rt = self.rt
        from edge.ota_offer import check
        try:
            oid, version, sha, mac, size = check(rt, args)
        finally:
            check = None
            drop("ota_offer")
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

    def on_data(self, mv):
        if self.get:
            self.get.on_data(mv)

    def on_chunk(self, body):
        if self.get:
            self.get.on_chunk(body)

    async def _run(self, off):
        rt = self.rt
        d = self._dir()
        g = None
        try:
            g = self.get = (await _load_getter())(self, off, d)
            m = await _resumed(g)
        except Refused as e:
            rt.log("ota: refused", off["version"], e)
            rmtree(d)
            rt.emit("ota.failed", {"version": off["version"], "reason": str(e)})
            self.task = None
            return
        except Exception as e:  # a bug or a full flash: keep the running firmware
            rt.log("ota: failed", repr(e))
            __import__("sys").print_exception(e)  # where, on the console
            rmtree(d)
            rt.emit("ota.failed", {"version": off["version"], "reason": "error: %s" % e})
            self.task = None
            return
        finally:
            self.get = None
        rt.emit("ota.staged", {"version": m, "chunks": g.chunks, "retries": g.retries, "min_free": g.min_free})
        await self._switch(d[4:])

    async def _switch(self, slot):
        """Never mid-action: wait until the app is not busy and no command runs, then name the
        set `try` (one rename) and reboot into it."""
        rt = self.rt
        busy = getattr(rt.app, "busy", None)
        while rt._running or (busy and busy()):
            await asyncio.sleep_ms(IDLE_MS)
        self.st["try"] = slot
        self.st["n"] = 0
        self.save()
        rt.log("ota: switching to", slot)
        await asyncio.sleep_ms(300)  # let the sender publish ota.staged (it stays journaled anyway)
        rt.hal.reset()
