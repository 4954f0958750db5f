# Fitting room: an MFRC522 by the hook/shelf that sees several garments at once, a door or
# curtain occupancy sensor, a call button with its LED. docs/fitting-rooms.md is the contract
# (events, commands, the presence rules below).
#
# Presence rules (a tag at the edge of the field, or in the next room, flickers):
# * a tag counts as IN after it has answered `in_hits` inventory cycles (default 2); a tag
#   seen fewer times and then lost is forgotten without an event (a stray read);
# * an IN tag counts as OUT when it has missed `out_misses` cycles in a row (default 3) AND
#   has not answered for `out_ms` (default 1500 ms). Both: a slow cycle (a busy board) cannot
#   turn one miss into an OUT, and a fast cycle cannot make a 300 ms flicker one;
# * the occupancy input must hold a new level for `occ_ms` (default 300 ms: a swinging
#   curtain) before `room.occupied` / `room.free`; the button must read pressed on two samples
#   20 ms apart (50 ms contact bounce) for `call.pressed`.
import asyncio
import time

from edge.drivers.inventory import InventoryReader
from edge.runtime import Rejected

# fields of a tracked tag (a short list per UID: less heap than an object)
_CARD = 0
_HITS = 1
_MISSES = 2
_SEEN = 3   # ticks of the last answer
_IN = 4     # ticks it became IN, or None while a candidate
_GTIN = 5
_SERIAL = 6


class FittingRoom:
    caps = ["rfid-multi", "occupancy", "call-button", "call_ack", "status"]

    def __init__(self, rt, hal, cfg):
        self.rt = rt
        self.reader = InventoryReader(hal.spi_device(cfg.get("spi", "rfid")))
        self.occ_pin = hal.pin_in(cfg.get("occupancy", "occupancy"))
        self.btn_pin = hal.pin_in(cfg.get("button", "button"))
        self.led = hal.pin_out(cfg.get("call_led", "call_led"), 0)
        self.poll_ms = cfg.get("poll_ms", 100)
        self.in_hits = cfg.get("in_hits", 2)
        self.out_misses = cfg.get("out_misses", 3)
        self.out_ms = cfg.get("out_ms", 1500)
        self.occ_ms = cfg.get("occ_ms", 300)
        self.max_tags = cfg.get("max_garments", 16)
        for k in ("poll_ms", "in_hits", "out_misses", "out_ms", "occ_ms", "max_garments"):
            v = cfg.get(k, 1)
            if not isinstance(v, int) or v < 1:
                raise ValueError("app.%s must be a positive integer" % k)
        self.tags = {}  # uid_hex -> list (fields above)
        self.dropped = 0  # tags ignored because max_garments were tracked
        self.errors = 0  # inventory cycles that failed
        self.occupied = False
        self.occ_since = 0
        self._occ_raw = 0
        self._occ_change = 0
        self.calling = False
        self.commands = {"call_ack": self.cmd_call_ack, "status": self.cmd_status}

    # --- garments ----------------------------------------------------------------------------
    def _seen(self, card, now):
        t = self.tags.get(card.uid_hex)
        if t is None:
            if len(self.tags) >= self.max_tags:
                self.dropped += 1
                return
            ids = self.reader.read_garment(card)  # once per tag, not per cycle
            t = [card, 0, 0, now, None, ids[0] if ids else None, ids[1] if ids else None]
            self.tags[card.uid_hex] = t
        t[_HITS] += 1
        t[_MISSES] = 0
        t[_SEEN] = now
        if t[_IN] is None and t[_HITS] >= self.in_hits:
            t[_IN] = now
            c = t[_CARD]
            self.rt.emit("garment.in", {"uid": c.uid_hex, "tech": c.tech, "gtin": t[_GTIN],
                                        "serial": t[_SERIAL]})

    def inventory(self):
        """One cycle: known tags by UID, then new ones; then apply the presence rules."""
        now = time.ticks_ms()
        seen = []
        for uid in self.tags:
            if self.reader.present(self.tags[uid][_CARD].uid):
                seen.append(uid)
        for _ in range(self.max_tags):
            card = self.reader.find()
            if card is None:
                break
            if card.uid_hex not in seen:
                seen.append(card.uid_hex)
                self._seen(card, now)
        for uid in seen:
            if uid in self.tags and self.tags[uid][_SEEN] != now:
                self._seen(self.tags[uid][_CARD], now)
        for uid in [u for u in self.tags if u not in seen]:
            t = self.tags[uid]
            t[_MISSES] += 1
            if t[_MISSES] < self.out_misses or time.ticks_diff(now, t[_SEEN]) < self.out_ms:
                continue
            del self.tags[uid]
            if t[_IN] is not None:
                self.rt.emit("garment.out", {"uid": uid, "held_ms": time.ticks_diff(t[_SEEN], t[_IN])})

    # --- room and button ---------------------------------------------------------------------
    def sense(self):
        """Occupancy with a hold time; returns the debounced state."""
        now = time.ticks_ms()
        raw = self.occ_pin.value()
        if raw != self._occ_raw:
            self._occ_raw = raw
            self._occ_change = now
        if bool(raw) != self.occupied and time.ticks_diff(now, self._occ_change) >= self.occ_ms:
            self.occupied = bool(raw)
            if self.occupied:
                self.occ_since = now
                self.rt.emit("room.occupied", {})
            else:
                self.rt.emit("room.free", {"occupied_ms": time.ticks_diff(now, self.occ_since)})
        return self.occupied

    async def _inputs(self):
        pressed = 0
        while True:
            self.sense()
            v = self.btn_pin.value()
            if v:
                pressed += 1
                if pressed == 2:  # held across two samples: a press, not contact bounce
                    self.calling = True
                    self.led.on()
                    self.rt.emit("call.pressed", {})
            else:
                pressed = 0
            await asyncio.sleep_ms(20)

    async def run(self):
        self.reader.init()
        asyncio.create_task(self._inputs())
        while True:
            self.rt.heartbeat()
            try:
                self.inventory()
            except Exception as e:  # a reader glitch must not stop the room; say so
                self.errors += 1
                self.rt.log("inventory failed:", repr(e))
            await asyncio.sleep_ms(self.poll_ms)

    def self_test(self):
        # a new firmware is confirmed only if the reader answers (edge/ota_trial.py, docs/ota.md)
        return self.reader.self_test()

    # --- commands ----------------------------------------------------------------------------
    async def cmd_call_ack(self, args):
        """Staff acknowledged the call: the LED goes off."""
        was = self.calling
        self.calling = False
        self.led.off()
        return {"was_calling": was}

    async def cmd_status(self, args):
        if args:
            raise Rejected("bad-args")
        return {"occupied": self.occupied, "calling": self.calling, "dropped": self.dropped,
                "garments": [u for u in self.tags if self.tags[u][_IN] is not None]}
