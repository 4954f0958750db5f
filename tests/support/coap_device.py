"""A scripted CoAP peer (what the gateway would answer, byte by byte) and the firmware's CoAP
transport as a client in real MicroPython: shared by the CoAP firmware tests."""
from __future__ import annotations

import socket
import threading
import time

from tests.support.micropython import run_micropython


class ScriptedPeer:
    """A UDP 'gateway' that answers CoAP pings with RST and hands every other datagram to
    `on_request(data, addr)`; records (time, datagram) of everything received."""

    def __init__(self, on_request=None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.on_request = on_request
        self.answer_pings: int | None = None  # how many more pings to answer (None: all)
        self.got: list[tuple[float, bytes]] = []
        self._stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            self.got.append((time.monotonic(), data))
            if data[1] == 0 and (data[0] >> 4) & 3 == 0:  # ping: empty CON → RST
                if self.answer_pings is None or self.answer_pings > 0:
                    self.sock.sendto(bytes([0x70, 0]) + data[2:4], addr)
                    if self.answer_pings:
                        self.answer_pings -= 1
            elif self.on_request:
                try:
                    self.on_request(data, addr)
                except OSError:  # closed under us
                    return

    def requests(self, path_part: bytes) -> list[tuple[float, bytes]]:
        return [(t, d) for t, d in self.got if d[1] != 0 and path_part in d]

    def close(self) -> None:
        self._stop = True
        self.sock.close()


CLIENT = r'''
import asyncio, errno, time
from edge.coap import CoapTransport
events = []
async def main():
    async def on_connect(c):
        events.append("up")
    c = CoapTransport("fw-1", "127.0.0.1", %(port)d, keepalive=60, ack_timeout=%(ack)d,
                      on_connect=on_connect, on_down=lambda: events.append("down"),
                      on_message=lambda t, p: events.append((t, p)))
    asyncio.create_task(c.run())
    for _ in range(100):
        if c.is_connected():
            break
        await asyncio.sleep_ms(20)
%(body)s
asyncio.run(main())
'''


def client(port: int, body: str, ack: int = 200, timeout: float = 30):
    indented = "\n".join("    " + line for line in body.strip("\n").splitlines())
    r = run_micropython(CLIENT % {"port": port, "ack": ack, "body": indented}, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


