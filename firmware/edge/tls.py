# MQTT over TLS with the store CA (tools/provision.py writes mqtt.tls). A subclass, so devices
# without TLS do not load any of it (heap): the socket is wrapped when the connection first
# writes (CONNECT) or reads; the handshake runs on the non-blocking socket within the client's
# response timeout.
import asyncio

from edge.mqtt import MQTTClient


class TLSClient(MQTTClient):
    def __init__(self, *args, tls=None, **kw):
        super().__init__(*args, **kw)
        self.tls = tls
        self._tls_sock = None

    def _secure(self):
        s = self._sock
        if s is not None and s is not self._tls_sock:
            import ssl
            from binascii import a2b_base64
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            # the stubs' ssl re-exports tls.SSLContext, which lacks verify_mode; the ports' ssl.SSLContext
            # (micropython-lib ssl.py) has it as a property over the tls context's
            ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]
            # MicroPython's mbedtls wants DER here: strip the PEM armour
            pem = self.tls["ca"]
            ctx.load_verify_locations(cadata=a2b_base64(
                "".join(ln for ln in pem.split("\n") if ln and not ln.startswith("-----"))))
            self._tls_sock = self._sock = ctx.wrap_socket(
                s, server_hostname=self.tls.get("server_hostname") or self.host,
                do_handshake_on_connect=False)
        return self._sock

    async def _write(self, buf):
        self._secure()
        await super()._write(buf)

    async def _read(self, r, gen):
        await super()._read(asyncio.StreamReader(self._secure()), gen)
