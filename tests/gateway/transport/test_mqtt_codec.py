"""gateway.transport.mqtt_codec: MQTT 3.1.1 packets without I/O, and the gateway client's use
of it (MqttLite on a fake transport: no socket)."""
from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.transport import mqtt_codec as codec
from gateway.transport.mqtt_lite import MqttLite, MqttLiteError

# MQTT 3.1.1 table 2.4 (section 2.2.3): the boundaries of 1, 2, 3 and 4 length bytes
SPEC_LENGTHS = [
    (0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16383, b"\xff\x7f"),
    (16384, b"\x80\x80\x01"), (2097151, b"\xff\xff\x7f"), (2097152, b"\x80\x80\x80\x01"),
    (268435455, b"\xff\xff\xff\x7f"),
]


def feed_bytewise(dec: codec.Decoder, data: bytes) -> list[codec.Packet]:
    out: list[codec.Packet] = []
    for i in range(len(data)):
        out += dec.feed(data[i:i + 1])
    return out


# -- encoding ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("n", "wire"), SPEC_LENGTHS)
def test_remaining_length_matches_the_spec_table(n, wire):
    assert codec.encode_remaining_length(n) == wire


def test_remaining_length_over_four_bytes_is_refused():
    with pytest.raises(ValueError, match="over MQTT's limit of 268435455"):
        codec.encode_remaining_length(268435456)


def test_connect_bytes_as_the_spec_lays_them_out():
    will = ("pe/1/d1/status", b"off", 1, True)
    got = codec.connect_packet("d1", clean_session=False, keepalive=30, will=will,
                               username="u", password="pw")
    var = b"\x00\x04MQTT\x04" + bytes((0x80 | 0x40 | 0x20 | 0x08 | 0x04,)) + b"\x00\x1e"
    payload = (b"\x00\x02d1" + b"\x00\x0epe/1/d1/status" + b"\x00\x03off" + b"\x00\x01u"
               + b"\x00\x02pw")
    assert got == b"\x10" + bytes((len(var) + len(payload),)) + var + payload
    assert codec.connect_packet("x")[8:12] == b"\x04\x02\x00\x3c"  # clean session, no will/user


def test_encoders_refuse_what_mqtt_cannot_carry():
    with pytest.raises(ValueError, match="QoS 2 is not supported"):
        codec.publish_packet("t", b"", qos=2, pid=1)
    with pytest.raises(ValueError, match="packet id 0 is not in 1..65535"):
        codec.publish_packet("t", b"", qos=1, pid=0)
    with pytest.raises(ValueError, match="at most 65535 bytes"):
        codec.encode_string("x" * 65536)
    with pytest.raises(ValueError, match="give both"):
        codec.connect_packet("c", password="pw")


# -- round trips --------------------------------------------------------------------------------

def test_round_trip_of_every_packet_the_clients_send():
    stream = [
        (codec.publish_packet("pe/1/d1/evt", b'{"seq":1}', qos=1, pid=7, retain=True),
         (codec.PUBLISH, 0x03, 7, b"pe/1/d1/evt", b'{"seq":1}')),
        (codec.publish_packet("a/b", b"", qos=0),
         (codec.PUBLISH, 0x00, 0, b"a/b", b"")),
        (codec.publish_packet_encoded(codec.encode_string("t"), b"p", 1, 65535),
         (codec.PUBLISH, 0x02, 65535, b"t", b"p")),
        (codec.puback_packet(513), (codec.PUBACK, 0, 513, b"", b"")),
        (codec.puback_packets([1, 65535]), (codec.PUBACK, 0, 1, b"", b"")),
        (b"", (codec.PUBACK, 0, 65535, b"", b"")),  # the second of the two above
        (codec.subscribe_packet(3, [("pe/1/+/evt", 1), ("x", 0)]),
         (codec.SUBSCRIBE, 0x02, 3, b"", b"\x00\x0ape/1/+/evt\x01\x00\x01x\x00")),
        (codec.unsubscribe_packet(4, ["pe/1/+/reply"]),
         (codec.UNSUBSCRIBE, 0x02, 4, b"", b"\x00\x0cpe/1/+/reply")),
        (codec.PINGREQ, (codec.PINGREQ_TYPE, 0, 0, b"", b"")),
        (codec.DISCONNECT, (codec.DISCONNECT_TYPE, 0, 0, b"", b"")),
        (b"\x20\x02\x01\x05", (codec.CONNACK, 0, 0, b"", b"\x01\x05")),   # broker -> client
        (b"\x90\x04\x00\x09\x01\x80", (codec.SUBACK, 0, 9, b"", b"\x01\x80")),
        (b"\xb0\x02\x00\x0a", (codec.UNSUBACK, 0, 10, b"", b"")),
        (b"\xd0\x00", (codec.PINGRESP, 0, 0, b"", b"")),
    ]
    data = b"".join(p for p, _ in stream)
    want = [w for _, w in stream]
    assert codec.Decoder().feed(data) == want
    dec = codec.Decoder()
    assert feed_bytewise(dec, data) == want
    assert dec.pending == 0
    dec.end_of_stream()  # ended between packets: fine
    connect = codec.Decoder().feed(codec.connect_packet("c1", keepalive=5))
    assert connect == [(codec.CONNECT, 0, 0, b"", b"\x00\x04MQTT\x04\x02\x00\x05\x00\x02c1")]


@settings(max_examples=60, deadline=None)
@given(payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=8),
       cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=12))
def test_any_split_of_the_stream_gives_the_same_packets(payloads, cuts):
    data = b"".join(codec.publish_packet(f"t/{i}", p, qos=i % 2, pid=i + 1)
                    for i, p in enumerate(payloads))
    bounds = sorted({c for c in cuts if c < len(data)} | {0, len(data)})
    dec = codec.Decoder()
    got: list[codec.Packet] = []
    for a, b in itertools.pairwise(bounds):
        got += dec.feed(data[a:b])
    assert [(p[2], p[3], p[4]) for p in got] == [
        (i + 1 if i % 2 else 0, f"t/{i}".encode(), p) for i, p in enumerate(payloads)]


@pytest.mark.parametrize("rl", [127, 128, 16383, 16384, 2097151, 2097152])
def test_remaining_length_boundaries_decode(rl):
    topic = b"t"
    payload = bytes(range(256)) * (rl // 256) + bytes(rl % 256)
    payload = payload[:rl - 2 - len(topic)]
    packet = codec.publish_packet(topic, payload)
    assert packet[1:1 + len(codec.encode_remaining_length(rl))] == codec.encode_remaining_length(rl)
    tail = codec.puback_packet(1)
    dec = codec.Decoder(max_packet=rl)  # exactly at the limit: accepted
    assert dec.feed(packet + tail) == [(codec.PUBLISH, 0, 0, topic, payload),
                                       (codec.PUBACK, 0, 1, b"", b"")]
    # in pieces (the header split too): the same, and nothing parsed twice in vain
    dec = codec.Decoder(max_packet=rl)
    got = dec.feed(packet[:2]) + dec.feed(packet[2:3]) + dec.feed(packet[3:70000])
    got += dec.feed(packet[70000:] + tail)
    assert got == [(codec.PUBLISH, 0, 0, topic, payload), (codec.PUBACK, 0, 1, b"", b"")]


# -- malformed input --------------------------------------------------------------------------

def test_remaining_length_of_five_bytes_is_refused_as_soon_as_it_is_seen():
    dec = codec.Decoder()
    bad = b"\x30\xff\xff\xff\xff\x01"
    for i in range(4):
        assert dec.feed(bad[i:i + 1]) == []
    # the 4th length byte still says "more follows": refused before a 5th arrives
    with pytest.raises(codec.MqttProtocolError,
                       match=r"remaining length longer than 4 bytes \(0x30 ff ff ff ff\)"):
        dec.feed(bad[4:5])
    with pytest.raises(codec.MqttProtocolError, match="the stream is broken since"):
        dec.feed(codec.PINGREQ)  # nothing after a framing error can be trusted


@pytest.mark.parametrize(("data", "match"), [
    (b"\x00\x00", "packet type 0 .* is reserved"),
    (b"\xf0\x00", "packet type 15 .* is reserved"),
    (b"\x30\x01\x00", "no room for its topic"),
    (b"\x30\x04\x00\x09ab", "topic does not fit in 4 bytes"),
    (b"\x32\x04\x00\x01a\x00", "topic and packet id do not fit"),
    (b"\x36\x05\x00\x01a\x00\x01", "QoS 3"),
    (b"\x40\x01\x00", "packet type 4 of 1 bytes has no packet id"),
    (b"\x20\x03\x00\x00\x00", "CONNACK of 3 bytes"),
])
def test_malformed_packets_are_refused_with_what_is_wrong(data, match):
    with pytest.raises(codec.MqttProtocolError, match=match):
        codec.Decoder().feed(data)


def test_packets_before_the_bad_bytes_are_kept_on_the_error():
    good = codec.publish_packet("t", b"kept", qos=1, pid=2)
    with pytest.raises(codec.MqttProtocolError) as err:
        codec.Decoder().feed(good + b"\x00\x00")
    assert err.value.packets == [(codec.PUBLISH, 0x02, 2, b"t", b"kept")]


def test_truncated_stream_is_reported_at_its_end():
    dec = codec.Decoder()
    packet = codec.publish_packet("t", b"x" * 50)
    assert dec.feed(packet[:-1]) == []
    assert dec.pending == len(packet) - 1
    with pytest.raises(codec.MqttProtocolError, match=r"truncated: .* \(54 bytes of it received\)"):
        dec.end_of_stream()


# -- the size limit -----------------------------------------------------------------------------

def test_packet_over_the_limit_is_refused_before_its_body_arrives():
    dec = codec.Decoder(max_packet=100)
    with pytest.raises(codec.PacketTooLarge, match="packet type 9 of 101 bytes is over the limit "
                                                   "of 100 bytes"):
        dec.feed(b"\x90\x65\x00\x01")  # a SUBACK header announcing 101 bytes


def test_publish_over_the_limit_is_reported_and_skipped_without_buffering():
    big = codec.publish_packet("pe/1/d1/evt", b"z" * 5000, qos=1, pid=42, retain=True)
    after = codec.publish_packet("pe/1/d1/evt", b"next", qos=1, pid=43)
    for chunk in (len(big) + len(after), 1, 7, 1000):
        dec = codec.Decoder(max_packet=1000)
        data = big + after
        got: list[codec.Packet] = []
        held = 0
        for i in range(0, len(data), chunk):
            got += dec.feed(data[i:i + chunk])
            held = max(held, dec._have)
        assert got == [(codec.OVERSIZED, 0x03, 42, b"pe/1/d1/evt", b""),
                       (codec.PUBLISH, 0x02, 43, b"pe/1/d1/evt", b"next")], chunk
        assert held <= 1000 + 5 + chunk  # never the whole 5 KB packet
        assert dec.pending == 0


# -- the gateway's client on the codec (fake transport, no socket) ------------------------------

class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sent = bytearray()
        self.aborted = False

    def write(self, data) -> None:  # type: ignore[override]
        self.sent += data

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def lite_on_fake() -> tuple[MqttLite, FakeTransport]:
    client = MqttLite("gw", keepalive=0)
    client.closed = asyncio.get_running_loop().create_future()
    t = FakeTransport()
    client.connection_made(t)
    return client, t


def test_client_queues_and_acks_inbound_publishes_fed_byte_by_byte():
    async def main():
        client, t = lite_on_fake()
        data = (codec.publish_packet("pe/1/d1/evt", b"one", qos=1, pid=5)
                + codec.publish_packet("pe/1/d2/evt", b"two", qos=0))
        for i in range(len(data)):
            client.data_received(data[i:i + 1])
        assert await client.next_batch() == [("pe/1/d1/evt", b"one"), ("pe/1/d2/evt", b"two")]
        assert bytes(t.sent) == codec.puback_packet(5)
    asyncio.run(main())


def test_client_acks_and_drops_an_oversized_publish_and_keeps_reading(caplog):
    async def main():
        client, t = lite_on_fake()
        big = codec.publish_packet("pe/1/d1/evt", b"z" * (codec.MAX_PACKET + 1), qos=1, pid=9)
        small = codec.publish_packet("pe/1/d1/evt", b"ok", qos=1, pid=10)
        data = big + small
        for i in range(0, len(data), 65536):
            client.data_received(data[i:i + 65536])
        assert await client.next_batch() == [("pe/1/d1/evt", b"ok")]
        assert bytes(t.sent) == codec.puback_packet(9) + codec.puback_packet(10)
        assert client.dropped_oversized == 1 and not t.aborted
    asyncio.run(main())
    assert "mqtt message dropped: over 262144 bytes topic='pe/1/d1/evt'" in caplog.text


def test_client_closes_the_connection_on_bytes_that_are_not_mqtt():
    async def main():
        client, t = lite_on_fake()
        client.data_received(codec.publish_packet("t", b"before", qos=0) + b"\x30\xff\xff\xff\xff\x01")
        assert t.aborted
        assert list(client.messages) == [("t", b"before")]  # what came before is delivered
        client.messages.clear()
        client.connection_lost(None)
        with pytest.raises(MqttLiteError, match="remaining length longer than 4 bytes"):
            await client.next_batch()
    asyncio.run(main())


def test_publish_many_writes_in_order_and_each_future_settles_at_its_puback():
    """Issue 18: a batch's acks without a task each. Every publish is written at once, in
    order; its future is done at its own PUBACK, which frees its packet id."""
    async def main():
        client, t = lite_on_fake()
        futs = client.publish_many([("pe/1/d1/ctl", b"a"), ("pe/1/d2/ctl", b"b")], timeout=60)
        await asyncio.sleep(0)  # the write goes out at the end of the loop pass
        dec = codec.Decoder(codec.MAX_PACKET)
        sent = dec.feed(bytes(t.sent))
        assert [(k, p, topic, body) for k, _, p, topic, body in sent] == [
            (codec.PUBLISH, 1, b"pe/1/d1/ctl", b"a"), (codec.PUBLISH, 2, b"pe/1/d2/ctl", b"b")]
        assert [f.done() for f in futs] == [False, False]
        client.data_received(codec.puback_packet(2))
        assert [f.done() for f in futs] == [False, True] and futs[1].result() is None
        client.data_received(codec.puback_packet(1))
        assert futs[0].done() and futs[0].result() is None
        assert client._inflight == {}  # both packet ids free again
    asyncio.run(main())


def test_publish_many_fails_what_has_no_puback_in_time_and_frees_its_packet_id():
    async def main():
        client, _ = lite_on_fake()
        futs = client.publish_many([("pe/1/d1/ctl", b"a"), ("pe/1/d2/ctl", b"b")], timeout=0.05)
        client.data_received(codec.puback_packet(1))
        await asyncio.wait(futs, timeout=5)
        assert futs[0].result() is None
        with pytest.raises(MqttLiteError, match="no PUBACK within 0.05 s"):
            futs[1].result()
        assert client._inflight == {}
        client.data_received(codec.puback_packet(2))  # a late PUBACK: ignored
    asyncio.run(main())


def test_publish_many_fails_on_connection_loss_and_refuses_when_not_connected():
    async def main():
        client, t = lite_on_fake()
        futs = client.publish_many([("pe/1/d1/ctl", b"a")], timeout=60)
        client.connection_lost(None)
        with pytest.raises(MqttLiteError, match="connection lost"):
            futs[0].result()
        t.aborted = True
        with pytest.raises(MqttLiteError, match="not connected"):
            client.publish_many([("pe/1/d1/ctl", b"a")])
    asyncio.run(main())
