# MQTT over TLS with the store CA (tools/provision.py writes mqtt.tls). A subclass, so devices
# without TLS do not load any of it (heap): the socket is wrapped when the connection first
# writes (CONNECT) or reads; the handshake runs on the non-blocking socket within the client's
# response timeout.
#
# Heap (rp2: mbedTLS allocates from the MicroPython heap): one SSL context (the parsed CA, the
# DRBG) for the device's life, built at boot (context()); a lost connection's SSL socket
# (16 KB in + 4 KB out record buffers) is closed and dropped before the next one is made, and
# the heap is collected first, so a reconnect never holds two of either (docs/benchmarks.md).
import asyncio
import gc
import tls  # the C module (the `ssl` wrapper around it costs 1 KB more)
from binascii import a2b_base64

from edge.mqtt import MQTTClient


def _der(pem):
    """The certificate's DER (mbedtls wants DER here), decoded line by line into one buffer:
    no list of lines, no joined copy of the base64."""
    out = bytearray()
    i = 0
    n = len(pem)
    while i < n:
        j = pem.find("\n", i)
        if j < 0:
            j = n
        if j > i and pem[i] != "-":  # not the BEGIN/END armour
            out.extend(a2b_base64(pem[i:j]))
        i = j + 1
    return out


_ctx = None


def context(cfg):
    """The device's one SSL context (mqtt.tls of the config: the store CA). boot.py makes it
    before anything else: the object is ~3 KB in one piece (mbedTLS's config, DRBG and entropy
    structs live inside it), which a heap fragmented by the app may no longer have."""
    global _ctx
    if _ctx is None or _ctx[0] is not cfg:  # (another config: its own CA, its own context)
        ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
        # the ports' tls.SSLContext has verify_mode (an attribute of the C type, set here on the
        # unix port in tests); the published 1.29 stubs leave it out (docs/boards.md)
        ctx.verify_mode = tls.CERT_REQUIRED  # type: ignore[attr-defined]
        ctx.load_verify_locations(bytes(_der(cfg["ca"])))
        cfg["ca"] = None  # the context holds the CA now: the PEM's RAM goes
        _ctx = (cfg, ctx)
    return _ctx[1]


class TLSClient(MQTTClient):
    def __init__(self, *args, tls=None, **kw):
        super().__init__(*args, **kw)
        self.tls = tls
        self._tls_sock = None
        self._ctx = context(tls)

    def _secure(self):
        s = self._sock
        if s is not None and s is not self._tls_sock:
            self._tls_sock = None
            gc.collect()  # the lost connection's garbage goes before 20 KB of record buffers
            self._tls_sock = self._sock = self._ctx.wrap_socket(
                s, server_hostname=self.tls.get("server_hostname") or self.host,
                do_handshake_on_connect=False)
        return self._sock

    def _lost(self):
        super()._lost()  # closes the SSL socket (mbedTLS frees its buffers)
        self._tls_sock = None

    async def _write(self, buf):
        self._secure()
        await super()._write(buf)

    async def _read(self, r, gen):
        await super()._read(asyncio.StreamReader(self._secure()), gen)
