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
import gc
import os

from edge import fsutil

STATE = "ota/state.json"
IDLE_MS = 500         # how often a staged update looks again whether the app is still busy


class Refused(Exception):
    pass


NO_ROOM = 50          # a step tried again this many times, 200 ms apart, when the heap has no hole
STALL = 30            # MemoryErrors in a row, 1 s apart, with no chunk fetched in between: `no-heap`
HEAP_RESETS = 1       # resets an offer may take for a fresh heap before `no-heap` ends it (_run)


async def again(fn, *a):
    """fn(*a), tried again when it finds no hole in the heap: on a fragmented heap a MemoryError
    is about this moment (the app's garbage moves on), so wait and try again, NO_ROOM times."""
    for _ in range(NO_ROOM - 1):
        try:
            return fn(*a)
        except MemoryError:
            await asyncio.sleep_ms(200)
    return fn(*a)


async def emit(rt, etype, body):
    # an event, tried again on a MemoryError (again()), but never journaled twice: the
    # journal may have taken it before the error (its offsets' list growing after the write)
    for _ in range(NO_ROOM):
        n = rt.journal.next
        try:
            rt.emit(etype, body)
            return
        except MemoryError:
            if rt.journal.next != n:
                rt._wake.set()
                return
            await asyncio.sleep_ms(200)
    raise MemoryError


def where(rt, e):
    # the spot of a MemoryError on the console (the log names the line that found no hole)
    try:
        rt.log("ota: no heap:", e)
        __import__("sys").print_exception(e)
    except MemoryError:
        pass


async def _resumed(g):
    # a MemoryError anywhere in the download (a fragmented heap with no hole at that moment):
    # pause and go on where it stopped (from the parts on flash: nothing fetched twice but the
    # chunk in flight). `no-heap` only after STALL of them in a row with no chunk in between.
    stall = 0
    while True:
        n = g.chunks
        try:
            return await g.run()
        except MemoryError as e:
            g.nomem += 1
            where(g.rt, e)
            stall = stall + 1 if g.chunks == n else 1
            if stall >= STALL:
                raise Refused("no-heap")
            await asyncio.sleep_ms(1000)


async def _getter(ota, off, d):
    # the download's module and its Getter, made now: on a fragmented heap a function's
    # bytecode or the Getter's attributes may find no hole at once; the app's garbage moves on,
    # so try again for a while before giving up
    G = None
    for _ in range(NO_ROOM):
        try:
            gc.collect()  # the allocator then fills the lowest holes first: the module's
            if G is None:  # long-lived code packs there instead of pinning new holes
                from edge.ota_get import Getter as G
            return G(ota, off, d)
        except MemoryError as e:
            where(ota.rt, e)
            if G is None:
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
        reason = None
        while not rt.client.is_connected():  # resumed at boot: the link's session set up first,
            await asyncio.sleep_ms(IDLE_MS)  # as when an offer comes, then the download's code
        try:
            g = self.get = await _getter(self, off, d)
            m = await _resumed(g)
        except Refused as e:
            reason = e.args[0]
        except Exception as e:  # a bug or a full flash: keep the running firmware
            reason = "error"
            try:
                reason = "error: %s" % e
                __import__("sys").print_exception(e)  # where, on the console
            except MemoryError:
                pass
        finally:
            self.get = None
        if reason == "no-heap" and await self._fresh_heap(off, d):
            return
        if reason is not None:
            await self._failed(off["version"], d, reason)
            return
        await emit(rt, "ota.staged", {"version": m, "chunks": g.chunks, "retries": g.retries,
                                      "nomem": g.nomem, "min_free": g.min_free})
        await self._switch(d[4:])

    async def _fresh_heap(self, off, d):
        """A download that found no hole for this long has a fragmented heap, not a full one
        (~5 KB free at 96k, in small holes, and an idle app's garbage does not move them): a
        reset gives a fresh heap, and boot() resumes from the parts on flash. HEAP_RESETS times
        an offer (counted in its offer.json), then `no-heap` ends it as before."""
        n = off.get("resets", 0)
        if n >= HEAP_RESETS:
            return False
        off["resets"] = n + 1
        try:
            await again(fsutil.save_json, d + "/offer.json", off)
        except MemoryError:
            return False
        try:
            self.rt.log("ota: no heap: a reset, then the download goes on")
        except MemoryError:
            pass
        await self._idle()
        self.rt.hal.reset()
        return True

    async def _idle(self):
        # never mid-action: the app not busy and no command running
        rt = self.rt
        busy = getattr(rt.app, "busy", None)
        while rt._running or (busy and busy()):
            await asyncio.sleep_ms(IDLE_MS)

    async def _failed(self, version, d, reason):
        # nothing installed: the set goes (a partial or unverified one never boots), and the
        # gateway is told why; each step waits for heap rather than dying silently
        try:
            self.rt.log("ota: refused", version, reason)
            try:
                await again(rmtree, d)
            except MemoryError:  # left on flash without its `version`: never booted
                pass
            await emit(self.rt, "ota.failed", {"version": version, "reason": reason})
        finally:
            self.task = None

    async def _switch(self, slot):
        """Never mid-action: wait until the app is not busy and no command runs, then name the
        set `try` (one rename) and reboot into it."""
        rt = self.rt
        await self._idle()
        self.st["try"] = slot
        self.st["n"] = 0
        await again(self.save)  # tmp file then rename: a MemoryError before it leaves the old state
        rt.log("ota: switching to", slot)
        await asyncio.sleep_ms(300)  # let the sender publish ota.staged (it stays journaled anyway)
        rt.hal.reset()
