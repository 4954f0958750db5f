"""Open live streams are capped (gateway/http/stream.py, gateway/http/api.py): per token (default 16) and
in total, on a real gateway process over real HTTP. The N+1th `GET /stream` of one token is
refused 429 (`{"detail": ...}`, `Retry-After`) while another token still gets one; closing a
stream frees its slot. No timings are asserted: `wait_for` only bounds a wait for the server
to notice a closed connection. (Imports of the new names are local to the unit tests, so each
test fails on its own merits against a gateway without the caps.)"""
from __future__ import annotations

import asyncio
import os

import httpx
import pytest

from hil.harness import GatewayProcess, wait_for
from tests.support.auth import bearer, token

PER_TOKEN = 16  # the documented default (docs/security.md, "Rate limits")


def admin():
    return os.environ["PHYGITAL_ADMIN_TOKEN"]  # set by hil.harness for the rig's gateways


def metric(gw, name):
    """Value of one sample line of /metrics, e.g. `pe_stream_subscribers`."""
    text = httpx.get(gw.url + "/metrics", headers=bearer(admin())).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


class Streams:
    """Open `GET /stream` responses held open by one client (closed at the end)."""

    def __init__(self, gw):
        self.url = gw.url + "/stream"
        self.client = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=None))
        self.open: list[httpx.Response] = []

    def get(self, tok):
        r = self.client.send(self.client.build_request("GET", self.url, headers=bearer(tok)),
                             stream=True)
        if r.status_code == 200:
            self.open.append(r)
        else:
            r.read()
            r.close()
        return r

    def close_one(self):
        self.open.pop().close()

    def close(self):
        for r in self.open:
            r.close()
        self.client.close()


def test_per_token_cap_429_other_token_still_served_and_close_frees_a_slot(gw):
    kiosk, mirror = token(gw, "kiosk-streams", "kiosk"), token(gw, "mirror-streams", "mirror")
    streams = Streams(gw)
    try:
        for i in range(PER_TOKEN):
            r = streams.get(kiosk)
            assert r.status_code == 200, (i, r.status_code)
            assert r.headers["content-type"].startswith("text/event-stream")
        r = streams.get(kiosk)  # the 17th of the same token
        assert r.status_code == 429, r.status_code
        detail = r.json()["detail"]
        assert f"at most {PER_TOKEN} open" in detail and "kiosk-streams" in detail, detail
        assert "Close one" in detail and "streams_per_token" in detail, detail
        assert int(r.headers["retry-after"]) >= 1
        # another token is not affected by the kiosk's streams
        assert streams.get(mirror).status_code == 200
        assert metric(gw, "pe_stream_subscribers") == PER_TOKEN + 1
        assert metric(gw, 'pe_stream_refused_total{limit="per_token"}') == 1

        # the kiosk closes one of its streams: the server notices and the slot is free again
        streams.open.pop(0).close()  # the first kiosk stream
        wait_for(lambda: metric(gw, "pe_stream_subscribers") == PER_TOKEN, 20,
                 what="closed stream unsubscribed")
        assert streams.get(kiosk).status_code == 200
        assert streams.get(kiosk).status_code == 429  # and the cap holds again
    finally:
        streams.close()


def test_total_cap_and_configuration(tmp_path, broker):
    g = GatewayProcess(tmp_path / "gw", broker.port)
    g.env["PHYGITAL_RATE_LIMITS"] = "per_token=1e6/1e6,streams_per_token=2,streams_total=3"
    g.start()
    streams = Streams(g)
    try:
        a, b = token(g, "kiosk-a", "kiosk"), token(g, "kiosk-b", "kiosk")
        assert [streams.get(a).status_code for _ in range(3)] == [200, 200, 429]
        assert streams.get(b).status_code == 200   # the third stream of the gateway
        r = streams.get(admin())                    # the fourth: over the total
        assert r.status_code == 429
        assert "on this gateway: at most 3 open" in r.json()["detail"]
        assert int(r.headers["retry-after"]) >= 1
        streams.close_one()                          # b's stream
        wait_for(lambda: metric(g, "pe_stream_subscribers") == 2, 20,
                 what="closed stream unsubscribed")
        assert streams.get(admin()).status_code == 200
    finally:
        streams.close()
        g.stop()


def test_limits_from_env(monkeypatch):
    from gateway.http.auth import Limits

    monkeypatch.setenv("PHYGITAL_RATE_LIMITS", "per_token=5/10,streams_per_token=4")
    lim = Limits.from_env()
    assert lim.per_token == (5.0, 10.0) and lim.streams_per_token == 4
    assert lim.streams_total == Limits().streams_total == 256
    assert Limits().streams_per_token == PER_TOKEN
    for bad in ("streams_total=0", "streams_per_token=2/5", "streams_total=many"):
        monkeypatch.setenv("PHYGITAL_RATE_LIMITS", bad)
        with pytest.raises(ValueError, match="whole number"):
            Limits.from_env()


def test_broadcaster_counts_slots_and_releases_once():
    from gateway.http.stream import Broadcaster, TooManyStreams

    b = Broadcaster(max_per_key=2, max_total=3)
    s1, s2 = b.subscribe("k"), b.subscribe("k")
    with pytest.raises(TooManyStreams) as exc:
        b.subscribe("k")
    assert exc.value.limit == "per_token" and exc.value.cap == 2
    s3 = b.subscribe("other")
    with pytest.raises(TooManyStreams) as exc:
        b.subscribe(None)
    assert exc.value.limit == "total"
    b.unsubscribe(s1)
    b.unsubscribe(s1)  # twice (generator end + response end): one slot, not two
    assert b.per_key == {"k": 1, "other": 1} and len(b.subscribers) == 2
    b.subscribe("k")
    with pytest.raises(TooManyStreams):
        b.subscribe("k")
    b.unsubscribe(s2)
    b.unsubscribe(s3)
    assert b.refused == {"per_token": 2, "total": 1}


def test_slot_freed_when_the_response_never_started_its_stream():
    """The client is gone before the headers go out: the SSE generator never runs (so its own
    cleanup never runs), yet the slot taken for it must be released."""
    from gateway.http.api import _StreamResponse
    from gateway.http.stream import Broadcaster, sse_events

    async def main():
        b = Broadcaster(max_per_key=1)
        sub = b.subscribe("k")

        async def read_after(after, limit):
            return []

        resp = _StreamResponse(b, sub, sse_events(b, read_after, lambda it: it.data, None,
                                                  sub=sub), media_type="text/event-stream")

        async def receive():
            await asyncio.Event().wait()  # the client says nothing

        async def send(message):
            raise OSError("connection reset by peer")

        with pytest.raises(OSError):
            await resp({"type": "http", "asgi": {"spec_version": "2.3"}}, receive, send)
        return b

    b = asyncio.run(main())
    assert b.per_key == {} and not b.subscribers
    b.subscribe("k")  # the slot is there again
