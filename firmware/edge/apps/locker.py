# Locker bank: compartments with a lock solenoid and a door reed each (optional occupancy
# sensor), a keypad + display on one UART. docs/lockers.md is the contract: states, commands,
# events, timings, what works offline.
#
# Safety rules enforced here, whatever the gateway says:
# * one lock energized at a time (solenoid power budget), pulse never longer than 2 s;
# * a door must be seen open after its pulse, else one retry, then `lock.jammed` + blocked;
# * a door that opens without an unlock is `door.forced`: alarm, compartment blocked;
# * no lock is ever energized at boot; a pickup cut short by a power failure is resolved by
#   the door (and occupancy) sensor, not guessed;
# * a pickup code opens once; codes are checked locally, so pickups work offline.
#
# Memory: per compartment a short list (not a dict) and entries in flat lists/bytearrays,
# indexed by position `i`; `n` is the compartment number used on the wire.
import asyncio
import hashlib
import json
import sys
import time
from binascii import hexlify, unhexlify

from micropython import const

from edge import fsutil
from edge.runtime import Failed, Rejected

# fields of a compartment record (persisted as a JSON list, in this order)
_O = const(0)  # order id
_H = const(1)  # live code verifier: HMAC-SHA256, 32 raw bytes (hex on flash and the wire), or None;
# 33 bytes: a legacy SHA-256 hash (firmware before keyed codes) + a marker byte (locker_boot)
_E = const(2)  # code expiry, unix ms, or None
_X = const(3)  # out of order: 0/1
_B = const(4)  # blocked cause ("forced", "jammed") or None
_W = const(5)  # why the door is (about to be) open: pickup/load/service/retrieve/forced/boot
_P = const(6)  # unlock pending: authorised, not yet seen open (persisted: a boot resolves it)
_PH = const(7)  # the verifier (raw) a pending pickup spent (given back if the door never opens)
_NF = const(8)

SIZES = ("S", "M", "L")
STAFF_CMDS = ("load_codes", "revoke", "open_all", "set_out_of_order", "clear", "status", "texts")
STAFF_WHY = ("load", "service", "retrieve")
USED_KEEP = 32  # spent/revoked code verifiers remembered (to say `code.reused`, not `unknown`)
USED_BYTES = 8  # bytes of a spent hash kept, as 16 hex digits (collisions are irrelevant at this length)

# What the display says: the store's words ([screens] on the gateway, docs/lockers.md "Texts"),
# one line each in ONE bytes object (no string per text in the heap): line 0 is the texts' rev,
# then the texts in the order of the _T_* indexes below. These are the built-in English ones; the
# gateway's `texts` command replaces them and they are kept on flash (texts.txt) for an offline
# bank. A line goes to the display as a slice of it (with its own "\n"), formatted when it has a %.
TX = (b"0\n"
      b"Enter your pickup code, then #\n"
      b"Cleared - Enter your pickup code, then #\n"
      b"This locker is offline for new orders - your code still works\n"
      b"Please enter all %d digits of your code, then #\n"
      b"Code OK - door %d is opening\n"
      b"Door %d is open - please take your parcel and close the door\n"
      b"Door %d is opening - please wait\n"
      b"Thank you - enjoy your order\n"
      b"Code not recognised - please check it and try again\n"
      b"This code has already been used - if you did not get your parcel, please ask staff\n"
      b"This code is no longer valid - please contact the store\n"
      b"This code has expired - please contact the store\n"
      b"Locker %d needs staff attention - please ask at the store counter\n"
      b"Door %d is open right now - please ask at the store counter\n"
      b"Too many wrong codes - the keypad is locked for %s\n"
      b"The keypad is locked - please try again in %s\n"
      b"Sorry, door %d did not open. Staff have been told - please ask at the store counter, your parcel is safe\n"
      b"Door %d is still open - please close it\n"
      b"Sorry, the locker restarted - please enter your code again\n"
      b"1 minute\n"
      b"%d minutes\n"
      b"This locker bank is resting - please ask at the store counter\n")
_T_IDLE = const(1)
_T_CLEARED = const(2)
_T_OFFLINE = const(3)
_T_DIGITS = const(4)
_T_OK = const(5)
_T_OPEN = const(6)
_T_WAIT = const(7)
_T_THANKS = const(8)
_T_UNKNOWN = const(9)
_T_USED = const(10)
_T_REVOKED = const(11)
_T_EXPIRED = const(12)
_T_STAFF = const(13)
_T_BUSY = const(14)
_T_LOCKOUT = const(15)
_T_LOCKED = const(16)
_T_JAMMED = const(17)
_T_AJAR = const(18)
_T_RESTARTED = const(19)
_T_MIN1 = const(20)
_T_MINS = const(21)
_T_RESTING = const(22)


def _drop(name):
    """Forget the module edge.apps.<name>: once nothing runs its code the GC frees it."""
    sys.modules.pop("edge.apps." + name, None)
    import edge.apps
    try:
        delattr(edge.apps, name)
    except AttributeError:
        pass


class LockerBank:
    caps = ["lock", "door", "keypad", "set_order", "load_codes", "revoke", "open", "open_all",
            "set_out_of_order", "clear", "status", "texts"]

    def __init__(self, rt, hal, cfg):
        # config, pins and the saved state: run once, so the code lives in a module that is
        # freed after boot (see run())
        from edge.apps import locker_boot
        locker_boot.setup(self, rt, hal, cfg)

    # --- helpers ----------------------------------------------------------------------
    def _now(self):
        t = self.rt.now()
        up = self.rt.uptime_ms()  # not ticks: one ticks_diff is wrong past 6.2 days on 32-bit ports
        if t is not None:
            self.clk = (t, up)
            return t
        if self.clk:
            return self.clk[0] + up - self.clk[1]
        return None  # never had a clock: code expiry cannot be checked (the gateway revokes)

    def _save(self):
        rem = 0
        if self._locked():
            rem = time.ticks_diff(self.lk_until, time.ticks_ms())
        # the same v2 JSON as before the hashes were kept raw (a bank can be downgraded), written
        # a record at a time: json.dump would write raw bytes as a str, and a copy of all the
        # records with hex hashes would be ~4 KB of garbage per save
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write('{"v": 2')
            # lk: [level, ms of lockout left, then ticks (they restart at boot: locker_boot turns
            # them into ages): now, the last failure, the failures in the window; gateway clock]
            for key, val in (("ids", self.ids), ("used", self.used),
                             ("lk", [self.lk_level, rem, time.ticks_ms(), self.lk_last, self.lk_fails, self.rt.now()]),
                             ("clk", self._now()), ("c", self.c)):
                f.write(', "%s": ' % key)
                if key != "c":
                    json.dump(val, f)
                    continue
                for k, s in enumerate(val):
                    f.write(", " if k else "[")
                    if s[_H] or s[_PH]:  # a MAC as "m" + 64 hex; a legacy hash as the 64 hex it was
                        s = [(hexlify(x[:32]).decode() if len(x) > 32 else "m" + hexlify(x).decode())
                             if isinstance(x, bytes) else x for x in s]
                    json.dump(s, f)
                f.write("]" if val else "[]")
            f.write("}")
        fsutil.replace(tmp, self.path)

    def _emit(self, etype, i, **kw):
        kw["compartment"] = self.ids[i] if i is not None else None
        self.rt.emit(etype, kw)

    def _line(self, k):
        """Text k of self.tx (its line k) as (start, end past its "\n"): no allocation."""
        tx = self.tx
        a = 0
        for _ in range(k):
            a = tx.find(b"\n", a) + 1
        return a, tx.find(b"\n", a) + 1

    def _text(self, k, arg=None):
        a, b = self._line(k)
        t = self.tx[a:b - 1].decode()
        return t if arg is None else t % arg

    def _minutes(self, secs):
        m = max(1, (int(secs) + 59) // 60)
        return self._text(_T_MIN1) if m == 1 else self._text(_T_MINS, m)

    def _show(self, k, arg=None):
        """Show text k (T_*), formatted with `arg` when it has a %."""
        try:
            a, b = self._line(k)
            if arg is None or self.tx.find(b"%", a, b) < 0:
                self.disp.write(memoryview(self.tx)[a:b])
            else:
                self.disp.write(self._text(k, arg).encode() + b"\n")
        except OSError:
            pass  # a dead display must not stop the bank

    def _idle(self):
        """Enter your code; or, when no compartment can serve (all out of order or blocked),
        the store's words for a resting bank and where to go instead."""
        for s in self.c:
            if not (s[_X] or s[_B]):
                return _T_IDLE
        return _T_RESTING if self.c else _T_IDLE

    def _occ(self, i):
        p = self.occ[i]
        return None if p is None else p.value()

    def _state(self, i):
        s = self.c[i]
        if s[_B]:
            return "blocked"
        if s[_X]:
            return "out_of_order"
        if s[_O]:
            return "loaded" if s[_H] else "held"
        return "free"

    def _mac(self, msg):
        """HMAC-SHA256 (RFC 2104) under the bank's code key, from hashlib (the boards have no
        hmac module): ki/ko are the key, zero-padded to the 64-byte block, XOR 0x36/0x5c."""
        h = hashlib.sha256(self.ki)
        h.update(msg)
        o = hashlib.sha256(self.ko)
        o.update(h.digest())
        return o.digest()

    def _find(self, h, g=None):
        """The position holding the live verifier `h` (MAC; `g`: the legacy SHA-256 of the same
        code, for legacy entries), or None. Constant time in the verifier: every live one is
        compared in full (a typed code must not learn how many bytes matched)."""
        found = None
        for i in range(len(self.c)):
            x = self.c[i][_H]
            if x is not None:
                y = g if len(x) > 32 else h
                if y is not None:
                    d = 0
                    for k in range(32):
                        d |= x[k] ^ y[k]
                    if not d:
                        found = i
        return found

    def _forget(self, h, keep=False):
        """Drop the spent/revoked entry of raw hash `h` (keep=True: only return it), or None."""
        h = hexlify(h[:USED_BYTES]).decode()
        for k in range(len(self.used)):
            u = self.used[k]
            if u[0] == h:
                if not keep:
                    self.used.pop(k)
                return u
        return None

    def _remember(self, h, i, kind):
        self._forget(h)
        self.used.append([hexlify(h[:USED_BYTES]).decode(), self.ids[i], self.c[i][_O], kind])
        if len(self.used) > USED_KEEP:
            self.used.pop(0)

    def _clear_order(self, s):
        s[_O] = s[_H] = s[_E] = s[_PH] = None

    # --- doors ------------------------------------------------------------------------------
    def _closed(self, i, open_ms):
        s = self.c[i]
        why = s[_W]
        s[_W] = None
        self.ajar[i] = 0
        occ = self._occ(i)
        self._emit("door.closed", i, why=why, open_ms=open_ms, occupied=occ)
        if why == "pickup":
            if occ == 1:  # closed with the parcel still inside: the code is spent, staff reissue
                s[_PH] = None
                self._emit("pickup.incomplete", i, order=s[_O])
            else:
                self._emit("pickup.collected", i, order=s[_O], occupied=occ)
                self._clear_order(s)
                self._show(_T_THANKS)
        elif why == "load":
            if occ == 0:
                self._emit("load.empty", i)
            else:
                self._emit("order.loaded", i, occupied=occ)
        elif why == "retrieve":
            self._emit("order.retrieved", i, order=s[_O], occupied=occ)
            if occ != 1:
                if s[_H]:
                    self._remember(s[_H], i, "r")
                self._clear_order(s)
        self._save()

    def busy(self):
        # an update waits while a door is open (runtime ota hook, docs/ota.md)
        return any(self.is_open)

    def self_test(self):
        # a new firmware is confirmed only if its doors answer (edge/ota_trial.py): the switch
        # happened with every door shut, and a harness unplugged (or pins the board file maps
        # wrong) reads every reed open through its pull-up
        for p in self.door:
            if not p.value():
                return None
        return "doors: every door reads open: check the harness" if len(self.door) > 1 else None

    async def _doors(self):
        count = len(self.ids)
        while True:
            self.rt.heartbeat()
            now = time.ticks_ms()
            for i in range(count):
                v = self.door[i].value()
                if v != self.is_open[i]:
                    if v == self.raw[i]:  # same new value on two polls in a row: debounced
                        self.is_open[i] = v
                        if v:
                            s = self.c[i]
                            self.opened_at[i] = now
                            if s[_P] and self.unlocking == i:  # authorised only while its unlock is running
                                s[_P] = 0
                                self._save()
                                self._emit("door.opened", i, why=s[_W], order=s[_O])
                                if s[_W] == "pickup":
                                    self._show(_T_OPEN, self.ids[i])
                            else:
                                s[_W] = "forced"
                                s[_B] = "forced"
                                self._save()
                                self._emit("door.forced", i, order=s[_O])
                        else:
                            self._closed(i, time.ticks_diff(now, self.opened_at[i]))
                elif v and not self.ajar[i] and time.ticks_diff(now, self.opened_at[i]) > self.ajar_ms:
                    self.ajar[i] = 1
                    self._emit("door.ajar", i, why=self.c[i][_W], open_ms=time.ticks_diff(now, self.opened_at[i]))
                    self._show(_T_AJAR, self.ids[i])
                self.raw[i] = v
            await asyncio.sleep_ms(self.poll_ms)

    # --- the lock ----------------------------------------------------------------------------
    async def _unlock(self, i, why):
        """One door at a time. Returns the attempt that opened it (1 or 2), or 0: jammed.
        Raises Rejected if, once its turn came, the compartment may no longer be opened.
        (The pulse is inline, not a coroutine of its own: one frame less in the heap.)"""
        async with self.mutex:
            self._check_open(i, why)
            s = self.c[i]
            s[_W] = why
            s[_P] = 1
            self._save()  # a power cut from here on is resolved by the door sensor at boot
            self.unlocking = i
            lock = self.lock[i]
            door = self.door[i]
            try:
                for attempt in (1, 2):
                    # power the lock for at most pulse_ms
                    if self.energized is not None:  # the mutex makes this impossible; refuse rather than trust it
                        raise Failed("unsafe")
                    self.energized = i
                    t0 = time.ticks_ms()
                    try:
                        lock.on()
                        while time.ticks_diff(time.ticks_ms(), t0) < self.pulse_ms:
                            if door.value():
                                break  # the latch let go: stop powering it
                            await asyncio.sleep_ms(20)
                    finally:
                        lock.off()
                        self.energized = None
                    t0 = time.ticks_ms()
                    while s[_P] and time.ticks_diff(time.ticks_ms(), t0) < self.verify_ms:
                        await asyncio.sleep_ms(20)
                    if not s[_P]:  # the door monitor saw it open (debounced)
                        return attempt
                    if attempt == 1:
                        await asyncio.sleep_ms(self.retry_ms)
                s[_P] = 0
                s[_W] = None
                s[_B] = "jammed"
                if why == "pickup" and s[_PH]:  # the door never opened: the code was not used
                    s[_H] = s[_PH]
                    self._forget(s[_PH])
                    s[_PH] = None
                self._save()
                self._emit("lock.jammed", i, why=why, attempts=2)
                return 0
            finally:
                self.unlocking = None
                await asyncio.sleep_ms(self.gap_ms)

    # --- keypad ------------------------------------------------------------------------------
    def _locked(self):
        if self.lk_until is None:
            return False
        if time.ticks_diff(self.lk_until, time.ticks_ms()) > 0:
            return True
        self.lk_until = None
        return False

    def _reject(self, etype, n, reason, msg, order=None):
        """Every rejected code counts toward the lockout: that also bounds how many events a
        person at the keypad can put in the journal. `n` is a compartment number or None."""
        now = time.ticks_ms()
        if self.lk_last is not None and time.ticks_diff(now, self.lk_last) >= self.lk_reset:
            self.lk_level = 0
        self.lk_last = now
        fails = [t for t in self.lk_fails if time.ticks_diff(now, t) < self.lk_window]
        fails.append(now)
        self.lk_fails = fails
        secs = None
        if len(fails) >= self.lk_after:
            secs = self.lk_secs[min(self.lk_level, len(self.lk_secs) - 1)]
            self.lk_level += 1
            self.lk_fails = []
            self.lk_until = time.ticks_add(now, int(secs * 1000))
        self._save()  # on flash before the keypad answers: pulling the plug now still counts it
        body = {"compartment": n, "failures": len(fails)}
        if reason:
            body["reason"] = reason
        if order:
            body["order"] = order
        self.rt.emit(etype, body)
        if secs is None:
            self._show(msg, n)
            return
        self.rt.emit("keypad.locked", {"for_s": secs, "level": self.lk_level, "failures": len(fails)})
        self._show(_T_LOCKOUT, self._minutes(secs))

    def _enter(self, code):
        if self._locked():
            left = time.ticks_diff(self.lk_until, time.ticks_ms()) // 1000
            self._show(_T_LOCKED, self._minutes(left))
            return
        if len(code) != self.digits:
            self._show(_T_DIGITS, self.digits)
            return
        m = (self.salt + code).encode()
        h = self._mac(m) if self.ki else None  # raw, like the stored verifiers
        g = hashlib.sha256(m).digest() if self.leg else None  # only while legacy entries may live
        i = self._find(h, g)
        if i is None:
            u = (h and self._forget(h, True)) or (g and self._forget(g, True))
            j = self.idx.get(u[1]) if u else None
            if j is not None and self.c[j][_P]:
                self._show(_T_WAIT, u[1])  # the same code twice in a row
            elif u and u[3] == "u":
                self._reject("code.reused", u[1], None, _T_USED, u[2])
            elif u:
                self._reject("code.rejected", u[1], "revoked", _T_REVOKED)
            else:
                self._reject("code.rejected", None, "unknown", _T_UNKNOWN)
            return
        s = self.c[i]
        n = self.ids[i]
        now = self._now()
        if s[_B] or s[_X]:
            self._reject("code.rejected", n, "blocked" if s[_B] else "out-of-order",
                         _T_STAFF)
        elif s[_W] or self.is_open[i]:
            self._reject("code.rejected", n, "door-open",
                         _T_BUSY)
        elif s[_E] is not None and now is not None and now >= s[_E]:
            self._reject("code.rejected", n, "expired", _T_EXPIRED)
        else:
            # spend the code before anything moves: a second entry is refused from here on
            s[_PH] = h = s[_H]  # as stored (a legacy entry keeps its marker)
            s[_H] = None
            s[_W] = "pickup"
            s[_P] = 1
            self._remember(h, i, "u")
            self.lk_fails = []
            self.lk_level = 0
            self._save()
            self._show(_T_OK, n)
            asyncio.create_task(self._pickup(i))

    async def _pickup(self, i):
        try:
            ok = await self._unlock(i, "pickup")
        except Rejected:
            self._emit("pickup.interrupted", i, order=self.c[i][_O])
            self._show(_T_STAFF, self.ids[i])
            return
        if not ok:
            self._show(_T_JAMMED, self.ids[i])

    async def _keys(self):
        rt = self.rt
        while True:
            data = self.kp.read()
            if data:
                for k in data:
                    if 0x30 <= k <= 0x39:
                        if not self.entry:
                            cl = getattr(rt, "client", None)
                            if getattr(rt, "gateway_online", None) is False or (cl is not None and not cl.is_connected()):
                                self._show(_T_OFFLINE)
                        if len(self.entry) <= self.digits:  # one extra digit marks an over-long entry
                            self.entry += chr(k)
                        self.key_at = time.ticks_ms()
                    elif k == 0x2A:  # '*': clear
                        self.entry = ""
                        self._show(_T_CLEARED if self._idle() == _T_IDLE else _T_RESTING)
                    elif k == 0x23 or (k in (0x0A, 0x0D) and self.entry):  # '#', or a QR scanner's CR/LF
                        code = self.entry
                        self.entry = ""
                        self._enter(code)
            elif self.entry and time.ticks_diff(time.ticks_ms(), self.key_at) > self.entry_ms:
                self.entry = ""
                self._show(self._idle())
            await asyncio.sleep_ms(self.key_ms)

    # --- commands ----------------------------------------------------------------------------
    def _arg_c(self, args):
        """The compartment named in `args`, as a position."""
        n = args.get("compartment")
        if not isinstance(n, int):
            raise Rejected("bad-args")
        i = self.idx.get(n)
        if i is None:
            raise Rejected("no-compartment")
        return i

    def _check_salt(self, args):
        sid = args.get("salt_id")
        if sid is not None and sid != self.salt_id:
            raise Rejected("salt-mismatch")
        if self.ki is None:
            raise Rejected("no-key")  # no app.code_key: provision one (docs/lockers.md)
        kid = args.get("key_id")
        if kid is not None and kid != self.key_id:
            raise Rejected("key-mismatch")

    def _set_order(self, e):
        if not isinstance(e, dict):
            raise Rejected("bad-args")
        i = self._arg_c(e)
        o = e.get("order")
        h = e.get("mac")
        exp = e.get("exp")
        try:  # hex on the wire, 32 raw bytes here
            h = unhexlify(h) if isinstance(h, str) and len(h) == 64 else None
        except ValueError:
            h = None
        if not isinstance(o, str) or not 0 < len(o) <= 64 or h is None or \
                not (exp is None or isinstance(exp, int)):
            raise Rejected("bad-args")
        s = self.c[i]
        if s[_B]:
            raise Rejected("blocked")
        if s[_X]:
            raise Rejected("out-of-order")
        if s[_P] or s[_W] == "pickup":
            raise Rejected("busy")
        if s[_O] and s[_O] != o:
            raise Rejected("occupied")
        now = self._now()
        if exp is not None and now is not None and exp <= now:
            raise Rejected("expired")
        other = self._find(h)
        if other is not None and other != i:
            raise Rejected("code-in-use")
        if s[_H] and s[_H] != h:
            self._remember(s[_H], i, "r")  # a reissued code replaces the old one
        self._forget(h)
        if s[_O] != o:
            s[_O] = fsutil.settle(o)
        if s[_H] != h:
            s[_H] = fsutil.settle(h)  # a raw copy of the parsed hash
        s[_E] = exp
        return i

    def _reply(self, i):
        return {"compartment": self.ids[i], "state": self._state(i)}

    async def cmd_set_order(self, args):
        self._check_salt(args)
        i = self._set_order(args)
        self._save()
        return self._reply(i)

    def get(self, name):
        """The handler of command `name`, or None: the bank is its own `commands` (the runtime
        only calls commands.get), so no dict of handlers and closures lives in the heap. A staff
        command's edge.apps.locker_staff is imported for the command and dropped after it (a
        command still running keeps its own code alive)."""
        if name == "set_order":
            return self.cmd_set_order
        if name == "open":
            return self.cmd_open
        if name not in STAFF_CMDS:
            return None

        async def run(args):
            if name == "texts":  # its own module: a staff command's peak does not carry it
                from edge.apps import locker_texts
                fn = locker_texts.cmd_texts
                locker_texts = None
                _drop("locker_texts")
            else:
                from edge.apps import locker_staff
                fn = getattr(locker_staff, "cmd_" + name)
                locker_staff = None
                _drop("locker_staff")
            return await fn(self, args)
        return run

    def _check_open(self, i, why):
        s = self.c[i]
        if why == "pickup":
            # while this pickup waited for another door, its compartment may have been forced
            # open (blocked) or taken out of order: give the code back and move nothing
            if s[_B] or s[_X] or s[_W] != "pickup" or self.is_open[i]:
                if s[_W] == "pickup":
                    s[_W] = None
                s[_P] = 0
                if s[_PH]:
                    s[_H] = s[_PH]
                    self._forget(s[_PH])
                    s[_PH] = None
                self._save()
                raise Rejected("unavailable")
            return
        if s[_P]:
            raise Rejected("busy")
        if s[_W] or self.is_open[i]:
            raise Rejected("door-open")
        if why == "service":
            return  # staff may always open for service: that is how faults get fixed
        if s[_B]:
            raise Rejected("blocked")
        if s[_X]:
            raise Rejected("out-of-order")
        if why == "load" and s[_O]:
            raise Rejected("occupied")
        if why == "retrieve" and not s[_O]:
            raise Rejected("empty")

    async def cmd_open(self, args):
        i = self._arg_c(args)
        why = args.get("reason")
        if why not in STAFF_WHY:
            raise Rejected("bad-args")
        self._check_open(i, why)  # answer at once when the state says no
        attempts = await self._unlock(i, why)  # and checks again in turn
        if not attempts:
            raise Failed("jammed", {"compartment": self.ids[i], "attempts": 2})
        return {"compartment": self.ids[i], "attempts": attempts}

    # --- main ----------------------------------------------------------------------------------
    async def run(self):
        self.boot_msg = 0
        from edge.apps import locker_boot
        locker_boot.resolve(self)  # before any await: no command or key is handled until boot is resolved
        locker_boot = None
        _drop("locker_boot")
        self._show(self.boot_msg or self._idle())
        asyncio.create_task(self._keys())
        await self._doors()
