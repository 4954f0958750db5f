# CoAP (RFC 7252) transport for the device runtime: the same interface as edge.mqtt.MQTTClient
# (run / is_connected / publish / subscribe / close, on_message / on_connect / on_down, `will`
# accepted and ignored), so Runtime(cfg, hal, App, mqtt_class=CoapTransport) runs unchanged.
# The mapping is in docs/protocol.md ("CoAP mapping"):
# * publish("pe/1/{dev}/{ch}", payload) -> CON POST /pe/1/{dev}/{ch}?s={session}; a payload in
#   the response (the gateway's ack or rebirth) goes to on_message("pe/1/{dev}/ctl", ...)
#   before publish returns, so an event's ack rides its own response;
# * subscribe("pe/1/{dev}/cmd") starts a long poll, CON GET /pe/1/{dev}/cmd?hold=H: each
#   response carries one `cmd` (-> .../cmd) or `ctl` (-> .../ctl) message, or nothing;
# * subscribe("pe/1/gateway/state") gets "online" at once (like a retained message), and
#   "offline" when the gateway is lost;
# * keepalive = the heartbeat interval `hb`: the gateway hears from us at least that often (the
#   poll itself; POST /hb when nothing else went out), and calls us offline after 3 missed.
# Message layer: CON with RFC 7252 retransmission (ACK_TIMEOUT 2 s, ACK_RANDOM_FACTOR 1.5,
# MAX_RETRANSMIT 4: give up after ~62-93 s), piggybacked and separate responses, random
# tokens, incoming message-id dedupe (a repeated CON response is ACKed again, delivered
# once), Block1 for requests over 1024 bytes, Block2 for responses. Two lanes, each with one
# outstanding request (NSTART 1 per lane): the long poll, and everything else.
# A request whose retransmissions all go unanswered fails (ETIMEDOUT) and makes the transport
# ping the gateway (empty CON, answered by RST); if 3 pings go unanswered too, the link is
# down (on_down) and is probed with pings with jittered exponential backoff; the next answer
# is a new "connection" (on_connect: a new session and birth).
# Authentication (docs/protocol.md, "CoAP authentication"): with a key (`password`, 64 hex
# digits from tools/provision.py) the link starts with GET .../auth (unsigned), which returns
# a single-use challenge, then POST .../auth with that challenge as payload, signed, which
# returns a session nonce; every request carries the Edge-Auth option: counter +
# HMAC-SHA256 over nonce, counter, method, path, query, block options and payload. A 4.01
# (wrong key, or a gateway that restarted and forgot the session) takes the link down: the
# next connect gets a new one.
import asyncio
import errno
import json
import socket
from binascii import unhexlify
from hashlib import sha256
from time import ticks_diff, ticks_ms

# asyncio's own I/O queue (asyncio/core.py, frozen into every port: the streams wait on it the
# same way); the published 1.29 stubs describe only asyncio's public names (docs/boards.md)
from asyncio.core import _io_queue  # type: ignore[import-not-found]

from edge.link import DOWN as _DOWN
from edge.link import UP as _UP
from edge.link import Link, getrandbits

CON = 0
NON = 1
ACK = 2
RST = 3
GET = 1
POST = 2
CHANGED = 68      # 2.04
CONTENT = 69      # 2.05
UNAUTHORIZED = 129  # 4.01
CONTINUE = 95     # 2.31
OPT_OBSERVE = 6
OPT_URI_PATH = 11
OPT_CONTENT_FORMAT = 12
OPT_MAX_AGE = 14
OPT_URI_QUERY = 15
OPT_BLOCK2 = 23
OPT_BLOCK1 = 27
OPT_AUTH = 65000  # Edge-Auth (experimental range): counter (4) + tag (16)
BLOCK_SZX = 6     # 1024-byte blocks (Block1: what we send)
BLOCK = 1024
RX_SZX = 5        # 512-byte blocks asked for in responses (Block2, early negotiation)
RX_MAX = 640      # largest datagram we read (a 512-byte block + header and options)


def hmac_pads(key):
    # HMAC-SHA256 (RFC 2104; the boards' hashlib has no hmac), key <= 64 bytes: the inner
    # and outer keys. HMAC(m) = hmac_end(opad, sha256(ipad) fed m)
    k = key + bytes(64 - len(key))
    return bytes(b ^ 0x36 for b in k), bytes(b ^ 0x5C for b in k)


def hmac_end(opad, inner):
    o = sha256(opad)
    o.update(inner.digest())
    return o.digest()


def _u32(n):
    return bytes((n >> 24, (n >> 16) & 255, (n >> 8) & 255, n & 255))


def code_str(code):
    return "%d.%02d" % (code >> 5, code & 31)


def _opt_bytes(value):
    if isinstance(value, int):  # uint: big-endian, no leading zero bytes
        n = 0
        while value >> (8 * n):
            n += 1
        return bytes((value >> (8 * (n - 1 - i))) & 0xFF for i in range(n))
    return value.encode() if isinstance(value, str) else value


def _ext(n):
    # nibble and extension bytes for an option delta or length
    if n < 13:
        return n, b""
    if n < 269:
        return 13, bytes((n - 13,))
    n -= 269
    return 14, bytes((n >> 8, n & 0xFF))


def encode(mtype, code, mid, token, opts=(), payload=None):
    """A CoAP message. `opts`: (number, value) pairs in option-number order (repeated options
    such as Uri-Path in their own order), value bytes/str/int."""
    out = bytearray(4)
    out[0] = 0x40 | (mtype << 4) | len(token)
    out[1] = code
    out[2] = mid >> 8
    out[3] = mid & 0xFF
    out += token
    last = 0
    for num, value in opts:
        if num < last:
            raise ValueError("options out of order")
        v = _opt_bytes(value)
        dn, dx = _ext(num - last)
        ln, lx = _ext(len(v))
        out.append((dn << 4) | ln)
        out += dx
        out += lx
        out += v
        last = num
    if payload:
        out.append(0xFF)
        out += payload
    return out


def decode(buf):
    """(mtype, code, mid, token, opts {number: [bytes]}, payload) or None if malformed.
    payload is None when the heap had no hole for its copy (up to 512 bytes in a poll's block);
    a memoryview into buf when its first byte is 0 (a firmware chunk, docs/ota.md, or binary:
    CoapTransport._rx copies it unless it is the chunk it waits for)."""
    n = len(buf)
    if n < 4 or buf[0] >> 6 != 1:
        return None
    tkl = buf[0] & 0x0F
    if tkl > 8 or 4 + tkl > n:
        return None
    mtype = (buf[0] >> 4) & 3
    code = buf[1]
    mid = (buf[2] << 8) | buf[3]
    token = bytes(buf[4:4 + tkl])
    i = 4 + tkl
    num = 0
    opts = {}
    payload = b""
    while i < n:
        b = buf[i]
        i += 1
        if b == 0xFF:
            if i == n:
                return None  # a payload marker with no payload
            if buf[i] == 0:  # maybe a firmware chunk (JSON never starts with 0): not copied
                payload = memoryview(buf)[i:]  # yet, _rx decides
                break
            try:
                payload = bytes(buf[i:])
            except MemoryError:  # no hole for the copy: None, the message is known but lost
                payload = None  # (CoapTransport._rx ends its exchange at once, issue 16)
            break
        vals = []
        for nib in (b >> 4, b & 0x0F):
            if nib == 13:
                if i >= n:
                    return None
                nib = buf[i] + 13
                i += 1
            elif nib == 14:
                if i + 1 >= n:
                    return None
                nib = ((buf[i] << 8) | buf[i + 1]) + 269
                i += 2
            elif nib == 15:
                return None
            vals.append(nib)
        num += vals[0]
        if i + vals[1] > n:
            return None
        opts.setdefault(num, []).append(bytes(buf[i:i + vals[1]]))
        i += vals[1]
    return mtype, code, mid, token, opts, payload


def opt_uint(opts, num, default=None):
    v = opts.get(num)
    if not v:
        return default
    r = 0
    for b in v[0]:
        r = (r << 8) | b
    return r


def block_opt(num, more, szx=BLOCK_SZX):
    return (num << 4) | (8 if more else 0) | szx


class _Exchange:
    def __init__(self, mid, token, ping=False):
        self.mid = mid
        self.token = token
        self.ping = ping
        self.ev = asyncio.Event()
        self.acked = False
        self.rst = False
        self.resp = None  # (code, opts, payload)
        self.lost = False  # a datagram was lost to the heap while this waited for its ACK


class CoapTransport(Link):
    ACK_TIMEOUT_MS = 2000
    ACK_RANDOM_FACTOR = 1.5
    MAX_RETRANSMIT = 4

    def __init__(self, client_id, host, port=5683, keepalive=30, user=None, password=None,
                 will=None, on_message=None, on_connect=None, on_down=None, hold=None,
                 ack_timeout=None, backoff_max=30, response_timeout=10, queue_max=4):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.will = will  # MQTT's last will has no CoAP counterpart: the gateway uses silence
        self.on_message = on_message
        self.on_connect = on_connect
        self.on_down = on_down
        self.prefix = "pe/1/" + client_id + "/"
        self.path = ("pe", "1", client_id)
        self.hb_ms = max(1, keepalive) * 1000
        self.hold = hold if hold is not None else max(1, keepalive * 3 // 4)
        self.ack_timeout = ack_timeout or self.ACK_TIMEOUT_MS
        self.backoff_max = backoff_max
        self.queue_max = queue_max
        self._queued = 0
        self._rt = int(response_timeout * 1000)  # a separate response after an empty ACK
        self.stats = {"connects": 0, "disconnects": 0, "req": 0, "retx": 0, "rx": 0, "dup": 0,
                      "rejected": 0, "busy": 0, "dropped": 0, "polls": 0, "cmds": 0, "hb": 0, "errors": 0,
                      "timeouts": 0, "suspects": 0, "unauth": 0, "rx_dropped": 0, "rx_short": 0,
                      "rx_lost": 0}
        self.key = hmac_pads(unhexlify(password)) if password else None  # CoAP key (config.py checks it)
        self._nonce = None  # session nonce from POST .../auth
        self._ctr = 0
        self.last_error = None
        self.session = None
        self._state = _DOWN
        self._sock = None
        self._reader = None
        self._tasks = []
        self._gen = 0
        self._ev = asyncio.Event()
        self._closing = False
        self._suspect = False
        self._stopped = None
        self._mid = getrandbits(16)
        self._ex = {}        # mid -> exchange awaiting ACK/RST
        self._bytoken = {}   # token -> exchange awaiting a response
        self._buf = bytearray(RX_MAX)  # for a datagram when the heap has no hole for recv()
        self._no_recv = False  # a datagram was lost to the heap: read the next one into _buf
        self._seen = [None] * 8  # recent incoming CON/NON message ids (dedupe)
        self._seen_i = 0
        self._req_lock = asyncio.Lock()
        self._poll_lock = asyncio.Lock()
        self._subs = {}
        self._last_tx = ticks_ms()
        self.full = None  # the runtime's: True while it handles as many commands as it may
        self._born = False
        self._again = False  # the last poll's message was not taken: say so in the next poll
        self._ota_ex = None  # the exchange of the chunk request in flight (_rx)

    # ---- public API (as MQTTClient) -------------------------------------------------------

    async def run(self):
        try:
            await Link.run(self)
        finally:
            self._close_sock()

    async def publish(self, topic, payload, qos=0, retain=False):
        """POST the message; returns once the gateway has answered (2.xx, or 4.xx which, like a
        broker taking a message the gateway then drops, is counted in stats["rejected"]).
        Raises OSError when not connected, when the link is lost, or on 5.xx (after waiting
        the Max-Age the gateway asked for)."""
        if self._state != _UP:
            raise OSError(errno.ENOTCONN)
        if not topic.startswith(self.prefix):
            raise ValueError("topic")
        ch = topic[len(self.prefix):]
        p = payload.encode() if isinstance(payload, str) else payload
        if isinstance(p, dict):  # the runtime hands replies and births over as dicts
            p = json.dumps(p).encode()
        if ch in ("birth", "status"):
            try:
                self.session = json.loads(p)["body"]["session"]
            except (ValueError, KeyError, TypeError):
                pass
        for again in range(3):
            # an event's or birth's response carries the gateway's ack, rebirth or new_epoch:
            # one that finds no heap to be taken in is asked for again by repeating the request
            # with again=1 (the gateway is idempotent for both; issue 16)
            q = self._query()
            if again:
                q.append("again=1")
            code, opts, body = await self._call(self._req_lock, POST, ch, q, p)
            if code >> 5 != 2 or ch not in ("evt", "birth") or again == 2:
                break
            if body is None or (body and self._deliver(body, 0 in opts) is False):
                await asyncio.sleep_ms(100)  # the heap changes as the other tasks go on
                continue
            body = b""  # delivered
            break
        if ch == "birth":
            self._born = True  # the poll may start: the gateway knows this session now
        cls = code >> 5
        if cls == 2:
            if body:
                self._deliver(body)
            return
        if cls == 4:
            self.stats["rejected"] += 1
            self._err(ValueError("%s %s %s" % (ch, code_str(code), body[:60])))
            return
        self.stats["busy"] += 1
        await asyncio.sleep_ms(1000 * opt_uint(opts, OPT_MAX_AGE, 2))
        raise OSError(errno.EAGAIN)

    async def subscribe(self, topic, qos=1):
        if self._state != _UP:
            raise OSError(errno.ENOTCONN)
        self._subs[topic] = qos
        if topic == "pe/1/gateway/state":
            self._gateway_state(True)
        elif topic.startswith(self.prefix) and not self._tasks:  # cmd (or ctl): one poller
            self._tasks.append(asyncio.create_task(self._poller(self._gen)))

    async def close(self):
        self._closing = True
        await self._closed()

    # ---- connection -----------------------------------------------------------------------

    def _open(self):
        self._close_sock()
        ai = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_DGRAM)[0]
        s = socket.socket(ai[0], socket.SOCK_DGRAM, ai[2])
        s.connect(ai[-1])  # the kernel then drops datagrams that are not from the gateway
        s.setblocking(False)
        self._sock = s
        self._gen += 1
        self._reader = asyncio.create_task(self._read(s, self._gen))

    def _close_sock(self):
        r = self._reader
        self._reader = None
        if r is not None:
            r.cancel()
        s = self._sock
        self._sock = None
        if s is not None:
            try:
                s.close()
            except Exception:
                pass

    async def _ping(self, sends):
        # CoAP ping: an empty CON, answered by RST. True if answered within `sends` tries.
        mid = self._next_mid()
        ex = _Exchange(mid, b"", ping=True)
        self._ex[mid] = ex
        try:
            msg = encode(CON, 0, mid, b"")
            to = self._first_timeout()
            for _ in range(sends):
                self._send(msg)
                if await self._until(ex, to):
                    return True
                to *= 2
            return False
        finally:
            self._ex.pop(mid, None)

    async def _connect(self):
        self._open()
        if self.key is not None:
            await self._handshake()
        elif not await self._ping(2):  # then back off
            raise OSError(errno.ETIMEDOUT)
        self._state = _UP
        self._suspect = False
        self.session = None  # learnt from this connection's birth
        self._born = False  # no poll before the birth is answered (below, _poller)
        self._connected()
        return True

    async def _handshake(self):
        # GET a challenge (unsigned), POST it back signed with a zero nonce: a new session
        # nonce. 2 tries each, like the ping
        self._nonce = None
        self._ctr = getrandbits(30)
        p = [(OPT_URI_PATH, x) for x in self.path]
        p.append((OPT_URI_PATH, "auth"))
        code, _, body = await self._exchange(GET, p, None, None, 2)
        if code == CONTENT and body:
            code, _, body = await self._exchange(POST, p, body, None, 2)
        if code != CHANGED or len(body) != 8:
            self._err(ValueError("auth " + code_str(code)))
            raise OSError(errno.EACCES)
        self._nonce = body
        self._ctr = 0

    def _sign(self, code, opts, payload):
        # the Edge-Auth option value: counter + HMAC-SHA256(key, nonce | counter | code | path
        # | 0 | query | 0 | block1 | block2 | payload)[:16]
        self._ctr = c = (self._ctr + 1) & 0xFFFFFFFF
        h = sha256(self.key[0])  # fed piece by piece: no copies (opts are in number order)
        h.update(self._nonce or bytes(8))
        h.update(_u32(c))
        h.update(bytes((code,)))
        b1 = b2 = 0
        sep = b""
        q = b"\0"
        for n, v in opts:
            if n == OPT_URI_PATH:
                h.update(sep)
                h.update(v)
                sep = b"/"
            elif n == OPT_URI_QUERY:
                h.update(q)
                h.update(v)
                q = b"&"
            elif n == OPT_BLOCK1:
                b1 = v
            elif n == OPT_BLOCK2:
                b2 = v
        if q != b"&":
            h.update(q)  # no query: the separator after the path still goes in
        h.update(b"\0")
        h.update(_u32(b1))
        h.update(_u32(b2))
        if payload:
            h.update(payload)
        return _u32(c) + hmac_end(self.key[1], h)[:16]

    async def _serve(self):
        # Up until the gateway stops answering. Make sure it hears from us every hb_ms.
        while self._state == _UP and not self._closing:
            if self._suspect:
                # A request went unanswered through all its retransmissions: on a lossy link
                # that happens now and then without the gateway being gone. Ask with a ping
                # (3 tries) before calling the link down and starting a new session.
                self._suspect = False
                self.stats["suspects"] += 1
                if not await self._ping(3):
                    raise OSError(errno.ETIMEDOUT)
                continue
            idle = ticks_diff(ticks_ms(), self._last_tx)
            if idle >= self.hb_ms and not self._req_lock.locked():
                self.stats["hb"] += 1
                try:
                    await self._call(self._req_lock, POST, "hb", self._query(), None)
                except OSError:
                    pass
                continue
            await self._wait(min(1000, max(50, self.hb_ms - idle)))

    def _lost(self):
        st = self._state
        self._state = _DOWN
        for ex in self._ex.values():
            ex.ev.set()
        for ex in self._bytoken.values():
            ex.ev.set()
        for t in self._tasks:
            if t is not asyncio.current_task():
                t.cancel()
        self._tasks = []
        self._ev.set()
        if st == _UP:
            self._gateway_state(False)
        self._went_down(st)

    def _gateway_state(self, online):
        if "pe/1/gateway/state" in self._subs and self.on_message:
            msg = '{"v":1,"dev":"gateway","type":"%s","t":null,"body":{}}' % (
                "online" if online else "offline")
            try:
                self.on_message("pe/1/gateway/state", msg.encode())
            except Exception as e:
                self._err(e)

    # ---- long poll ------------------------------------------------------------------------

    async def _poller(self, gen):
        while gen == self._gen and self._state == _UP:
            if not self._born or (self.full is not None and self.full()):
                # the next message waits at the gateway, not in our heap: a burst of commands
                # handled all at once left no room for the replies (issue 16). And no poll
                # before this session's birth is answered: one sent during the birth, without
                # `s=`, was parked by the gateway and never answered under load, and the
                # command it should have carried came 17 s (hold + 10 s) later
                await asyncio.sleep_ms(50)
                continue
            q = self._query()
            q.append("hold=%d" % self.hold)
            again = self._again
            if again:  # the gateway sends the last message again (docs/protocol.md)
                q.append("again=1")
            self._again = True  # until this poll's message is taken (or there was none)
            try:
                code, opts, body = await self._call(self._poll_lock, GET, "cmd", q, None,
                                                    (self.hold * 1000) + self._rt)
            except OSError:
                if self._state != _UP:
                    return
                continue  # answered by an empty ACK but the response never came: poll again
            except Exception as e:  # MemoryError: a dead poller would look connected but deaf
                self._err(e)
                await asyncio.sleep_ms(500)
                continue
            self.stats["polls"] += 1
            if code == CONTENT:
                # asked for again: a message of one block (every ctl message) that found no
                # heap. Not a body of several blocks: too big to be sure of a hole, and junk
                # (4 KB of nested JSON) asked for again held the commands behind it for seconds
                # each time at 96 KB; a command comes again anyway (redelivery every 2 s)
                glued = 0 in opts and not opt_uint(opts, OPT_BLOCK2, 0) >> 4  # one block only
                self._again = bool(body) and self._deliver(body, glued) is False and (
                    glued or len(body) <= 512)
            else:  # 5.03 with Max-Age, or the gateway does not know this resource
                self._again = again
                self.stats["busy"] += 1
                await asyncio.sleep_ms(1000 * opt_uint(opts, OPT_MAX_AGE, self.hold))

    def _deliver(self, body, glued=False):
        # False: no heap to take it now (asked for again); anything else: taken or refused
        if body[0] == 0:  # a firmware chunk, the answer to a POST .../ota (docs/ota.md)
            t = self.prefix + "ctl"
            if t in self._subs and self.on_message:
                self.on_message(t, body)
            return
        try:
            mtype = json.loads(body).get("type")
        except MemoryError:  # no heap now, or JSON nested too deep (the gateway gives up)
            self.stats["rx_dropped"] += 1
            return False
        except (ValueError, AttributeError):
            if glued:  # maybe the next datagram came glued to it (_read): ask for it again
                return False
            self._err(ValueError("bad message from gateway"))
            return
        topic = self.prefix + ("cmd" if mtype == "cmd" else "ctl")
        if mtype == "cmd":
            self.stats["cmds"] += 1
        if topic in self._subs and self.on_message:
            try:
                return self.on_message(topic, body)  # the runtime's False: no heap for it
            except Exception as e:
                self._err(e)

    # ---- requests -------------------------------------------------------------------------

    def _query(self):
        q = ["hb=%d" % (self.hb_ms // 1000)]
        if self.session is not None:
            q.append("s=%d" % self.session)
        return q

    def _next_mid(self):
        self._mid = (self._mid + 1) & 0xFFFF
        return self._mid

    def _first_timeout(self):
        # ACK_TIMEOUT .. ACK_TIMEOUT * ACK_RANDOM_FACTOR
        span = int(self.ack_timeout * (self.ACK_RANDOM_FACTOR - 1))
        return self.ack_timeout + ((span * getrandbits(8)) >> 8)

    def _send(self, msg):
        s = self._sock
        if s is None:
            raise OSError(errno.ENOTCONN)
        try:
            s.send(msg)
        except OSError as e:  # e.g. ECONNREFUSED reported late, ENOBUFS: retransmission covers it
            self._err(e)

    async def _until(self, ex, ms):
        # wait up to ms for something to happen to the exchange; True if it did
        if not ex.ev.is_set():
            try:
                await asyncio.wait_for_ms(ex.ev.wait(), ms)
            except asyncio.TimeoutError:
                pass
        ex.ev.clear()
        if self._state != _UP and not ex.ping:
            raise OSError(errno.ECONNABORTED)
        return ex.acked or ex.rst or ex.resp is not None

    async def _call(self, lock, code, ch, query, payload, wait_ms=None):
        """One request, Block1/Block2 as needed. Returns (code, opts, payload)."""
        if lock is self._req_lock and ch == "reply":
            # Replies wait in a bounded queue (mqtt_as keeps one too): on a slow, lossy link
            # repeated command deliveries would otherwise pile up reply tasks until the heap
            # runs out. A refused reply costs nothing: the gateway re-sends the command and
            # the command log answers it again. Events, births and status are never refused
            # (one sender each). Never fail without yielding: callers retry in loops.
            if self._queued >= self.queue_max:
                self.stats["dropped"] += 1
                await asyncio.sleep_ms(20)
                raise OSError(errno.EAGAIN)
            self._queued += 1
            try:
                return await self._call_locked(lock, code, ch, query, payload, wait_ms)
            finally:
                self._queued -= 1
        return await self._call_locked(lock, code, ch, query, payload, wait_ms)

    async def _call_locked(self, lock, code, ch, query, payload, wait_ms):
        async with lock:
            if self._state != _UP:
                raise OSError(errno.ENOTCONN)
            opts = [(OPT_URI_PATH, p) for p in self.path]  # in option-number order
            opts.append((OPT_URI_PATH, ch))
            if payload:
                opts.append((OPT_CONTENT_FORMAT, 50))
            for item in query:
                opts.append((OPT_URI_QUERY, item))
            if payload and len(payload) > BLOCK:
                n = (len(payload) + BLOCK - 1) // BLOCK
                for i in range(n):
                    part = payload[i * BLOCK:(i + 1) * BLOCK]
                    r = await self._exchange(code, opts + [(OPT_BLOCK1, block_opt(i, i < n - 1))],
                                             part, wait_ms)
                    if i < n - 1 and r[0] != CONTINUE:
                        return r  # the gateway refused the transfer (4.13, 4.08 ...)
            elif code == GET:  # a response over 512 bytes comes in 512-byte blocks (RFC 7959
                # early negotiation): every datagram fits RX_MAX, recv() asks the heap for 640
                # contiguous bytes instead of 1280, and a block's copy is 512 bytes at most
                r = await self._exchange(code, opts + [(OPT_BLOCK2, block_opt(0, False, RX_SZX))],
                                         None, wait_ms)
            else:
                r = await self._exchange(code, opts, payload, wait_ms, 0, ch == "ota")
            body = r[2]
            while body is not None:  # None: a POST's response had no hole (_exchange)
                b2 = opt_uint(r[1], OPT_BLOCK2)
                if b2 is None or not b2 & 8:
                    break
                nxt = (b2 >> 4) + 1
                self._again = False  # a body of several blocks is not asked for again (_poller)
                if len(body) >= 4096:  # and more to come: larger than the protocol allows
                    self.stats["rx_dropped"] += 1  # refused before its next block is fetched
                    raise OSError(errno.ENOBUFS)
                r = await self._exchange(code, opts + [(OPT_BLOCK2, block_opt(nxt, False, b2 & 7))],
                                         None, wait_ms)
                if r[0] >> 5 != 2:
                    return r
                try:
                    body += r[2]
                except MemoryError:  # no hole for the body so far: drop it, go on (a command
                    self.stats["rx_dropped"] += 1  # is re-sent by the gateway until answered)
                    raise OSError(errno.ENOBUFS)
            return r[0], r[1], body

    async def _exchange(self, code, opts, payload, wait_ms=None, sends=0, ota=False):
        """One CON request with RFC 7252 retransmission. A request nobody ever acknowledges
        means the gateway is gone: the link is declared lost. (sends: the handshake's tries.)"""
        mid = self._next_mid()
        token = bytes((getrandbits(8), getrandbits(8), getrandbits(8), getrandbits(8)))
        ex = _Exchange(mid, token, sends > 0)
        if ota:  # a POST .../ota: its response is a firmware chunk, taken in place (_rx)
            self._ota_ex = ex
        self._ex[mid] = ex
        self._bytoken[token] = ex
        if self.key is not None and (self._nonce or code == POST):
            # signed once: a retransmission repeats the counter (GET auth, the challenge,
            # is the one request without a nonce that is not signed)
            opts = opts + [(OPT_AUTH, self._sign(code, opts, payload))]
        msg = encode(CON, code, mid, token, opts, payload)
        self.stats["req"] += 1
        try:
            to = self._first_timeout()
            for attempt in range(sends or self.MAX_RETRANSMIT + 1):
                if attempt:
                    self.stats["retx"] += 1
                else:  # liveness (hb): the gateway counts requests, not retransmissions, ACKs
                    self._last_tx = ticks_ms()  # or pings, which its dedupe and RST answer
                self._send(msg)
                if await self._until(ex, to):
                    break
                if ex.lost:  # its response was lost to the heap (_read): sent again now, and
                    ex.lost = False  # the timer is not doubled (the gateway did answer)
                else:
                    to *= 2
            else:
                self.stats["timeouts"] += 1
                self._suspect = True  # the supervisor checks whether the gateway is still there
                self._ev.set()
                raise OSError(errno.ETIMEDOUT)
            self._ex.pop(mid, None)
            if ex.rst:
                raise OSError(errno.ECONNRESET)
            if ex.resp is None:  # empty ACK: the response comes separately
                limit = wait_ms or self._rt
                t0 = ticks_ms()
                while ex.resp is None:
                    left = limit - ticks_diff(ticks_ms(), t0)
                    if left <= 0:
                        raise OSError(errno.ETIMEDOUT)
                    await self._until(ex, left)
            if ex.resp[0] == UNAUTHORIZED and self.key is not None:
                # the gateway does not know our session (it restarted) or our key: start over
                self.stats["unauth"] += 1
                self._err(ValueError((ex.resp[2] or b"")[:80]))
                if not sends:
                    self._lost()
                raise OSError(errno.EACCES)
            if ex.resp[2] is None:
                # The response came but the heap had no hole for its payload (_rx). Waiting for
                # a retransmission does not help: the gateway's dedupe answers it with the same
                # datagram, and on a quiet device the heap is the same too, so the lane stalled
                # for 2 + 4 + 8 ... s and the commands behind waited (issue 16: 20 s without an
                # answer to the kit's `ping` after a 4 KB message at 96 KB). Ended now instead,
                # and the message asked for again: the next poll says again=1 (_poller); a
                # POST was taken by the gateway, publish() repeats it with again=1 (None here)
                self.stats["rx_dropped"] += 1
                if code == GET:
                    if (opt_uint(ex.resp[1], OPT_BLOCK2) or 0) & 8:
                        self._again = False  # the first block of several: not asked for again
                    raise OSError(errno.ENOBUFS)
                return ex.resp[0], ex.resp[1], None
            return ex.resp
        finally:
            self._ex.pop(mid, None)
            self._bytoken.pop(token, None)
            if self._ota_ex is ex:
                self._ota_ex = None

    # ---- receiving ------------------------------------------------------------------------

    async def _read(self, s, gen):
        # One datagram per recv(). StreamReader.readinto is a stream read: it loops until the
        # buffer is full or the socket is empty, so two datagrams waiting in the socket came
        # back glued into one buffer that did not decode: the response inside was lost and its
        # request waited for a retransmission (2-3 s), replies and commands piling up behind it
        # (issue 16; tests/test_coap_datagrams.py). recv() needs RX_MAX contiguous bytes;
        # when a fragmented heap has no such hole, the datagram is read into the transport's
        # buffer as before (a glue is then possible).
        # recv() can also take the datagram and then fail: the unix port copies it into a new
        # bytes object after the syscall (a second hole of its size), so the datagram is gone
        # and readinto() finds nothing. Its exchange then waited for the retransmission timer,
        # and the gateway's dedupe answered with the same datagram into the same heap: lost
        # again (issue 16: a 512-byte block of bad-input's 4 KB bodies cost 2 + 4 s, the kit's
        # `ping` behind them went unanswered for 20 s about one run in 10). Now the exchanges
        # waiting for an ACK are sent again at once, and the next datagram is read into the
        # transport's buffer, which needs no heap (_rx_lost).
        buf = self._buf
        mv = memoryview(buf)
        while gen == self._gen:
            try:
                yield _io_queue.queue_read(s)  # as asyncio's own streams wait for a socket
                d = None
                tried = not self._no_recv
                if tried:
                    try:
                        d = s.recv(RX_MAX)
                    except MemoryError:
                        pass
                short = d is None  # read into our buffer: the next datagram may be glued to it
                if short:
                    n = s.readinto(buf)
                    if n:
                        self._no_recv = False
                        self.stats["rx_short"] += 1
                        d = mv[:n]
                    elif tried:  # recv() took it and failed: lost
                        self._rx_lost()
                if d:
                    self._rx(d, short)
            except OSError as e:  # ICMP port unreachable and the like: the timers decide
                if gen != self._gen:
                    return
                self._err(e)
                await asyncio.sleep_ms(100)
            except Exception as e:  # MemoryError (in _rx: the datagram is lost), a bug: keep
                if isinstance(e, MemoryError):  # reading, the timers recover
                    self._rx_lost()
                self._err(e)
                await asyncio.sleep_ms(20)

    def _rx_lost(self):
        # A datagram read from the socket was lost to the heap (_read): the exchanges waiting
        # for an ACK send their request again now (the gateway answers a retransmission from
        # its dedupe, at once) instead of after 2-3 s, 4-6 s ...; the datagram that answers
        # is read into the transport's buffer. Bounded: each send still counts against
        # MAX_RETRANSMIT.
        self.stats["rx_lost"] += 1
        self._no_recv = True
        for ex in self._ex.values():
            ex.lost = True
            ex.ev.set()

    def _rx(self, d, short=False):
        m = decode(d)
        if m is None:
            self.stats["errors"] += 1
            return
        mtype, code, mid, token, opts, payload = m
        if isinstance(payload, memoryview):  # first byte 0: maybe a firmware chunk (decode)
            # A chunk answering the POST .../ota in flight is written to flash and hashed right
            # here, from the datagram's buffer (as the MQTT client does from its receive
            # buffer); its exchange sees an empty payload. Copied, it needed a ~500-byte hole
            # per chunk, which a fragmented heap lacked: dropped and asked for again, for ever.
            ex = self._ota_ex  # (a second copy, a duplicate, is ignored by the Getter)
            if ex is not None and ex.resp is None and token == ex.token:
                self._deliver(payload)
                payload = b""
            else:  # any other binary payload (the auth challenge) is copied, as decode did
                try:
                    payload = bytes(payload)
                except MemoryError:
                    payload = None
        if short:  # read into our buffer: option 0 (reserved, never sent) marks it for _deliver
            opts[0] = 1
        if mtype == ACK or mtype == RST:
            ex = self._ex.get(mid)
            if ex is None:
                return  # late or duplicated ACK of an exchange that is over
            if mtype == RST:
                ex.rst = True
            else:
                ex.acked = True
                if code and ex.resp is None and token == ex.token:
                    ex.resp = (code, opts, payload)
                    self.stats["rx"] += 1
            ex.ev.set()
            return
        # CON or NON: a separate response (we serve nothing: requests and pings get RST)
        if code < 64:
            if mtype == CON:
                self._send(encode(RST, 0, mid, b""))
            return
        if mid in self._seen:
            self.stats["dup"] += 1
            if mtype == CON:
                self._send(encode(ACK, 0, mid, b""))  # our ACK got lost: ACK again
            return
        ex = self._bytoken.get(token)
        if ex is None:
            if mtype == CON:
                self._send(encode(RST, 0, mid, b""))
            return
        self._seen[self._seen_i] = mid
        self._seen_i = (self._seen_i + 1) % len(self._seen)
        if mtype == CON:
            self._send(encode(ACK, 0, mid, b""))
        if ex.resp is None:
            ex.acked = True
            ex.resp = (code, opts, payload)
            self.stats["rx"] += 1
            ex.ev.set()


MQTTClient = CoapTransport  # `from edge.coap import MQTTClient` picks the CoAP transport
