"""Bounded request bodies (gateway/http/body_limit.py) on a real gateway process, over raw sockets so
the test controls how much of a body is ever sent: an over-limit Content-Length is answered
413 while the client has sent only a few bytes of it; a chunked body that runs over gets 413;
exactly the limit is accepted; a route with its own larger limit takes its size; the error
shape; an unauthenticated stream is not drained. No timings are asserted: socket timeouts
only keep a failing test (a server still waiting for the body) from hanging."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import httpx
import pytest

from gateway.http import body_limit
from gateway.http.body_limit import DEFAULT_BODY_LIMIT
from hil.harness import GatewayProcess
from hil.sim.firmware import ROOT

LIMIT = 64 * 1024          # the documented default (docs/security.md)
SAMPLES_LIMIT = 256 * 1024  # PUT /samples/* (BODY_LIMITS)
ROOM_REQUEST = "/fitting/rooms/room-1/requests"  # the kiosk/mirror's one POST


@pytest.fixture(scope="module")
def gw(tmp_path_factory, broker):
    g = GatewayProcess(tmp_path_factory.mktemp("gw-body"), broker.port).start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def kiosk(gw):
    r = subprocess.run([sys.executable, "-m", "tools.cli", "token", "--db", str(gw.db),
                        "create", "--name", "kiosk-body", "--role", "kiosk"],
                       cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def admin():
    return os.environ["PHYGITAL_ADMIN_TOKEN"]  # set by hil.harness for the rig's gateways


def head(method, path, token=None, *, length=None, chunked=False):
    lines = [f"{method} {path} HTTP/1.1", "Host: test", "Content-Type: application/json"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def read_response(sock):
    """(status, headers, body) of one response; a timeout (server still waiting) fails."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data, f"connection closed before a response: {buf!r}"
        buf += data
    raw, _, body = buf.partition(b"\r\n\r\n")
    status_line, *header_lines = raw.decode("latin-1").split("\r\n")
    headers = {}
    for ln in header_lines:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", 0))
    while len(body) < n:
        data = sock.recv(65536)
        assert data, "connection closed in the middle of the response body"
        body += data
    return int(status_line.split()[1]), headers, body[:n]


def connect(gw):
    s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=30)
    return s


def closed_by_server(sock) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_policy_table():
    assert body_limit.body_limit("POST", ROOM_REQUEST) == LIMIT == DEFAULT_BODY_LIMIT
    assert body_limit.body_limit("PUT", "/samples/S-1") == SAMPLES_LIMIT
    assert body_limit.body_limit("POST", "/samples/S-1") == LIMIT  # method matters


@pytest.mark.parametrize("who", ["kiosk", "anonymous"])
def test_declared_over_limit_is_refused_before_the_body_is_read(gw, kiosk, who):
    """300 MB declared, 2 bytes sent: the 413 arrives while the client still owes the rest."""
    with connect(gw) as s:
        s.sendall(head("POST", ROOM_REQUEST, kiosk if who == "kiosk" else None,
                       length=300_000_000) + b'{"')
        status, headers, body = read_response(s)
        assert status == 413, body
        detail = json.loads(body)["detail"]
        assert "64 KiB" in detail and "Content-Length 300000000" in detail, detail
        assert "smaller body" in detail
        assert headers.get("connection") == "close"
        assert closed_by_server(s)  # the server does not wait for (or drain) the 300 MB


def test_chunked_body_over_the_limit_gets_413(gw, kiosk):
    piece = b" " * 16384
    with connect(gw) as s:
        s.sendall(head("POST", ROOM_REQUEST, kiosk, chunked=True))
        for _ in range(LIMIT // len(piece) + 1):  # 80 KiB sent, no terminating chunk
            s.sendall(chunk(piece))
        status, headers, body = read_response(s)
        assert status == 413, body
        assert "64 KiB" in json.loads(body)["detail"]
        assert headers.get("connection") == "close"
        assert closed_by_server(s)
    audit = httpx.get(gw.url + "/audit", params={"who": "kiosk-body"}).json()["audit"]
    assert any(r["status"] == 413 and r["path"] == ROOM_REQUEST for r in audit), audit


def padded(obj, size):
    raw = json.dumps(obj).encode()
    return raw + b" " * (size - len(raw))  # JSON allows trailing whitespace


def test_exactly_the_limit_is_accepted_and_one_byte_more_is_not(gw, kiosk):
    h = {"Authorization": f"Bearer {kiosk}", "Content-Type": "application/json"}
    body = padded({"kind": "call"}, LIMIT)
    r = httpx.post(gw.url + ROOM_REQUEST, content=body, headers=h)
    assert r.status_code != 413, r.text  # read and parsed (404 unknown room, 409, 201 ...)
    assert "too large" not in r.json()["detail"]
    # chunked, exactly at the limit, is read too
    with connect(gw) as s:
        s.sendall(head("POST", ROOM_REQUEST, kiosk, chunked=True)
                  + chunk(body[:40000]) + chunk(body[40000:]) + b"0\r\n\r\n")
        status, _, rbody = read_response(s)
        assert status != 413, rbody
    r = httpx.post(gw.url + ROOM_REQUEST, content=body + b" ", headers=h)
    assert r.status_code == 413, r.text
    assert "at most 64 KiB" in r.json()["detail"]


def test_a_route_with_its_own_limit_takes_its_size(gw):
    h = {"Authorization": f"Bearer {admin()}", "Content-Type": "application/json"}
    sample = {"title": "Big catalog entry", "description": "x" * (200 * 1024)}
    r = httpx.put(gw.url + "/samples/S-BIG", content=padded(sample, SAMPLES_LIMIT), headers=h)
    assert r.status_code == 200, r.text[:500]
    assert len(r.json()["description"]) == 200 * 1024
    r = httpx.put(gw.url + "/samples/S-BIG", content=padded(sample, SAMPLES_LIMIT + 1), headers=h)
    assert r.status_code == 413 and "at most 256 KiB" in r.json()["detail"], r.text[:500]
    spec = httpx.get(gw.url + "/openapi.json").json()
    put = spec["paths"]["/samples/{sample_id}"]["put"]
    assert "256 KiB" in put["description"] and "413" in put["responses"]
    assert "64 KiB" in spec["paths"]["/devices/{device}/commands"]["post"]["responses"]["413"][
        "description"]


def test_an_unread_stream_is_not_drained(gw):
    """Anonymous chunked upload: 401 without reading, and the connection is closed rather
    than the server reading and discarding whatever follows."""
    with connect(gw) as s:
        s.sendall(head("POST", ROOM_REQUEST, chunked=True) + chunk(b"{" * 1000))
        status, headers, _ = read_response(s)
        assert status == 401
        assert headers.get("connection") == "close"
        assert closed_by_server(s)


def test_headers_and_urls_over_16_kib_are_refused(gw):
    """h11 (uvicorn) refuses a head still incomplete past 16 KiB (400), but takes a bigger one
    that arrives in one read; the middleware answers 431 to those. Either way: refused, closed."""
    for request in (b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
                    b"GET /health?" + b"q" * 20000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"):
        with connect(gw) as s:
            s.sendall(request)
            status, _headers, body = read_response(s)
            assert status in (400, 431), (status, body)
            if status == 431:
                assert "at most 16 KiB" in json.loads(body)["detail"]
            assert closed_by_server(s)
    with connect(gw) as s:  # a megabyte of headers, trickled: h11's own limit
        s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: ")
        try:
            for _ in range(64):
                s.sendall(b"a" * 16384)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused and closed while we were still sending: what we want
        status, _, _ = read_response(s)
        assert status == 400
