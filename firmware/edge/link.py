# What the MQTT client (edge.mqtt) and the CoAP transport (edge.coap) share: the connection
# supervisor (connect, serve until the link dies, reconnect forever with capped, jittered
# exponential backoff; a link that stayed up STABLE_MS resets the backoff), the wake-up event,
# and the on_connect / on_down callbacks. A subclass sets the attributes __init__ lists in its
# own __init__ (one class body, no super() call: smaller on the device) and provides
#   async _connect() -> bool   open the link; True once it is UP (False: closing meanwhile)
#   async _serve()             keep it up; return or raise when it is gone
#   _lost()                    tear the connection down (idempotent); calls _went_down(st)
import asyncio
from time import ticks_diff, ticks_ms

try:
    from random import getrandbits
except ImportError:  # pragma: no cover - every port we target has it
    def getrandbits(n):
        return ticks_ms() & ((1 << n) - 1)

DOWN = 0
CONNECTING = 1
UP = 2
STABLE_MS = 10000  # a connection that lasted this long resets the backoff


class Link:
    # attributes a subclass sets: _state, _closing, _stopped (None), _ev (asyncio.Event),
    # _gen, stats (with "connects", "disconnects", "errors"), last_error, backoff_max,
    # on_connect, on_down

    def is_connected(self):
        return self._state == UP

    async def run(self):
        if self._stopped is not None:
            return
        self._stopped = asyncio.Event()
        delay = 1
        try:
            while not self._closing:
                up = None
                self._oom = False  # a MemoryError on this connection (_err)
                try:
                    if await self._connect():
                        up = ticks_ms()
                        await self._serve()
                except Exception as e:  # OSError (unreachable), anything unexpected
                    if not self._closing:
                        self._err(e)
                self._lost()
                if self._closing:
                    break
                if up is not None and ticks_diff(ticks_ms(), up) >= STABLE_MS or self._oom:
                    delay = 1  # a MemoryError is about this moment's heap, not the network
                ms = delay * 1000
                try:
                    await self._wait(ms + ((ms * getrandbits(8)) >> 9))  # +0..50 % jitter
                except Exception as e:  # MemoryError: the supervisor must survive it
                    self._err(e)
                    await asyncio.sleep_ms(ms)
                delay = min(delay * 2, self.backoff_max)
        finally:
            self._lost()
            self._stopped.set()

    async def _closed(self):
        # the end of close(): drop the link, wake the supervisor, wait until run() returned
        self._lost()
        self._ev.set()
        if self._stopped is not None:
            await self._stopped.wait()

    def _err(self, e):
        self.stats["errors"] += 1
        self.last_error = e
        if isinstance(e, MemoryError):
            self._oom = True

    async def _wait(self, ms):
        # Sleep up to ms, or until _ev is set. Callers check their condition first: nothing
        # can set _ev between that check and the clear() below (no await in between).
        self._ev.clear()
        try:
            await asyncio.wait_for_ms(self._ev.wait(), ms)
        except asyncio.TimeoutError:
            pass

    def _connected(self):
        # the link is UP: count it and run on_connect as its own task
        self.stats["connects"] += 1
        if self.on_connect:
            asyncio.create_task(self._run_on_connect(self._gen))

    async def _run_on_connect(self, gen):
        try:
            await self.on_connect(self)
        except Exception as e:
            self._err(e)
            if gen == self._gen and self._state == UP:
                self._lost()  # not fully set up (e.g. subscribe failed): start over

    def _went_down(self, st):
        # from _lost(): st is the state before; tell on_down if the link had been up
        if st == UP:
            self.stats["disconnects"] += 1
            if self.on_down:
                try:
                    self.on_down()
                except Exception as e:
                    self._err(e)
