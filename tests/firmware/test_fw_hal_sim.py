"""The sim HAL's link to the virtual rig (firmware/edge/hal_sim.py), on the real MicroPython."""
from __future__ import annotations

import json

from tests.support.micropython import run_micropython

# A stand-in `socket` module put in sys.modules before edge.hal_sim imports it: it records
# setsockopt calls and answers the handshake, so the test sees what the HAL asks of its socket.
FAKE_SOCKET = """
import sys, json
calls = []
class _S:
    def setsockopt(self, *a):
        calls.append(list(a))
    def connect(self, ai):
        calls.append(["connect"])
    def write(self, b):
        return len(b)
    def readline(self):
        return b"K\\n"
class _M:
    pass
m = _M()
m.socket = _S
m.getaddrinfo = lambda host, port: [(0, 0, 0, "", (host, port))]
sys.modules["socket"] = m
from edge.hal_sim import SimHal
SimHal({"device_id": "dev-1", "sim": {"host": "127.0.0.1", "port": 7000}})
print(json.dumps(calls))
"""


def test_the_rig_link_turns_nagle_off_before_it_connects():
    """The HAL writes output pins and UART bytes without waiting for an answer, then asks for an
    input: with Nagle on, that ask waited for the rig's delayed ACK, ~40 ms, after every
    display line or pin write (the tube stations' events reached the gateway 45 ms after they
    happened, the line's eyes 3 ms: docs/tube.md). TCP_NODELAY = IPPROTO_TCP 6, option 1."""
    r = run_micropython(FAKE_SOCKET)
    assert r.returncode == 0, r.stderr
    calls = json.loads(r.stdout.strip().splitlines()[-1])
    assert [6, 1, 1] in calls, calls
    assert calls.index([6, 1, 1]) < calls.index(["connect"]), calls
