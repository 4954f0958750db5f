# Device runtime: connects the app to the gateway (docs/protocol.md). It owns the session,
# the event journal and its replay, the command dispatcher, the clock and the watchdog.
import asyncio
import json
import time

from edge import fsutil
from edge.cmdlog import CommandLog  # noqa: F401 - loaded with the runtime, used by runtime_boot
from edge.journal import Journal  # noqa: F401 - (the same)

FW_VERSION = "0.1.0"
WINDOW = 16  # events in flight without an ack
CMD_MAX = 1  # commands handled at once; over CoAP the poll waits for room (docs/coap.md)
ACK_TIMEOUT_MS = 10000  # re-send from the oldest un-acked event after this long
MAX_PAYLOAD = 4096


class Rejected(Exception):
    """Raise from a command handler before actuating: the command is answered `rejected`."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class Failed(Exception):
    """Raise from a command handler when actuation started but did not complete."""

    def __init__(self, reason, result=None):
        super().__init__(reason)
        self.reason = reason
        self.result = result


class Runtime:
    def __init__(self, cfg, hal, app_class, mqtt_class=None):
        # the rest is boot-only code: it lives in edge/runtime_boot.py, which edge/boot.py
        # drops once the runtime is built (~2 KB of bytecode on the 64-bit unix port)
        # ms since boot that never wrap: ticks_ms() wraps every 2**30 ms (12.4 days) on 32-bit
        # ports and a ticks_diff() is only right within half of that; _mono() adds up the
        # ticks and runs at least every second (_health), so no single diff gets near it
        self._tk = self._alive = self._boot_alive = time.ticks_ms()
        self._up = 0
        from edge.runtime_boot import init
        init(self, cfg, hal, app_class, mqtt_class)
        self._down_since = time.ticks_ms()

    # --- clock ------------------------------------------------------------------
    def now(self):
        """Unix ms from the gateway's clock, or None until the first ack set it."""
        if self._clock is None:
            return None
        return self._clock[0] + self._mono() - self._clock[1]

    def uptime_ms(self):
        return self._mono()

    def _mono(self):
        t = time.ticks_ms()
        self._up += time.ticks_diff(t, self._tk)
        self._tk = t
        return self._up

    def log(self, *parts):
        print(self.dev, *parts)

    # --- envelope ---------------------------------------------------------------
    def _msg(self, mtype, body, **extra):
        env = {"v": 1, "dev": self.dev, "type": mtype, "t": self.now(), "body": body}
        for k in extra:
            env[k] = extra[k]
        return env

    def _env(self, mtype, body, **extra):
        return json.dumps(self._msg(mtype, body, **extra))

    def _will(self, session):
        body = {"session": session, "epoch": self.journal.epoch}
        return (self.prefix + "status", self._env("offline", body).encode(), True, 1)

    # --- events -----------------------------------------------------------------
    def emit(self, etype, body):
        """Journal an event, then let the sender publish it. Returns its seq."""
        seq = self.journal.next
        self.journal.append(seq, self._msg(etype, body, seq=seq))  # dumped straight to flash
        self.stats["events"] += 1
        self._wake.set()
        return seq

    async def _sender(self):
        while True:
            try:
                await self._send_some()
            except Exception as e:  # MemoryError on a full heap: this task must not die (it
                # did, and events stopped for good: the tube's diverter confirms were never sent)
                self.log("sender:", repr(e))
                await asyncio.sleep_ms(200)

    async def _send_some(self):
        j = self.journal
        while True:
            # events only once the session's birth is answered (on_connect done: _down_since
            # None): before, a birth that failed sent the journal twice around it, out of order
            if self.client.is_connected() and not self._birth_due and self._down_since is None:
                if self._sent < j.first - 1:
                    self._sent = j.first - 1
                inflight = self._sent - (j.first - 1)
                if inflight and time.ticks_diff(time.ticks_ms(), self._sent_at) > ACK_TIMEOUT_MS:
                    self.log("no ack for", inflight, "events: re-sending from", j.first)
                    self._sent = j.first - 1
                    inflight = 0
                # one at a time: a batch of payloads in RAM needs many ~300 B blocks at once
                batch = j.entries(self._sent, 1 if inflight < WINDOW else 0)
                try:
                    for seq, payload in batch:
                        await self.client.publish(self.prefix + "evt", payload, 1)
                        self._sent = seq
                        self._sent_at = time.ticks_ms()
                except OSError:
                    pass  # the client reconnects; the journal still holds everything
                if batch:
                    continue
            elif self._birth_due and self.client.is_connected():
                try:
                    await self._publish_birth()
                except OSError:
                    pass
            self._wake.clear()
            try:
                await asyncio.wait_for_ms(self._wake.wait(), 1000)
            except asyncio.TimeoutError:
                pass

    def _on_ack(self, body):
        if body.get("epoch") != self.journal.epoch:
            return
        upto = body.get("upto")
        now = body.get("now")
        if isinstance(now, int):
            self._clock = (now, self._mono())
        if isinstance(upto, int) and self.journal.ack(upto):
            self._sent_at = time.ticks_ms()
            self._wake.set()

    def _on_new_epoch(self, body):
        # the gateway has other events under our seqs (our journal was restored from an older
        # copy): entries <= upto are settled, the rest go on in the epoch it names (same seqs)
        new, upto = body.get("new"), body.get("upto")
        if body.get("epoch") != self.journal.epoch or not isinstance(upto, int) or \
                not isinstance(new, str) or not 0 < len(new) <= 64 or new == self.journal.epoch:
            return
        now = body.get("now")
        if isinstance(now, int):
            self._clock = (now, self._mono())
        self.log("journal rolled back: new epoch", new, "from seq", upto + 1)
        self.journal.rebase(new, upto)
        self.client.will = self._will(self.state["session"] + 1)  # the next connect's will
        self._birth_due = True
        self._wake.set()

    # --- session ------------------------------------------------------------------
    async def _on_connect(self, client):
        session = self.state["session"] + 1
        self.state["session"] = session
        fsutil.save_json(self.state_path, self.state)
        client.will = self._will(session + 1)  # used by the next connect
        for i in range(20):  # a MemoryError (a fragmented heap: no hole for a frame now) is
            try:             # met again here, not by a new session: it dropped the link before;
                await client.subscribe(self.prefix + "cmd", 1)  # subscribing twice, or a
                await client.subscribe(self.prefix + "ctl", 1)  # second birth, changes nothing
                await client.subscribe("pe/1/gateway/state", 1)
                self._sent = self.journal.first - 1
                await self._publish_birth()
                await client.publish(self.prefix + "status", self._msg(
                    "online", {"session": session, "epoch": self.journal.epoch}), 1, True)
                break
            except MemoryError:
                if i == 19:
                    raise
                await asyncio.sleep_ms(200)
        self._down_since = None
        self.log("online session", session)
        self._wake.set()

    async def _publish_birth(self):
        j = self.journal
        body = {"kind": self.cfg["kind"], "fw": self.fw_version, "caps": self.app.caps + ["ping", "rebirth", "ota"],
                "cfg": self.cfg["cfg_hash"], "session": self.state["session"], "boot": self.state["boot"],
                "reset": self.reset_cause, "epoch": j.epoch, "first": j.first, "next": j.next}
        self._birth_due = False
        try:
            await self.client.publish(self.prefix + "birth", self._msg("birth", body), 1)
        except Exception:  # not sent (OSError, MemoryError): a rebirth still wants one (a
            self._birth_due = self.client.is_connected()  # new connection sends its own)
            raise
        self._sent = j.first - 1

    def _on_down(self):
        if self._down_since is None:
            self._down_since = time.ticks_ms()
        self.log("offline")

    # --- incoming -------------------------------------------------------------------
    def _on_message(self, topic, payload):
        if payload and payload[0] == 0:  # a binary OTA chunk on ctl (JSON never starts with 0)
            if self.ota and topic.endswith("/ctl"):
                self.ota.on_data(payload)  # written to flash now: payload is the link's buffer
            return
        try:
            if len(payload) > MAX_PAYLOAD:
                raise ValueError("oversized")
            msg = json.loads(payload)
            if not isinstance(msg, dict) or msg.get("v") != 1:
                raise ValueError("bad envelope")
            body = msg.get("body") or {}
            mtype = msg.get("type")
            if topic == "pe/1/gateway/state":
                self.gateway_online = mtype == "online"
            elif msg.get("dev") != self.dev or not isinstance(body, dict):
                raise ValueError("not for this device")
            elif topic.endswith("/ctl"):
                if mtype == "ack":
                    self._on_ack(body)
                elif mtype == "new_epoch":
                    self._on_new_epoch(body)
                elif mtype == "rebirth":
                    self._birth_due = True
                    self._wake.set()
                elif mtype == "ota.chunk" and self.ota:
                    self.ota.on_chunk(body)
            elif topic.endswith("/cmd") and mtype == "cmd":
                self._ncmd += 1
                try:
                    asyncio.create_task(self._command(msg.get("id"), body))
                except MemoryError:
                    self._ncmd -= 1  # never started: a count left behind would stop the poll
                    raise
        except (ValueError, TypeError, KeyError, MemoryError) as e:  # MemoryError: deeply nested JSON
            self.stats["bad_msgs"] += 1
            self.log("dropped message on", topic, ":", e)
            if isinstance(e, MemoryError):
                return False  # not taken: the CoAP transport asks the gateway for it again

    # --- commands -------------------------------------------------------------------
    async def _reply(self, cid, status, reason=None, result=None):
        for _ in range(3):
            try:
                await self.client.publish(self.prefix + "reply", self._msg(  # a dict: the client dumps it
                    "reply", {"status": status, "reason": reason, "result": result}, id=cid), 1)
                return
            except OSError:
                return  # the gateway re-sends the command; the stored outcome answers it then
            except MemoryError:  # no hole for it now: the heap changes as other tasks go on
                await asyncio.sleep_ms(200)

    def _full(self):
        return self._ncmd >= CMD_MAX

    async def _command(self, cid, body):
        try:
            await self._command1(cid, body)
        except MemoryError:  # no heap for this one now: unanswered, so the gateway re-sends it
            self.stats["bad_msgs"] += 1
        finally:
            self._ncmd -= 1

    async def _command1(self, cid, body):
        if not isinstance(cid, str) or not 0 < len(cid) <= 64:
            self.stats["bad_msgs"] += 1
            return
        done = self.cmds.get(cid)
        if cid in self._running or (done and done[1] == "started"):
            await self._reply(cid, "accepted")
            return
        if done:  # finished before (maybe before a reboot): answer again, never act again
            await self._reply(cid, done[1], done[2], done[3])
            return
        name = body.get("name")
        args = body.get("args") or {}
        deadline = body.get("deadline")
        now = self.now()
        handler = self.app.commands.get(name) or {"ping": self._cmd_ping, "rebirth": self._cmd_rebirth,
                                                  "ota": self._cmd_ota}.get(name)
        reason = None
        if isinstance(deadline, int) and now is not None and now > deadline:
            reason = "expired"
        elif handler is None:
            reason = "unknown-command"
        elif not isinstance(args, dict):
            reason = "bad-args"
        if reason:
            e = self.cmds.finish(cid, "rejected", reason)
            await self._reply(cid, "rejected", reason)
            return
        self.cmds.start(cid)
        self._running[cid] = True
        try:
            self.stats["cmds"] += 1
            await self._reply(cid, "accepted")
            status, reason, result = "done", None, None
            try:
                result = await handler(args)
            except Rejected as r:
                status, reason = "rejected", r.reason
            except Failed as f:
                status, reason, result = "failed", f.reason, f.result
            except Exception as e:  # a bug in a handler must not kill the runtime
                status, reason = "failed", "error: %s" % e
            self.cmds.finish(cid, status, reason, result)
        finally:  # a MemoryError before `finish`: the log says `started`, answered `accepted`
            del self._running[cid]
        await self._reply(cid, status, reason, result)

    async def _cmd_ping(self, args):
        return {"up": self.uptime_ms()}

    async def _cmd_rebirth(self, args):
        self._birth_due = True
        self._wake.set()
        return {}

    # --- over-the-air updates (edge/ota.py, docs/ota.md): one hook for every app ------------
    def _load_ota(self):
        import gc
        gc.collect()  # the OTA code packs into the lowest holes (the allocator's first fit)
        from edge.ota import Ota
        o = Ota(self)
        v = o.version()
        if v:
            self.fw_version = v
        self.ota = o

    async def _cmd_ota(self, args):
        for _ in range(20):
            try:
                if self.ota is None:
                    self._load_ota()
                return self.ota.offer(args)
            except MemoryError as e:  # no hole for the OTA code or the offer's check now: a
                self.log("ota: no heap for the offer:", e)  # failed answer would halt the
                await asyncio.sleep_ms(500)  # rollout; the heap moves on
            except Exception as e:
                if type(e).__name__ == "Refused":  # edge.ota.Refused (imported only with it)
                    raise Rejected(e.args[0])
                raise
        raise Rejected("no-heap")

    # --- health -----------------------------------------------------------------------
    def heartbeat(self):
        """Apps call this from their main loop; the watchdog is fed only while it is fresh."""
        self._alive = time.ticks_ms()

    async def _health(self):
        wdt_ms = self.cfg["wdt_ms"]
        wdt = self.hal.wdt(wdt_ms) if wdt_ms else None
        limit = self.cfg["offline_reboot_s"] * 1000
        while True:
            self._mono()
            if wdt and time.ticks_diff(time.ticks_ms(), self._alive) < wdt_ms // 2:
                wdt.feed()
            if limit and self._down_since is not None and \
                    time.ticks_diff(time.ticks_ms(), self._down_since) > limit:
                # drivers can wedge while looking connected: a clean reboot is the cure
                self.log("offline too long: rebooting")
                self.hal.reset()
            await asyncio.sleep_ms(1000)

    async def run(self):
        self.log("boot", self.state["boot"], "fw", self.fw_version, "journal", len(self.journal), "pending")
        if self.ota:
            self.ota.boot()
        keep_network = getattr(self.hal, "keep_network", None)
        if keep_network:
            asyncio.create_task(keep_network(self.cfg))
        asyncio.create_task(self.client.run())
        asyncio.create_task(self._sender())
        asyncio.create_task(self._health())
        await self.app.run()
