# Rack display: a small screen on a clothes rack showing how many people liked the rack's
# products online (docs/rack-display.md). What it shows is desired state from the gateway
# (docs/protocol.md, "Desired state"): a `show` command carries the whole picture and a `rev`;
# the display keeps the highest rev on flash, ignores older ones, and drives nothing.
#
# Live or last known: the value is live only while the link is up AND the gateway has
# confirmed it on this connection (a `show` of this session). Otherwise (offline, just booted,
# reconnected but not yet caught up) the screen shows the last known value with "LAST KNOWN"
# (or the store's own words for it, `stale` in the `show`, kept on flash with the value).
# Refresh: at most one redraw per `refresh_ms` (250), latest value wins.
# Two displays: the SSD1306 OLED (the default; the virtual rig's) draws the label, the count
# and the stale words; a TM1637 4-digit segment display (`display: "tm1637"`) shows only the
# count (encode_count: "9999", "12k") and marks a last known value with the decimal points or
# the colon, since no words fit on 4 digits.
import asyncio
import gc
import time

import framebuf

from edge import fsutil
from edge.drivers.ssd1306 import SSD1306
from edge.runtime import Rejected

MAX_LIKES = 999999999
STALE_TEXT = "LAST KNOWN"


class RackDisplay:
    caps = ["display", "show"]

    def __init__(self, rt, hal, cfg):
        self.rt = rt
        self.seg = None
        self.disp = None
        if cfg.get("display", "ssd1306") == "tm1637":
            from edge.drivers.tm1637 import TM1637
            self.seg = TM1637(hal.pin_out(cfg.get("clk", "tm_clk"), 1), hal.pin_od(cfg.get("dio", "tm_dio")),
                              cfg.get("brightness", 4))
        else:
            self.disp = SSD1306(hal.spi_device(cfg.get("spi", "display")), hal.pin_out(cfg.get("dc", "dc"), 0),
                                cfg.get("width", 128), cfg.get("height", 32))
        self.refresh_ms = cfg.get("refresh_ms", 250)
        self.path = rt.cfg["data_dir"] + "/shown.json"
        # what it shows: {"rev", "likes", "label"}; survives reboots (shown as last known)
        self.shown = fsutil.load_json(self.path, {"rev": 0, "likes": None, "label": cfg.get("label", "LIKES")})
        self.confirmed = None  # the session in which the gateway last sent a `show`
        self.dirty = True
        self.frames = 0
        self.err = None  # the last draw's error, None once one went out (self_test)
        self.commands = {"show": self.cmd_show}

    def live(self):
        rt = self.rt
        return self.confirmed is not None and self.confirmed == rt.state["session"] \
            and rt.client.is_connected() and rt.gateway_online is not False

    async def cmd_show(self, args):
        rev = args.get("rev")
        likes = args.get("likes")
        label = args.get("label", self.shown["label"])
        stale = args.get("stale", self.shown.get("stale", STALE_TEXT))  # the store's words, kept on flash
        if not isinstance(rev, int) or rev < 1 or not isinstance(likes, int) or not 0 <= likes <= MAX_LIKES \
                or not isinstance(label, str) or len(label) > 16 or not isinstance(stale, str) or len(stale) > 16:
            raise Rejected("bad-args")
        cur = self.shown["rev"]
        if rev < cur:  # an older picture (a late redelivery): keep ours, tell the gateway
            return {"rev": cur, "stale": True}
        if not self.confirmed == self.rt.state["session"]:
            self.confirmed = self.rt.state["session"]
            self.dirty = True
        if rev > cur:
            self.shown = {"rev": rev, "likes": likes, "label": label, "stale": stale}
            fsutil.save_json(self.path, self.shown)
            self.dirty = True
        return {"rev": rev}

    def _big(self, text, y):
        # the 8x8 font at twice its size (the count, readable from the aisle)
        small = framebuf.FrameBuffer(bytearray(len(text) * 8), len(text) * 8, 8, framebuf.MONO_HLSB)
        small.text(text, 0, 0, 1)
        fb = self.disp.fb
        x0 = (self.disp.width - len(text) * 16) // 2
        for yy in range(8):
            for xx in range(len(text) * 8):
                if small.pixel(xx, yy):
                    fb.fill_rect(x0 + 2 * xx, y + 2 * yy, 2, 2, 1)

    def render(self, live):
        s = self.shown
        if self.seg is not None:  # 4 digits: the count, and the mark when it is not live
            self.seg.show_count(s["likes"], not live)
            self.frames += 1
            return
        if not self.frames:  # (again until a draw went out: a display that fails it is reported)
            self.disp.init()
        fb = self.disp.fb
        fb.fill(0)
        fb.text(s["label"][:16], 0, 0, 1)
        self._big("--" if s["likes"] is None else str(s["likes"]), 8)
        if not live:
            fb.text(s.get("stale", STALE_TEXT)[:16], 0, 24, 1)
        self.disp.show()
        self.frames += 1

    def self_test(self):
        # a new firmware is confirmed only once a draw went out (edge/ota_trial.py): a TM1637
        # acks every byte; an SSD1306 on SPI answers nothing, so only a bus error shows there
        if self.err is not None or not self.frames:
            return "display: not drawn (%r)" % (self.err,)
        return None

    async def run(self):
        last = time.ticks_add(time.ticks_ms(), -self.refresh_ms)
        was = None
        while True:
            self.rt.heartbeat()
            live = self.live()
            if live != was:
                self.rt.log("display", "live" if live else "last known", self.shown["likes"])
                was = live
                self.dirty = True
            if self.dirty and time.ticks_diff(time.ticks_ms(), last) >= self.refresh_ms:
                self.dirty = False
                last = time.ticks_ms()
                try:
                    self.render(live)
                    self.err = None
                except Exception as e:  # MemoryError in a burst, a bus error: draw again next time,
                    self.rt.log("display:", repr(e))  # never let the screen's loop die
                    self.err = e
                    self.dirty = True
                    gc.collect()
            await asyncio.sleep_ms(40)
