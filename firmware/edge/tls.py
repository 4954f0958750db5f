# TLS for the MQTT client (tools/provision.py writes mqtt.tls): kept out of edge.mqtt so
# devices without TLS do not load it.
def wrap(s, tls, host):
    # Server-authenticated TLS with the store CA (tools/provision.py). The handshake runs on
    # the non-blocking socket during the first writes/reads (CONNECT, CONNACK), bounded by
    # the same response timeout.
    import ssl
    from binascii import a2b_base64
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    # MicroPython's mbedtls wants DER here: strip the PEM armour
    b64 = "".join(ln for ln in tls["ca"].split("\n") if ln and not ln.startswith("-----"))
    ctx.load_verify_locations(cadata=a2b_base64(b64))
    return ctx.wrap_socket(s, server_hostname=tls.get("server_hostname") or host,
                           do_handshake_on_connect=False)
