# The locker bank's run-once code: config and saved state (LockerBank.__init__) and what a
# power cut interrupted (boot resolution). Kept out of edge.apps.locker so its bytecode is
# freed once the bank runs (locker._drop): the heap is the device's tightest budget.
import asyncio
import gc
import hashlib
import time
from binascii import hexlify, unhexlify

from edge import fsutil
from edge.apps.locker import SIZES, TX, _drop

# the fields of a compartment record, in edge.apps.locker's order (its _O.._PH, _NF)
_O, _H, _E, _X, _B, _W, _P, _PH, _NF = range(9)


def setup(b, rt, hal, cfg):
    b.rt = rt
    rcfg = getattr(rt, "cfg", None) or {}
    comps = cfg.get("compartments")
    if not isinstance(comps, list) or not comps:
        raise ValueError("app.compartments: list the compartments, e.g. [\"S\", \"M\", {\"id\": 3, \"size\": \"L\"}]")
    b.pulse_ms = cfg.get("pulse_ms", 1000)
    if not isinstance(b.pulse_ms, int) or not 50 <= b.pulse_ms <= 2000:
        raise ValueError("app.pulse_ms must be 50-2000 (a lock solenoid is powered at most 2 s)")
    b.verify_ms = cfg.get("verify_ms", 500)  # after the pulse, wait this long for the door to show open
    b.retry_ms = cfg.get("retry_ms", 300)
    b.gap_ms = cfg.get("gap_ms", 200)  # between two unlocks: the supply recovers
    b.poll_ms = cfg.get("door_poll_ms", 100)
    b.ajar_ms = int(cfg.get("ajar_s", 60) * 1000)
    b.digits = cfg.get("code_digits", 6)
    b.entry_ms = int(cfg.get("entry_timeout_s", 30) * 1000)
    b.key_ms = cfg.get("key_poll_ms", 50)
    lk = cfg.get("lockout") or {}
    b.lk_after = lk.get("after", 3)
    b.lk_window = int(lk.get("window_s", 300) * 1000)
    b.lk_secs = lk.get("lock_s", [600, 1200, 1800])
    b.lk_reset = int(lk.get("reset_s", 3600) * 1000)
    b.salt = cfg.get("salt") or rcfg.get("device_id", "")
    b.salt_id = hexlify(hashlib.sha256(b.salt.encode()).digest()[:4]).decode()  # = gateway's salt_id
    # the bank's pickup-code key (tools/provision.py): codes are verified as HMAC-SHA256(key,
    # salt + code); without one the bank takes no new codes (set_order: no-key)
    key = cfg.get("code_key")
    b.ki = b.ko = b.key_id = None
    if key is not None:
        try:
            key = unhexlify(key) if isinstance(key, str) and len(key) == 64 else None
        except ValueError:
            key = None
        if key is None:
            raise ValueError("app.code_key must be 64 hex digits (tools/provision.py writes it)")
        b.ki = bytes(x ^ 0x36 for x in key) + b"\x36" * 32
        b.ko = bytes(x ^ 0x5C for x in key) + b"\x5c" * 32
        b.key_id = hexlify(b._mac(b"key-id")[:4]).decode()  # = gateway's key_id
    key = None
    occ_all = cfg.get("occupancy", False)

    b.ids = []  # compartment numbers, in config order
    b.idx = {}  # number -> position
    b.size = ""
    b.lock = []
    b.door = []
    b.occ = []  # occupancy input or None
    for i, c in enumerate(comps):
        if isinstance(c, str):
            c = {"size": c}
        n = c.get("id", i + 1)
        if not isinstance(n, int) or n in b.idx or c.get("size") not in SIZES:
            raise ValueError("app.compartments[%d]: needs a unique int id and size S/M/L" % i)
        b.idx[n] = len(b.ids)
        b.ids.append(n)
        b.size += c["size"]
        b.lock.append(hal.pin_out("lock_%d" % n, 0))  # de-energized from the first instant
        b.door.append(hal.pin_in("door_%d" % n, "up"))  # reed to ground: 0 closed, 1 open (or cut wire)
        b.occ.append(hal.pin_in("occ_%d" % n) if c.get("occ", occ_all) else None)
        gc.collect()  # the next compartment's garbage reuses these holes: its pins pack in
    count = len(b.ids)
    kp = cfg.get("keypad", "keypad")
    b.kp = hal.uart(kp)
    disp = cfg.get("display", kp)
    b.disp = b.kp if disp == kp else hal.uart(disp)

    data = rcfg.get("data_dir", "data")
    fsutil.makedirs(data)
    b.path = data + "/locker.json"
    # the store's words, as the gateway last sent them (kept on flash: an offline bank shows them)
    b.tx_path = data + "/texts.txt"
    b.tx = TX  # the built-in ones: no file (rev 0)
    for p in (b.tx_path, b.tx_path + ".tmp"):
        try:
            with open(p, "rb") as f:
                t = f.read(len(TX) * 8)
        except OSError:
            continue
        from edge.apps.locker_texts import texts_rev  # only when there is a file to check
        _drop("locker_texts")
        if texts_rev(t) is not None:
            b.tx = t
            break
    t = texts_rev = None
    st = fsutil.load_json(b.path, None) or {}
    saved = st.get("c") or {}
    if isinstance(saved, list):  # v2: records in the order of the saved `ids`
        saved = {str(n): s for n, s in zip(st.get("ids") or [], saved)}
    b.c = []
    b.leg = False  # legacy entries loaded: keypad entries are also hashed the old way
    for n in b.ids:
        s = saved.get(str(n))
        if isinstance(s, list) and len(s) == _NF:
            for k in (_H, _PH):  # raw in RAM; on flash "m" + 64 hex: a MAC; 64 hex: a SHA-256
                x = s[k]  # hash written before keyed codes, kept (33 bytes, marked) until replaced
                try:
                    if isinstance(x, str) and len(x) == 65 and x[0] == "m":
                        x = unhexlify(x[1:])
                    elif isinstance(x, str) and len(x) == 64:
                        x = unhexlify(x) + b"L"
                        b.leg = True
                    else:
                        x = None
                except ValueError:
                    x = None  # unreadable: the order stays (held), staff issue a new code
                s[k] = x
        else:
            s = [None, None, None, 0, None, None, 0, None]
        b.c.append(s)
    saved = None
    b.used = st.get("used") or []  # [hash[:16], compartment, order, "u" used | "r" revoked]
    b.clk = None  # (unix ms, rt.uptime_ms()) - a lower bound of the time after a reboot
    if isinstance(st.get("clk"), int):
        b.clk = (st["clk"], rt.uptime_ms())
    _lockout(b, st.get("lk") or [0, 0], rt.now())

    b.is_open = bytearray(count)
    b.raw = bytearray(count)
    b.ajar = bytearray(count)  # door.ajar already reported for this opening
    b.opened_at = [0] * count
    b.energized = None  # position of the lock being powered, or None
    b.unlocking = None  # position whose unlock (pulse + verify) is running, or None
    b.mutex = asyncio.Lock()
    b.entry = ""
    b.key_at = 0
    b.commands = b  # LockerBank.get: the handlers, staff commands loaded per command


def _lockout(b, lk, now):
    """The keypad lockout as saved (`LockerBank._save`), wrong codes included: a reboot never
    forgets them. Ticks restart at boot, so saved ticks become ages at the save, plus the time
    the bank was off: known only if the gateway's clock dated the save and is set now, else
    counted as 0 (the safe guess: a failure counts until the window has provably passed, at most
    `window_s` after boot; a lockout resumes with what was left). `lk` of an older firmware is
    [level, ms left]."""
    b.lk_level = lk[0]
    b.lk_fails = []
    b.lk_last = None
    tk = time.ticks_ms()
    off = 0
    if len(lk) > 5 and isinstance(lk[5], int) and now is not None:
        off = max(0, now - lk[5])
    left = lk[1] - off
    b.lk_until = time.ticks_add(tk, left) if left > 0 else None
    if len(lk) > 4 and isinstance(lk[2], int) and isinstance(lk[4], list):
        for t in lk[4]:
            age = time.ticks_diff(lk[2], t) + off
            if age < b.lk_window:
                b.lk_fails.append(time.ticks_add(tk, -age))
        if isinstance(lk[3], int):
            age = time.ticks_diff(lk[2], lk[3]) + off
            if age >= b.lk_reset:
                b.lk_level = 0  # no failure for reset_s: as _reject would at the next one
            else:
                b.lk_last = time.ticks_add(tk, -age)


def resolve(b):
    """A boot: resolve what a power cut interrupted (no lock is energized here)."""
    now = time.ticks_ms()
    for i in range(len(b.ids)):
        v = b.door[i].value()
        b.is_open[i] = b.raw[i] = v
        b.opened_at[i] = now
        s = b.c[i]
        if v:
            if s[_W] and s[_P]:  # released just before the cut: the sensor says it opened
                s[_P] = 0
                b._emit("door.opened", i, why=s[_W], order=s[_O], boot=True)
            elif not s[_W]:  # open for no known reason: report it, do not call it forced
                s[_W] = "boot"
                b._emit("door.open_at_boot", i, order=s[_O])
        elif s[_W]:
            if s[_P]:  # never seen open
                if s[_W] == "pickup":
                    if b._occ(i) == 0:  # parcel gone: it opened and closed while we were down
                        b._emit("pickup.collected", i, order=s[_O], occupied=0, boot=True)
                        b._clear_order(s)
                    else:  # the door stayed shut: the customer keeps the code
                        s[_H] = s[_PH]
                        s[_PH] = None
                        if s[_H]:
                            b._forget(s[_H])
                        b._emit("pickup.interrupted", i, order=s[_O])
                        b.boot_msg = 19  # edge.apps.locker _T_RESTARTED (its const is not importable)
                s[_W] = None
                s[_P] = 0
            else:  # was open at the cut and closed since: handle it as a close
                b._closed(i, None)
    b._save()

