# MQTT over TLS with the store CA (tools/provision.py writes mqtt.tls). A subclass, so devices
# without TLS do not load any of it (heap): the socket is wrapped when the connection first
# writes (CONNECT) or reads; the handshake runs on the non-blocking socket within the client's
# response timeout.
#
# Heap (rp2: mbedTLS allocates from the MicroPython heap): one SSL context (the parsed CA, the
# DRBG) for the client's life, built at the first connection; a lost connection's SSL socket
# (16 KB in + 4 KB out record buffers) is closed and dropped before the next one is made, and
# the heap is collected first, so a reconnect never holds two of either (docs/benchmarks.md).
import asyncio
import gc

from edge.mqtt import MQTTClient


class TLSClient(MQTTClient):
    def __init__(self, *args, tls=None, **kw):
        super().__init__(*args, **kw)
        self.tls = tls
        self._tls_sock = None
        self._ctx = None

    def _context(self):
        if self._ctx is None:
            import ssl
            from binascii import a2b_base64
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.verify_mode = ssl.CERT_REQUIRED
            # MicroPython's mbedtls wants DER here: strip the PEM armour
            pem = self.tls["ca"]
            ctx.load_verify_locations(cadata=a2b_base64(
                "".join(ln for ln in pem.split("\n") if ln and not ln.startswith("-----"))))
            self._ctx = ctx
        return self._ctx

    def _secure(self):
        s = self._sock
        if s is not None and s is not self._tls_sock:
            self._tls_sock = None
            gc.collect()  # the lost connection's garbage goes before 20 KB of record buffers
            self._tls_sock = self._sock = self._context().wrap_socket(
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
