"""An independent CoAP peer for the gateway's CoAP resources: Debian's `coap-client`
(libcoap3-bin; CLIENT is None without it: `pytest.mark.skipif(CLIENT is None, ...)`), and the
sample pad's envelopes as text payloads."""
from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

from tests.support.coap_harness import CoapGateway, coap_client

CLIENT = coap_client()
PDU = re.compile(r"v:1 t:(CON|NON|ACK|RST) c:(\d\.\d\d) i:([0-9a-f]+)")
DIAG = re.compile(r"c:[45]\.\d\d i:[0-9a-f]+ .*:: '(.*)'$", re.MULTILINE)


def coap(g: CoapGateway, method: str, path: str, payload: str | bytes | None = None,
         timeout: float = 15, extra: tuple[str, ...] = (),
         keep_body: bool = False) -> tuple[str, bytes]:
    """Run coap-client; returns (response code like '2.04', response payload: only for 2.xx
    unless keep_body)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "payload"
        args = [CLIENT, "-m", method, "-v", "7", "-B", str(int(timeout)), "-o", str(out),
                *extra]
        p = b""
        if payload is not None:
            p = payload.encode() if isinstance(payload, str) else payload
            args += ["-t", "50", "-f", "-"]
        args.append(f"coap://127.0.0.1:{g.coap_port}{path}")
        r = subprocess.run(args, input=p, capture_output=True, timeout=timeout + 5, check=False)
        log = r.stderr.decode(errors="replace") + r.stdout.decode(errors="replace")
        # the code of the last response PDU libcoap received (not an empty ACK)
        codes = [m.group(2) for m in PDU.finditer(log) if m.group(2) != "0.00"]
        assert codes, f"no response from the gateway:\n{log[-2000:]}"
        body = out.read_bytes() if out.exists() else b""
    if keep_body and not codes[-1].startswith("2."):  # libcoap logs an error's diagnostic
        body = b"".join(m.group(1).encode() for m in DIAG.finditer(log))[-500:]
    return codes[-1], body if keep_body or codes[-1].startswith("2.") else b""


def envelope(dev: str, type_: str, body: dict, **extra) -> str:
    return json.dumps({"v": 1, "dev": dev, "type": type_, "t": None, "body": body, **extra})


def birth(dev: str, epoch: str = "e0c0a001", session: int = 1, first: int = 1,
          nxt: int = 1) -> str:
    return envelope(dev, "birth", {"kind": "sample-pad", "fw": "coap-client", "caps": ["blink"],
                                   "cfg": "00000000", "session": session, "boot": 1,
                                   "reset": None, "epoch": epoch, "first": first, "next": nxt})
