# Sample pad: a customer puts a sample on the pad, the kiosk shows its content.
# Events tag.placed / tag.removed (docs/protocol.md, "Sample pad"); LED on while a tag rests.
import asyncio
import time

from edge.drivers.mfrc522 import MFRC522
from edge.ndef import sample_id  # noqa: F401 - read_sample_id's parser: loaded at boot, not at a tag
from edge.runtime import Rejected


class SamplePad:
    caps = ["tag", "led", "blink"]

    def __init__(self, rt, hal, cfg):
        self.rt = rt
        self.led = hal.pin_out(cfg.get("led", "led"), 0)
        self.reader = MFRC522(hal.spi_device(cfg.get("spi", "rfid")))
        self.poll_ms = cfg.get("poll_ms", 40)
        # removal = not seen for remove_after_ms (a card at the edge of the field flickers)
        self.misses_to_remove = max(1, cfg.get("remove_after_ms", 300) // self.poll_ms)
        self.commands = {"blink": self.cmd_blink}
        self.uid = None
        self.placed_at = 0
        self.misses = 0
        self.blinking = False

    def busy(self):
        # an update waits while a tag rests on the pad (runtime ota hook, docs/ota.md)
        return self.uid is not None

    def self_test(self):
        # a new firmware is confirmed only if the reader answers (edge/ota_trial.py, docs/ota.md)
        return self.reader.self_test()

    def _placed(self, card):
        self.uid = card.uid_hex
        self.placed_at = time.ticks_ms()
        self.misses = 0
        sample = self.reader.read_sample_id(card)
        self.rt.emit("tag.placed", {"uid": card.uid_hex, "tech": card.tech, "sample": sample})
        if not self.blinking:
            self.led.on()

    def _removed(self):
        held = time.ticks_diff(time.ticks_ms(), self.placed_at)
        self.rt.emit("tag.removed", {"uid": self.uid, "held_ms": held})
        self.uid = None
        if not self.blinking:
            self.led.off()

    def poll_once(self):
        card = self.reader.poll()
        if card is not None:
            if card.uid_hex != self.uid:
                if self.uid is not None:
                    self._removed()
                self._placed(card)
            self.misses = 0
        elif self.uid is not None:
            self.misses += 1
            if self.misses >= self.misses_to_remove:
                self._removed()

    async def run(self):
        self.reader.init()
        while True:
            self.rt.heartbeat()
            self.poll_once()
            await asyncio.sleep_ms(self.poll_ms)

    async def cmd_blink(self, args):
        times = args.get("times", 3)
        if not isinstance(times, int) or not 1 <= times <= 10:
            raise Rejected("bad-args")
        if self.blinking:
            raise Rejected("busy")
        self.blinking = True
        try:
            for _ in range(times):
                self.led.value(0 if self.uid else 1)
                await asyncio.sleep_ms(150)
                self.led.value(1 if self.uid else 0)
                await asyncio.sleep_ms(150)
        finally:
            self.blinking = False
            self.led.value(1 if self.uid else 0)
        return {"times": times}
