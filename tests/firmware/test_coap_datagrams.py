"""The firmware's CoAP transport reads one datagram at a time (issue 16, bad-input at 96 KB).

`socket.readinto` on MicroPython is a stream read: it loops until the buffer is full or the
socket has nothing more, so two datagrams waiting in the socket came back glued into one
buffer, which then failed to decode (or decoded as the first message with the second as its
payload). The response inside was lost and the request waited for its retransmission
(2-3 s): replies queued up behind it, commands piled up in the heap and the kit's `bad-input`
and `heartbeat` clauses failed at 96 KB. Here the device is busy (a blocking sleep after each
send, as a board is in a long flash write) while the gateway sends two datagrams: a stale
duplicate ACK of the previous request, then the answer to this one."""
from __future__ import annotations

import struct

from tests.support.coap_device import ScriptedPeer, client


def test_two_datagrams_waiting_in_the_socket_are_two_messages():
    last: list[int] = []

    def answer(data: bytes, addr) -> None:
        if data[1] != 2:
            return  # only POSTs (the long poll `subscribe` starts stays outstanding)
        tkl = data[0] & 0x0F
        mid = struct.unpack("!H", data[2:4])[0]
        token = data[4:4 + tkl]
        stale = struct.pack("!BBH", 0x60, 0, last[-1]) if last else struct.pack("!BBH", 0x70, 0, mid ^ 0x8000)
        last.append(mid)
        ack = struct.pack("!BBH", 0x60 | tkl, 68, mid) + token + b"\xff" + b'{"n":%d}' % len(last)
        peer.sock.sendto(stale, addr)  # both sent before the device reads its socket
        peer.sock.sendto(ack, addr)

    peer = ScriptedPeer(answer)
    try:
        out = client(peer.port, r'''
send = c._send
def busy_send(msg):
    send(msg)
    time.sleep_ms(150)  # blocking: the answers arrive while the device is busy
c._send = busy_send
await c.subscribe("pe/1/fw-1/ctl")
ok = 0
for i in range(3):
    try:
        await c.publish("pe/1/fw-1/evt", b'{"i":%d}' % i)
        ok += 1
    except OSError as e:
        print("FAILED", i, e)
print("OK", ok, "RETX", c.stats["retx"], "ERRORS", c.stats["errors"], "RX", c.stats["rx"])
print("DELIVERED", [p for t, p in events if isinstance(t, str) and t.endswith("/ctl")])
''', ack=300, timeout=90)
    finally:
        peer.close()
    assert "OK 3 RETX 0 ERRORS 0 RX 3" in out, out
    assert "DELIVERED [b'{\"n\":1}', b'{\"n\":2}', b'{\"n\":3}']" in out, out
    assert len(peer.requests(b"evt")) == 3, "each event went out once (no retransmission)"
