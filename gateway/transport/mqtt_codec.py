"""MQTT 3.1.1 packets without I/O: encoders that return bytes, and an incremental decoder that
turns received bytes into packets. No sockets, no asyncio, no clock (aiocoap's codec/transport
split): the gateway's client (`gateway.transport.mqtt_lite`) and the load generator
(`tools/loadgen.py`) own their connections and share this code.

Scope: what those clients send and receive. Encoders: CONNECT (clean or persistent session,
will, keepalive, user/password), SUBSCRIBE, UNSUBSCRIBE, PUBLISH QoS 0/1, PUBACK, PINGREQ,
DISCONNECT. The decoder frames any packet type and parses the ones with a variable header the
clients use (PUBLISH, the packet-id acks, CONNACK).

Decoded packets are plain tuples `(type, flags, packet_id, topic, body)`, all fields always
present (the decoder runs once per inbound message on the gateway's hot path; a tuple is the
cheapest object Python builds):

* `type`: `PUBLISH`, `PUBACK`, ... (the high nibble of the first byte), or `OVERSIZED`;
* `flags`: the low nibble (PUBLISH: DUP 0x08, QoS `(flags >> 1) & 3`, RETAIN 0x01);
* `packet_id`: PUBLISH QoS 1, PUBACK/PUBREC/PUBREL/PUBCOMP, (UN)SUBSCRIBE, (UN)SUBACK; else 0;
* `topic`: PUBLISH and OVERSIZED only (raw UTF-8 bytes), else b"";
* `body`: PUBLISH: the payload; SUBACK: the return codes; CONNACK: its two bytes (session
  present, return code); other types: what follows the packet id, or the whole remaining part.

Limits: a packet whose remaining length exceeds `max_packet` is never buffered. A PUBLISH is
reported as `(OVERSIZED, flags, packet_id, topic, b"")` once its topic and packet id arrived,
and the rest of it is skipped as it comes (the stream stays in sync, and the client can still
PUBACK it: otherwise a persistent session would deliver it again after every reconnect); any
other packet type over the limit is refused with `PacketTooLarge`. Malformed input (a reserved
packet type, a remaining length longer than 4 bytes, a topic or packet id that does not fit in
its packet, QoS 3, a CONNACK that is not 2 bytes) raises `MqttProtocolError`: the stream
cannot be trusted after it, and the connection must be closed. Its `packets` holds the good
packets of the same `feed` call that came before the bad one.
"""
from __future__ import annotations

import struct
from typing import Final

# packet types (MQTT 3.1.1 section 2.2.1)
CONNECT: Final = 1
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
PUBREC: Final = 5
PUBREL: Final = 6
PUBCOMP: Final = 7
SUBSCRIBE: Final = 8
SUBACK: Final = 9
UNSUBSCRIBE: Final = 10
UNSUBACK: Final = 11
PINGREQ_TYPE: Final = 12
PINGRESP: Final = 13
DISCONNECT_TYPE: Final = 14
OVERSIZED: Final = 16  # not a wire type: a PUBLISH over the decoder's `max_packet`, skipped

PINGREQ: Final = b"\xc0\x00"
DISCONNECT: Final = b"\xe0\x00"

MAX_REMAINING_LENGTH: Final = 268_435_455  # 4 bytes of 7 bits (section 2.2.3)
MAX_PACKET: Final = 256 * 1024
"""Default limit on an incoming packet's remaining length: far above what a device may send
(`gateway.devices.protocol.MAX_PAYLOAD`, 4 KiB, whose own `oversized` rejection still sees the
messages between the two), far below what would let one message fill the gateway's memory."""

Packet = tuple[int, int, int, bytes, bytes]
"""(type, flags, packet_id, topic, body): see the module docstring."""

_H = struct.Struct("!H")
_PUBACK = struct.Struct("!BBH")
_ONE_BYTE = [bytes((n,)) for n in range(128)]
_PUBLISH_QOS0 = (b"\x30", b"\x31")  # first byte by retain
_PUBLISH_QOS1 = (b"\x32", b"\x33")
_WITH_PACKET_ID = frozenset((PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, SUBACK, UNSUBSCRIBE,
                             UNSUBACK))


class MqttProtocolError(ValueError):
    """The peer sent bytes that are not MQTT 3.1.1: close the connection (a broker that sends
    them is broken or is not an MQTT broker; check the host and port)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.packets: list[Packet] = []  # decoded before the bad bytes, in the same feed


class PacketTooLarge(MqttProtocolError):
    pass


# -- encoding ---------------------------------------------------------------------------------

def encode_remaining_length(n: int) -> bytes:
    """The variable-length "remaining length" of a fixed header (1 to 4 bytes)."""
    if n < 128:
        if n < 0:
            raise ValueError(f"remaining length {n} is negative")
        return _ONE_BYTE[n]
    if n < 16384:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    if n > MAX_REMAINING_LENGTH:
        raise ValueError(f"packet of {n} bytes is over MQTT's limit of {MAX_REMAINING_LENGTH}")
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def encode_string(s: str | bytes) -> bytes:
    """A length-prefixed UTF-8 string (or binary data) field."""
    b = s.encode() if isinstance(s, str) else s
    if len(b) > 0xFFFF:
        raise ValueError(f"a string field holds at most 65535 bytes, not {len(b)}")
    return _H.pack(len(b)) + b


def _check_pid(pid: int) -> None:
    if not 0 < pid <= 0xFFFF:
        raise ValueError(f"packet id {pid} is not in 1..65535")


def _check_qos(qos: int) -> None:
    if qos not in (0, 1):
        raise ValueError(f"QoS {qos} is not supported (0 or 1)")


def connect_packet(client_id: str, *, clean_session: bool = True, keepalive: int = 60,
                   will: tuple[str, bytes, int, bool] | None = None,
                   username: str | None = None, password: str | None = None) -> bytes:
    """CONNECT. `will` is (topic, payload, qos, retain)."""
    if not 0 <= keepalive <= 0xFFFF:
        raise ValueError(f"keepalive {keepalive} s is not in 0..65535")
    if password is not None and username is None:
        raise ValueError("MQTT 3.1.1 sends a password only with a user name: give both")
    flags = 0x02 if clean_session else 0
    payload = encode_string(client_id)
    if will is not None:
        topic, data, qos, retain = will
        _check_qos(qos)
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += encode_string(topic) + encode_string(data)
    if username is not None:
        flags |= 0x80
        payload += encode_string(username)
        if password is not None:
            flags |= 0x40
            payload += encode_string(password)
    var = b"\x00\x04MQTT\x04" + bytes((flags,)) + _H.pack(keepalive)
    return b"\x10" + encode_remaining_length(len(var) + len(payload)) + var + payload


def subscribe_packet(pid: int, topics: list[tuple[str, int]]) -> bytes:
    """SUBSCRIBE to (topic filter, requested QoS) pairs."""
    _check_pid(pid)
    if not topics:
        raise ValueError("SUBSCRIBE needs at least one topic filter")
    for _, q in topics:
        _check_qos(q)
    body = _H.pack(pid) + b"".join(encode_string(t) + _ONE_BYTE[q] for t, q in topics)
    return b"\x82" + encode_remaining_length(len(body)) + body


def unsubscribe_packet(pid: int, topics: list[str]) -> bytes:
    _check_pid(pid)
    if not topics:
        raise ValueError("UNSUBSCRIBE needs at least one topic filter")
    body = _H.pack(pid) + b"".join(encode_string(t) for t in topics)
    return b"\xa2" + encode_remaining_length(len(body)) + body


def publish_packet(topic: str | bytes, payload: bytes, qos: int = 0, pid: int = 0,
                   retain: bool = False) -> bytes:
    """PUBLISH QoS 0 (`pid` unused) or QoS 1 (`pid` in 1..65535)."""
    return publish_packet_encoded(encode_string(topic), payload, qos, pid, retain)


def publish_packet_encoded(topic_field: bytes, payload: bytes, qos: int = 0, pid: int = 0,
                           retain: bool = False) -> bytes:
    """`publish_packet` with the topic already a string field (`encode_string(topic)`): for
    callers that publish many messages to one topic, on their hot path."""
    if qos:
        if qos != 1:
            _check_qos(qos)
        if not 0 < pid <= 0xFFFF:
            _check_pid(pid)
        return (_PUBLISH_QOS1[retain] + encode_remaining_length(len(topic_field) + 2 + len(payload))
                + topic_field + _H.pack(pid) + payload)
    return (_PUBLISH_QOS0[retain] + encode_remaining_length(len(topic_field) + len(payload))
            + topic_field + payload)


def puback_packet(pid: int) -> bytes:
    return _PUBACK.pack(0x40, 2, pid)


def puback_packets(pids: list[int]) -> bytes:
    """The PUBACKs of many packet ids (from the decoder: 1..65535), as one bytes to write."""
    return struct.pack(f"!{len(pids)}I", *[0x40020000 | pid for pid in pids])


# -- decoding ---------------------------------------------------------------------------------

class Decoder:
    """Incremental: `feed` any slice of the byte stream, get the packets it completed.

    A partial packet is kept (at most `max_packet` + 5 bytes, or a PUBLISH's topic and packet
    id for an oversized one) and not parsed again until enough bytes arrived to finish it."""

    __slots__ = ("_error", "_have", "_need", "_rest", "_skip", "max_packet")

    def __init__(self, max_packet: int = MAX_PACKET) -> None:
        if not 0 < max_packet <= MAX_REMAINING_LENGTH:
            raise ValueError(f"max_packet {max_packet} is not in 1..{MAX_REMAINING_LENGTH}")
        self.max_packet = max_packet
        self._rest: list[bytes] = []  # the start of an incomplete packet
        self._have = 0                 # bytes in _rest
        self._need = 0                 # bytes _rest must reach before parsing again
        self._skip = 0                 # bytes of an oversized PUBLISH still to drop
        self._error: MqttProtocolError | None = None

    @property
    def pending(self) -> int:
        """Bytes of an incomplete packet held (or still to skip of an oversized one)."""
        return self._have + self._skip

    def feed(self, data: bytes) -> list[Packet]:
        if self._error is not None:
            raise MqttProtocolError(f"the stream is broken since: {self._error}")
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return []
            data = data[self._skip:]
            self._skip = 0
        if self._rest:
            self._rest.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            data = b"".join(self._rest)
            self._rest = []
            self._have = 0
        out: list[Packet] = []
        try:
            self._parse(data, out)
        except MqttProtocolError as exc:
            exc.packets = out
            self._error = exc
            raise
        return out

    def end_of_stream(self) -> None:
        """The connection ended: raise if it ended inside a packet."""
        if self._have or self._skip:
            raise MqttProtocolError(
                f"truncated: the stream ended inside a packet ({self._have} bytes of it received"
                + (f", {self._skip} still to come)" if self._skip else ")"))

    def _keep(self, data: bytes, start: int, need: int) -> None:
        self._rest = [data[start:]]
        self._have = len(data) - start
        self._need = need

    def _parse(self, data: bytes, out: list[Packet]) -> None:
        n = len(data)
        i = 0
        limit = self.max_packet
        append = out.append
        while n - i >= 2:
            # the hot path (a gateway under load: thousands of PUBLISH per read) uses literals,
            # not the module's constants: a global lookup per packet is measurable
            h = data[i]
            if not 0x10 <= h < 0xF0:
                raise MqttProtocolError(f"packet type {h >> 4} (first byte 0x{h:02x}) is reserved: "
                                        "the stream is not MQTT 3.1.1 or lost its framing")
            b = data[i + 1]
            if b < 0x80:
                rl = b
                j = i + 2
            elif n - i > 2 and data[i + 2] < 0x80:  # 2 length bytes: 128..16383
                rl = (b & 0x7F) | (data[i + 2] << 7)
                j = i + 3
            else:  # remaining length: 1-4 bytes, 7 bits each, least significant first
                rl = b & 0x7F
                j = i + 2
                shift = 7
                while True:
                    if j >= n:
                        self._keep(data, i, j - i + 1)
                        return
                    b = data[j]
                    j += 1
                    rl |= (b & 0x7F) << shift
                    if b < 0x80:
                        break
                    if j - i >= 5:
                        raise MqttProtocolError(
                            f"remaining length longer than 4 bytes (0x{h:02x} "
                            f"{data[i + 1:j].hex(' ')}): not MQTT 3.1.1")
                    shift += 7
            end = j + rl
            if rl > limit:
                kind = h >> 4
                if kind != 3:
                    raise PacketTooLarge(f"packet type {kind} of {rl} bytes is over the limit of "
                                         f"{limit} bytes")
                # report the topic and packet id, skip the payload without keeping it
                if n < j + 2:
                    self._keep(data, i, j + 2 - i)
                    return
                k = j + 2 + ((data[j] << 8) | data[j + 1])
                qos = (h >> 1) & 3
                vh = k + 2 if qos else k
                if qos == 3 or vh > end:
                    raise MqttProtocolError(f"malformed PUBLISH (first byte 0x{h:02x}, {rl} bytes)")
                if n < vh:
                    self._keep(data, i, vh - i)
                    return
                append((16, h & 0x0F, (data[k] << 8) | data[k + 1] if qos else 0,
                        data[j + 2:k], b""))
                if end > n:
                    self._skip = end - n
                    return
                i = end
                continue
            if end > n:
                self._keep(data, i, end - i)
                return
            if h >> 4 == 3:  # PUBLISH
                if rl < 2:
                    raise MqttProtocolError(f"PUBLISH of {rl} bytes has no room for its topic")
                k = j + 2 + ((data[j] << 8) | data[j + 1])
                if h & 0x06:
                    if h & 0x06 == 0x06 or k + 2 > end:
                        raise MqttProtocolError(
                            f"malformed PUBLISH (first byte 0x{h:02x}): QoS 3, or its topic and "
                            f"packet id do not fit in {rl} bytes")
                    append((3, h & 0x0F, (data[k] << 8) | data[k + 1], data[j + 2:k],
                            data[k + 2:end]))
                else:
                    if k > end:
                        raise MqttProtocolError(
                            f"malformed PUBLISH: its topic does not fit in {rl} bytes")
                    append((3, h & 0x0F, 0, data[j + 2:k], data[k:end]))
                i = end
                continue
            kind = h >> 4
            if kind in _WITH_PACKET_ID:
                if rl < 2:
                    raise MqttProtocolError(f"packet type {kind} of {rl} bytes has no packet id")
                append((kind, h & 0x0F, (data[j] << 8) | data[j + 1], b"", data[j + 2:end]))
            else:
                if kind == CONNACK and rl != 2:
                    raise MqttProtocolError(f"CONNACK of {rl} bytes (it has 2)")
                append((kind, h & 0x0F, 0, b"", data[j:end]))
            i = end
        if i < n:
            self._keep(data, i, n - i + 1)
