# MQTT 3.1.1 client for MicroPython asyncio (ESP32, RP2, unix).
#
# Behaviour follows Peter Hinch's mqtt_as, kept small:
# * non-blocking socket; reads go through asyncio's poller (no busy polling), writes are
#   tried at once and, if the socket is full, retried every 20 ms up to response_timeout;
# * one supervisor (run) that connects, pings every keepalive/4, declares the link dead
#   when nothing arrived for keepalive*1.5, and reconnects forever with capped, jittered
#   exponential backoff;
# * QoS 1 publish waits for its PUBACK (matched by packet id), retransmits once with DUP,
#   then raises OSError and drops the connection; the caller keeps the message;
# * incoming QoS 1 PUBLISH is PUBACKed after on_message returns; QoS 2 is not supported;
# * one asyncio.Lock around every socket write, so packets never interleave.
# * a MemoryError in the reader (a fragmented heap with no hole *now* for a step's frame or the
#   slice it reads into) is waited out: each step is made before it reads a byte (_co), so it is
#   made again after a gc.collect() and 20 ms, the stream where it was; the link stays up.
#
# Heap: a PUBLISH is built in one buffer allocated with the client (tx_size bytes) and
# incoming packets are read into another (rx_size), so the usual small messages allocate
# nothing per message; bigger ones get a buffer of their own, read with readinto (no
# concatenation of partial reads). A str payload is copied through memoryview(str), which
# MicroPython allows (CPython does not), instead of being encoded to a new bytes first; a
# dict payload is json.dump'ed into a preallocated BytesIO under the send lock (no JSON
# string: a reply or birth costs no ~300 B block of its own).
#
# Callbacks: on_message(topic:str, payload) plain, from the reader task, must not block;
# payload is a memoryview into the receive buffer, valid only until the callback returns
# (json.loads and hashlib take it as it is; bytes(payload) keeps a copy); on_connect(client)
# async, run as its own task after every CONNACK (an exception there drops the connection
# so the next one retries); on_down() plain, whenever a
# connection that had been up goes away (including close()).
import asyncio
import errno
import gc
import io
import json
import select
import socket
from time import ticks_diff, ticks_ms

from edge.link import CONNECTING as _CONNECTING
from edge.link import DOWN as _DOWN
from edge.link import UP as _UP
from edge.link import Link

_PING = b"\xc0\x00"
_DISC = b"\xe0\x00"


def _str(s):
    return s.encode() if isinstance(s, str) else s


def _vlen(n):  # bytes needed for MQTT remaining length n
    return 1 if n < 128 else 2 if n < 16384 else 3 if n < 2097152 else 4


def _put_len(buf, i, n):
    while True:
        b = n & 0x7F
        n >>= 7
        buf[i] = b | 0x80 if n else b
        i += 1
        if not n:
            return i


def _put_str(buf, i, s):
    n = len(s)
    buf[i] = n >> 8
    buf[i + 1] = n & 0xFF
    buf[i + 2:i + 2 + n] = s
    return i + 2 + n


class MQTTClient(Link):
    max_payload = 8192  # larger incoming messages are read, discarded and counted
    tx_size = 640  # outgoing PUBLISH packets up to this size use the client's buffer
    rx_size = 512  # incoming packets (after the fixed header) up to this size use the other

    def __init__(self, client_id, host, port=1883, keepalive=30, user=None, password=None,
                 will=None, on_message=None, on_connect=None, on_down=None,
                 response_timeout=10, backoff_max=30):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.user = user
        self.password = password
        self.will = will
        self.on_message = on_message
        self.on_connect = on_connect
        self.on_down = on_down
        self._rt = int(response_timeout * 1000)
        self.backoff_max = backoff_max
        self.stats = {"connects": 0, "disconnects": 0, "pub": 0, "puback": 0,
                      "rx": 0, "pings": 0, "errors": 0}
        self._state = _DOWN
        self._sock = None
        self._reader = None      # reader task of the current connection
        self._lock = asyncio.Lock()
        self._ev = asyncio.Event()   # wakes the supervisor: CONNACK, link lost, close()
        self._stopped = None
        self._closing = False
        self._gen = 0            # connection generation
        self._pid = 0
        self._pend = {}          # packet id -> Event with .rc (None: waiting, >=0: acked, -1: lost)
        self._last_rx = 0
        self._ack = bytearray(b"\x40\x02\x00\x00")
        self._tx = bytearray(self.tx_size)  # allocated at boot, before the heap fragments
        self._js = io.BytesIO(self.tx_size)  # a dict payload's JSON
        self._rx = memoryview(bytearray(self.rx_size))
        self._b2 = self._rx[:2]  # a fixed header's first two bytes: its type, its length's first
        self.last_error = None

    # ---- public API -------------------------------------------------------------------

    async def publish(self, topic, payload, qos=0, retain=False):
        if qos not in (0, 1):
            raise ValueError("qos")
        if self._state != _UP:
            raise OSError(errno.ENOTCONN)
        t = _str(topic)
        # a str's UTF-8 bytes without a copy (MicroPython); a dict is dumped when sent
        p = payload if isinstance(payload, dict) else memoryview(payload)
        h = 0x30 | (qos << 1) | (1 if retain else 0)
        pid = self._newpid() if qos else 0
        ev = self._waiter(pid) if qos else None
        try:
            for attempt in (0, 1):
                async with self._lock:  # the packet is built in the shared buffer: under the lock
                    if self._state != _UP:
                        raise OSError(errno.ENOTCONN)
                    await self._write(self._packet(h | 0x08 if attempt else h, t, pid, p))  # 0x08: DUP
                if not attempt:
                    self.stats["pub"] += 1
                if not qos:
                    return
                rc = await self._result(ev)
                if rc is not None:
                    return
            self._lost()  # no PUBACK twice: give up on this connection
            raise OSError(errno.ETIMEDOUT)
        finally:
            if qos:
                self._pend.pop(pid, None)

    async def subscribe(self, topic, qos=1):
        if qos not in (0, 1):
            raise ValueError("qos")
        if self._state != _UP:
            raise OSError(errno.ENOTCONN)
        t = _str(topic)
        n = 2 + 2 + len(t) + 1
        pkt = bytearray(1 + _vlen(n) + n)
        pkt[0] = 0x82
        i = _put_len(pkt, 1, n)
        pid = self._newpid()
        pkt[i] = pid >> 8
        pkt[i + 1] = pid & 0xFF
        i = _put_str(pkt, i + 2, t)
        pkt[i] = qos
        ev = self._waiter(pid)
        try:
            await self._send(pkt)
            rc = await self._result(ev)
            if rc is None:
                self._lost()
                raise OSError(errno.ETIMEDOUT)
            if rc > 1:  # 0x80 failure (or a QoS we did not ask for)
                raise OSError(errno.EPERM)
        finally:
            self._pend.pop(pid, None)

    async def close(self):
        self._closing = True
        if self._state == _UP:
            try:
                async with self._lock:
                    if self._state == _UP:
                        await self._write(_DISC)
            except Exception:
                pass
        await self._closed()

    # ---- internals --------------------------------------------------------------------

    async def _connect(self):
        await self._open()
        t0 = ticks_ms()
        while self._state == _CONNECTING and not self._closing:  # until the CONNACK
            left = self._rt - ticks_diff(ticks_ms(), t0)
            if left <= 0:
                raise OSError(errno.ETIMEDOUT)
            await self._wait(left)
        return self._state == _UP

    def _newpid(self):
        pid = self._pid
        while True:
            pid = pid + 1 if pid < 65535 else 1
            if pid not in self._pend:
                self._pid = pid
                return pid

    def _waiter(self, pid):
        ev = asyncio.Event()
        ev.rc = None  # type: ignore[attr-defined]  # asyncio.Event is a Python class on the ports: it takes attributes
        self._pend[pid] = ev
        return ev

    async def _result(self, ev):
        if ev.rc is None:
            try:
                await asyncio.wait_for_ms(ev.wait(), self._rt)
            except asyncio.TimeoutError:
                pass
            except MemoryError:  # no hole for wait_for's task now (a fragmented heap): poll
                t = ticks_ms()   # instead, sleep_ms allocates nothing; the packet is out, so
                while ev.rc is None and ticks_diff(ticks_ms(), t) < self._rt:  # never give
                    await asyncio.sleep_ms(10)  # up the link for this
        if ev.rc is not None and ev.rc < 0:
            raise OSError(errno.ECONNABORTED)  # link lost while waiting
        return ev.rc

    def _resolve(self, pid, rc):
        ev = self._pend.pop(pid, None)
        if ev is not None:
            ev.rc = rc
            ev.set()
        return ev is not None

    async def _send(self, buf):
        async with self._lock:
            if self._state != _UP:
                raise OSError(errno.ENOTCONN)
            await self._write(buf)

    def _packet(self, h, t, pid, p):
        # the PUBLISH, built in the client's buffer (the caller holds the lock); a plain
        # function, not a coroutine: no frame on the heap per publish
        js = None
        if isinstance(p, dict):
            js = self._js
            js.seek(0)
            json.dump(p, js)
            m = js.tell()
            js.seek(0)
        else:
            m = len(p)
        n = 2 + len(t) + m + (2 if pid else 0)
        size = 1 + _vlen(n) + n
        buf = memoryview(self._tx if size <= self.tx_size else bytearray(size))
        buf[0] = h
        i = _put_str(buf, _put_len(buf, 1, n), t)
        if pid:
            buf[i] = pid >> 8
            buf[i + 1] = pid & 0xFF
            i += 2
        if js is not None:
            js.readinto(buf[i:size])
        else:
            buf[i:size] = p
        return buf[:size]

    async def _write(self, buf):
        # Caller holds the lock. Any failure ends the connection.
        s = self._sock
        n = len(buf)
        off = 0
        t = ticks_ms()
        try:
            while off < n:
                w = s.write(buf if not off else memoryview(buf)[off:])
                if w:
                    off += w
                    t = ticks_ms()
                elif ticks_diff(ticks_ms(), t) > self._rt:
                    raise OSError(errno.ETIMEDOUT)
                else:
                    await asyncio.sleep_ms(20)
                    if s is not self._sock:
                        raise OSError(errno.ENOTCONN)
        except Exception:
            if s is self._sock:
                self._lost()
            raise

    async def _open(self):
        self._ev.clear()
        ai = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)[0]
        s = socket.socket(ai[0], socket.SOCK_STREAM, ai[2])
        self._sock = s
        s.setblocking(False)
        try:
            s.connect(ai[-1])
        except OSError as e:
            if e.errno != errno.EINPROGRESS:
                raise
        # wait until the TCP connection is up (writable), polling, bounded by response_timeout
        p = select.poll()
        p.register(s, select.POLLOUT)
        t = ticks_ms()
        while True:
            ev = p.poll(0)
            if ev:
                if ev[0][1] & (select.POLLERR | select.POLLHUP):
                    raise OSError(errno.ECONNREFUSED)
                break
            if self._closing or ticks_diff(ticks_ms(), t) > self._rt:
                raise OSError(errno.ETIMEDOUT)
            await asyncio.sleep_ms(20)
        if s is not self._sock:
            raise OSError(errno.ENOTCONN)  # close() meanwhile
        p.unregister(s)
        p = None
        self._gen += 1
        self._last_rx = ticks_ms()
        self._state = _CONNECTING
        self._reader = asyncio.create_task(self._read(asyncio.StreamReader(s), self._gen))
        async with self._lock:
            await self._write(self._connect_pkt())

    def _connect_pkt(self):
        cid = _str(self.client_id)
        flags = 0x02  # clean session
        n = 10 + 2 + len(cid)
        w = self.will
        if w:
            wt = _str(w[0])
            wp = _str(w[1])
            n += 4 + len(wt) + len(wp)
            flags |= 0x04 | ((w[3] & 3) << 3) | (0x20 if w[2] else 0)
        if self.user is not None:
            u = _str(self.user)
            n += 2 + len(u)
            flags |= 0x80
        if self.password is not None:
            pw = _str(self.password)
            n += 2 + len(pw)
            flags |= 0x40
        pkt = bytearray(1 + _vlen(n) + n)
        pkt[0] = 0x10
        i = _put_str(pkt, _put_len(pkt, 1, n), b"MQTT")
        pkt[i] = 4  # protocol level 3.1.1
        pkt[i + 1] = flags
        pkt[i + 2] = self.keepalive >> 8
        pkt[i + 3] = self.keepalive & 0xFF
        i = _put_str(pkt, i + 4, cid)
        if w:
            i = _put_str(pkt, i, wt)
            i = _put_str(pkt, i, wp)
        if flags & 0x80:
            i = _put_str(pkt, i, u)
        if flags & 0x40:
            i = _put_str(pkt, i, pw)
        return pkt

    async def _serve(self):
        self._connected()
        ka = self.keepalive * 1000
        ping_ms = ka // 4
        dead_ms = ka * 3 // 2
        last_ping = ticks_ms()
        while self._state == _UP and not self._closing:
            if not ka:
                await self._wait(60000)
                continue
            now = ticks_ms()
            if ticks_diff(now, self._last_rx) >= dead_ms:
                raise OSError(errno.ETIMEDOUT)  # nothing heard: broker or link dead
            if ticks_diff(now, last_ping) >= ping_ms:
                last_ping = now
                self.stats["pings"] += 1
                await self._send(_PING)
                continue
            await self._wait(min(ping_ms - ticks_diff(now, last_ping),
                                 dead_ms - ticks_diff(now, self._last_rx)))

    def _lost(self):
        st = self._state
        if st == _DOWN and self._sock is None:
            return
        self._state = _DOWN
        r = self._reader
        self._reader = None
        if r is not None and r is not asyncio.current_task():
            r.cancel()
        s = self._sock
        self._sock = None
        if s is not None:
            try:
                s.close()
            except Exception:
                pass
        for ev in self._pend.values():
            ev.rc = -1
            ev.set()
        self._pend.clear()
        self._ev.set()
        self._went_down(st)

    def _co(self, k, r, a, h=0):
        # A reader step's coroutine, or None when the heap has no hole for it now: its frame (or
        # the slice it reads into) is made before it reads a byte, so after a MemoryError the
        # caller waits (sleep_ms allocates nothing) and makes it again, the stream where it was.
        # k: 0 read into the memoryview a; 1 the next a bytes into the receive buffer; 2 skip a
        # bytes; 3 a PUBLISH of a bytes after the fixed header h; 4 write the PUBACK a; and 5,
        # not a coroutine: the receive buffer's first a bytes (a slice, made again alike).
        try:
            if k == 0:
                return _fill(r, a)
            if k == 1:
                return _fill(r, self._rx[:a])
            if k == 2:
                return self._skip(r, a)
            if k == 3:
                return self._rx_publish(r, h, a)
            if k == 4:
                return self._write(a)
            return self._rx[:a]
        except MemoryError:
            gc.collect()
            return None

    async def _read(self, r, gen):
        try:
            while True:
                # the fixed header: its type byte and 1-4 length bytes (every packet has 2: read
                # at once, one step less per packet; a length over 127 reads on, a byte a step)
                while (co := self._co(0, r, self._b2)) is None:
                    await asyncio.sleep_ms(20)
                await co
                b = self._rx
                h = b[0]
                c = b[1]
                n = c & 0x7F
                sh = 0
                while c & 0x80:
                    sh += 7
                    if sh > 21:
                        raise OSError(errno.EIO)  # more than 4 length bytes
                    while (co := self._co(1, r, 1)) is None:
                        await asyncio.sleep_ms(20)
                    await co
                    c = b[0]
                    n |= (c & 0x7F) << sh
                self._last_rx = ticks_ms()
                t = h & 0xF0
                if t == 0x30:
                    k = 3
                elif (t == 0x40 or t == 0x20) and n == 2 or t == 0x90 and 3 <= n <= self.rx_size:
                    k = 1  # PUBACK, CONNACK, SUBACK: the body into the receive buffer
                else:  # PINGRESP, UNSUBACK, anything else: skip the body
                    k = 2
                while (co := self._co(k, r, n, h)) is None:
                    await asyncio.sleep_ms(20)
                await co
                co = None  # its frame is garbage while the next packet is awaited
                if k != 1:
                    continue
                b = self._rx
                if t == 0x40:  # PUBACK
                    if self._resolve((b[0] << 8) | b[1], 0):
                        self.stats["puback"] += 1
                elif t == 0x90:  # SUBACK
                    self._resolve((b[0] << 8) | b[1], b[2])
                else:  # CONNACK
                    if self._state != _CONNECTING:
                        raise OSError(errno.EIO)
                    if b[1]:
                        raise OSError(errno.ECONNREFUSED)  # rc 1..5: refused by broker
                    self._state = _UP
                    self._ev.set()
        except Exception as e:  # EOFError, OSError, protocol errors
            if gen == self._gen and not self._closing:
                self._err(e)
        if gen == self._gen:
            self._lost()

    async def _skip(self, r, n):
        rx = self._rx
        while n:
            k = n if n < len(rx) else len(rx)
            while (co := self._co(1, r, k)) is None:
                await asyncio.sleep_ms(20)
            await co
            n -= k

    async def _rx_publish(self, r, h, n):
        qos = (h >> 1) & 3
        if n < 2:
            raise OSError(errno.EIO)
        while (co := self._co(1, r, 2)) is None:
            await asyncio.sleep_ms(20)
        await co
        b = self._rx
        tl = (b[0] << 8) | b[1]
        k = tl + (2 if qos else 0)  # topic and packet id: where the payload starts
        n -= 2
        if n < k:
            raise OSError(errno.EIO)
        pid = 0
        b = None
        if n - k <= self.max_payload and qos < 2:
            if n <= self.rx_size:
                while (b := self._co(5, r, n)) is None:
                    await asyncio.sleep_ms(20)
            else:
                try:
                    b = memoryview(bytearray(n))
                except MemoryError:  # no room for it now (fragmented heap): dropped, not the link
                    b = None
        if b is None:  # too big for us, no room, or QoS 2: dropped, counted
            while (co := self._co(2, r, tl)) is None:
                await asyncio.sleep_ms(20)
            await co
            if qos:
                while (co := self._co(1, r, 2)) is None:
                    await asyncio.sleep_ms(20)
                await co
                pid = (self._rx[0] << 8) | self._rx[1]
            while (co := self._co(2, r, n - k)) is None:
                await asyncio.sleep_ms(20)
            await co
            try:  # the message is gone whole: the stream is in sync
                e = OSError(errno.ENOBUFS if qos < 2 else errno.EIO)
            except MemoryError as m:  # (no hole for the error: counted all the same)
                e = m
            self._err(e)
        else:
            while (co := self._co(0, r, b)) is None:
                await asyncio.sleep_ms(20)
            await co
            if qos:
                pid = (b[tl] << 8) | b[tl + 1]
            self.stats["rx"] += 1
            if self.on_message:
                try:
                    self.on_message(str(b[:tl], "utf-8"), b[k:])
                except Exception as e:
                    self._err(e)
            b = None
        co = None
        if qos == 1:  # acknowledge even if the handler failed: a redelivery would not help
            while True:  # (not `async with`: its __aexit__ is a frame too, the lock held if it fails)
                try:
                    await self._lock.acquire()
                    break
                except MemoryError:
                    gc.collect()
                    await asyncio.sleep_ms(20)
            try:
                if self._state == _UP:
                    a = self._ack
                    a[2] = pid >> 8
                    a[3] = pid & 0xFF
                    while (co := self._co(4, r, a)) is None:
                        await asyncio.sleep_ms(20)
                    await co
            finally:
                self._lock.release()


async def _fill(r, mv):
    # read exactly len(mv) bytes into the memoryview mv (no allocation beyond the slices)
    n = len(mv)
    got = 0
    while got < n:
        try:
            k = await r.readinto(mv[got:] if got else mv)
        except MemoryError:  # no hole for the read's frame or slice: nothing was read (the
            await asyncio.sleep_ms(20)  # bytes go into mv only after the wait); again
            continue
        if k == 0:
            raise EOFError
        if k:
            got += k
