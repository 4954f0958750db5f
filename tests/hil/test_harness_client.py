"""The harness's HTTP client is one pooled client per gateway, made again only when the gateway's
url changes or the client was closed (a new client on every access cost 20-100 ms of connection
setup per call and closed a client another thread might be using)."""
from __future__ import annotations

from hil.harness import GatewayProcess


def test_the_client_is_reused_until_the_url_changes_or_it_is_closed(tmp_path):
    gw = GatewayProcess(tmp_path, broker_port=1)
    first = gw.http
    assert gw.http is first and not first.is_closed
    gw.url = "http://127.0.0.1:1"           # a gateway moved to another port
    moved = gw.http
    assert moved is not first and first.is_closed
    assert str(moved.base_url).rstrip("/") == gw.url
    gw.close_http()
    assert moved.is_closed and gw.http is not moved
    gw.close_http()
