"""No secret reaches a reader: every GET route of the app, the live stream, webhook payloads,
/metrics and the gateway's log are searched for the secret VALUES this test issued or
learned (docs/security.md, "Secrets"; the model is gateway/http/redact.py).

A real gateway and a real locker bank (the locker firmware on the virtual rig) run a locker
scenario in rounds for 30 s — reserve, load, order ready, a wrong and a good code on the
keypad, a second order whose code is reissued (the old one refused), a third reserved and
cancelled — while one `/stream` per role is open. Then, for every role, every GET route of
the OpenAPI spec is called with path parameters filled from real ids (banks, orders, every
command, devices, webhooks ...).

Secrets searched for, by value (whatever the field is called):
* the plain pickup codes (6 digits, not part of a longer number);
* their verifiers: every `hash`/`mac` the gateway put into `set_order`/`load_codes` (read
  from its database) and the gateway's own `hash_code(code, bank)`, and any 12 hex digits
  of one of them (the old `set_order` idempotency key held the first 16);
* every API token (and its secret part), both webhook signing secrets, the gateway's own
  broker password and a device's CoAP key.

Who may see what (the test asserts exactly this):

| reader (scopes)                  | plain codes                                  | the rest |
|----------------------------------|----------------------------------------------|----------|
| kiosk, mirror (read, requests)   | never                                        | never    |
| staff (read, operations)         | never                                        | never    |
| orders (read, lockers)           | `code` of `order.ready` / `order.code` items on the live stream | never |
|                                  | (and POST answers)                           |          |
| admin                            | as orders                                    | never    |
| webhook, default                 | never                                        | never    |
| webhook with `include_secrets`   | `code` of `locker.order.ready` / `.code`     | never    |

No GET route returns a code to anyone. POST answers are not searched: the reissue answer
holds the new code for the order system (and the webhook creation answer its secret).
"""
from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from gateway.analytics.charts import CHARTS
from gateway.http import auth
from gateway.kinds.locker_bank import core as core_lockers
from gateway.storage.store import connect, connect_all
from gateway.transport.coap_auth import add_key
from hil.harness import free_port, wait_for
from tests.support.e2e import wait_events
from tests.support.lockers import Bank, wrong_code

pytestmark = pytest.mark.rig_kinds("locker-bank")

ROLES = ("kiosk", "mirror", "staff", "orders", "admin")
SEES_CODES_ON_STREAM = {"orders", "admin"}  # gateway.http.redact.may_see_codes: lockers or admin
CODE_ITEMS = ("order.ready", "order.code")
HEX_WINDOW = 12  # 48 bits of a verifier identify a 6-digit code
STREAM_S = 30.0  # the streams stay open (scenario rounds) at least this long


@pytest.fixture
def secrets_dir(tmp_path) -> Path:
    d = tmp_path / "secrets"
    d.mkdir()
    return d


@pytest.fixture
def gateway_args(secrets_dir) -> list[str]:
    """The gateway holds a broker password and a CoAP device key: neither may leak."""
    (secrets_dir / "gateway.json").write_text(json.dumps(
        {"user": "gateway", "password": "brokerpw-" + "7f3a9c2e81d4b6a05e19", "tls": False}))
    add_key(secrets_dir / "coap-keys.json", "pad-coap-x")
    return ["--mqtt-auth", str(secrets_dir / "gateway.json"),
            "--coap", f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}",
            "--coap-keys", str(secrets_dir / "coap-keys.json")]


# --- helpers ------------------------------------------------------------------------------------

def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class RoleStream:
    """One role's `/stream`, read in a thread: the raw text, and the SSE messages parsed."""

    def __init__(self, url: str, token: str, after: int | None = None) -> None:
        self.url, self.token, self.after = url, token, after
        self.text: list[str] = []
        self.messages: list[tuple[int, str, dict]] = []  # (id, event, data)
        self.status: int | None = None
        self.opened = threading.Event()
        self.stop_at: int | None = None  # stop once an id >= this was read
        threading.Thread(target=self._run, daemon=True).start()

    @property
    def last_id(self) -> int:
        return self.messages[-1][0] if self.messages else 0

    def _run(self) -> None:
        params = {} if self.after is None else {"after": self.after}
        with httpx.stream("GET", self.url + "/stream", params=params, headers=bearer(self.token),
                          timeout=httpx.Timeout(5, read=None)) as r:
            self.status = r.status_code
            self.opened.set()
            sid, event = 0, None
            for line in r.iter_lines():
                self.text.append(line)
                if line.startswith("id:"):
                    sid = int(line[3:])
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    self.messages.append((sid, event, json.loads(line[5:])))
                    if self.stop_at is not None and sid >= self.stop_at:
                        return


class Receiver:
    """A webhook receiver: keeps every POST body by path."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[str]] = {}
        got = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"])).decode()
                got.setdefault(self.path, []).append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def types(self, path: str) -> list[str]:
        return [json.loads(b)["type"] for b in self.bodies.get(path, [])]


def _around(text: str, start: int, end: int) -> str:
    return text[max(0, start - 70):end + 30].replace("\n", " | ")


class Secrets:
    """The values that must not appear, and a search for them in any text."""

    def __init__(self) -> None:
        self.codes: set[str] = set()
        self.verifiers: set[str] = set()
        self.plain: dict[str, str] = {}  # value -> what it is

    def windows(self) -> set[str]:
        return {v[i:i + HEX_WINDOW].lower() for v in self.verifiers
                for i in range(len(v) - HEX_WINDOW + 1)}

    def find(self, text: str, codes: bool = True) -> list[str]:
        found = []
        if codes:
            for c in self.codes:
                for m in re.finditer(rf"(?<![0-9]){c}(?![0-9])", text):
                    found.append(f"pickup code {c}: ...{_around(text, m.start(), m.end())}...")
        wins = self.windows()
        for m in re.finditer(rf"[0-9a-fA-F]{{{HEX_WINDOW},}}", text):
            run = m.group().lower()
            if any(run[i:i + HEX_WINDOW] in wins for i in range(len(run) - HEX_WINDOW + 1)):
                found.append(f"code verifier (hash/MAC) {run[:16]}...: "
                             f"...{_around(text, m.start(), m.end())}...")
        for value, what in self.plain.items():
            if value in text:
                i = text.index(value)
                found.append(f"{what}: ...{_around(text, i, i + len(value))}...")
        return found


def fill(path: str, ids: dict[str, list[str]]) -> list[str]:
    """Every concrete path for a templated one, from the ids the scenario made."""
    out = [path]
    for name in re.findall(r"{(\w+)}", path):
        out = [p.replace("{" + name + "}", quote(v, safe="")) for p in out for v in ids[name]]
    return out


# --- the test -----------------------------------------------------------------------------------

def test_no_route_stream_webhook_log_or_metric_shows_a_secret(bank: Bank, secrets_dir):
    gw, url = bank.gw, bank.gw.url
    sec = Secrets()
    sec.plain[json.loads((secrets_dir / "gateway.json").read_text())["password"]] = \
        "the gateway's broker password"
    for dev, key in json.loads((secrets_dir / "coap-keys.json").read_text()).items():
        sec.plain[key] = f"the CoAP key of {dev}"
    code_keys = json.loads(gw.locker_keys.read_text())
    for dev, key in code_keys.items():
        sec.plain[key] = f"the pickup-code key of {dev}"

    # a token for every role (the CLI's function, on the running gateway's database)
    tokens: dict[str, str] = {}
    with connect(gw.db) as conn:
        for role in ROLES:
            tokens[role] = auth.create_token(conn, f"{role}-x", auth.resolve_scopes(role))
    for role, tok in {**tokens, "bootstrap": auth.bearer_headers()["Authorization"][7:]}.items():
        sec.plain[tok] = f"the API token of {role}"
        sec.plain[tok.split("_", 2)[2]] = f"the secret part of the API token of {role}"

    # two webhook subscriptions: the default (no secrets) and one that opted in to codes
    hooks = Receiver()
    subs = {}
    for path, include in (("/plain", False), ("/opt-in", True)):
        r = httpx.post(url + "/webhooks", headers=bearer(tokens["admin"]), json={
            "url": hooks.url + path, "events": ["*"] if not include else ["locker.*"],
            "include_secrets": include})
        assert r.status_code == 201, r.text
        assert r.json()["include_secrets"] is include
        subs[path] = r.json()["id"]
        sec.plain[r.json()["secret"]] = f"the signing secret of webhook {path}"
    r = httpx.post(url + "/webhooks", headers=bearer(tokens["orders"]), json={
        "url": hooks.url + "/x", "events": ["*"], "include_secrets": True})
    assert r.status_code == 403, "only admin subscribes (and opts in to codes)"

    # one live stream per role, open for the whole scenario
    t0 = time.monotonic()
    streams = {role: RoleStream(url, tokens[role]) for role in ROLES}
    for role, s in streams.items():
        assert s.opened.wait(10) and s.status == 200, role

    # --- the scenario, in rounds until the streams have been open STREAM_S ---
    orders = bearer(tokens["orders"])
    lk = f"{url}/lockers/{bank.id}"

    def scenario(k: int) -> None:
        a, b, c = f"sx{k}-a", f"sx{k}-b", f"sx{k}-c"
        n_a, code_a = bank.load(a, "M")  # reserve, load; the code comes on the stream
        sec.codes.add(code_a)
        if k == 0:  # wrong entries count toward the keypad lockout: two in the first round
            start = bank.shown()
            bank.lk.type_code(wrong_code(code_a))  # a wrong code: refused, nothing opens
            bank.lk.wait_display(r"^Code not recognised - please check it and try again$",
                                 start=start)
            wait_events(gw, bank.id, 1, "code.rejected")
        bank.collect(n_a, code_a)  # the good code: the door opens, parcel taken
        wait_for(lambda: bank.order(a)["state"] == "collected", 15, what=f"{a} collected")

        n_b, code_b = bank.load(b, "S")
        sec.codes.add(code_b)
        r = httpx.post(f"{lk}/orders/{b}/reissue", headers=orders,
                       json={"idempotency_key": f"{b}-reissue-1"}, timeout=30)
        assert r.status_code == 200, r.text
        code_b2 = r.json()["code"]  # the order system gets the new code in the answer
        assert isinstance(code_b2, str) and code_b2.isdigit() and code_b2 != code_b
        sec.codes.add(code_b2)
        wait_for(lambda: (bank.order(b).get("code_sync") or {}).get("status") == "done", 20,
                 what="the reissued code on the bank")
        if k == 0:  # the replaced code opens nothing
            start = bank.shown()
            bank.lk.type_code(code_b)
            bank.lk.wait_display(r"^This code is no longer valid - please contact the store$",
                                 start=start)
        bank.collect(n_b, code_b2)
        wait_for(lambda: bank.order(b)["state"] == "collected", 15, what=f"{b} collected")

        r = httpx.post(lk + "/orders", headers=orders, json={"order": c, "size": "S"})
        assert r.status_code == 201, r.text
        r = httpx.post(f"{lk}/orders/{c}/cancel", headers=orders,
                       json={"idempotency_key": f"{c}-cancel-1"})
        assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text

    rounds = 0
    while rounds == 0 or time.monotonic() - t0 < STREAM_S:
        scenario(rounds)
        rounds += 1
    final = f"sx{rounds - 1}-c"
    last = wait_for(lambda: next((i for i, e, d in streams["admin"].messages
                                  if d.get("type") == "order.cancelled"
                                  and d.get("order") == final), None), 15,
                    what="the last order.cancelled on the stream")
    for s in streams.values():
        s.stop_at = last
    for role, s in streams.items():
        wait_for(lambda s=s: s.last_id >= last, 15, what=f"{role}'s stream up to {last}")
    streamed_s = time.monotonic() - t0

    # the verifiers the gateway sent to the bank (whatever its algorithm), and its own function
    with connect_all(gw.db) as conn:  # the command file attached
        for name, args in conn.execute("SELECT name, args FROM commands WHERE name IN "
                                       "('set_order', 'load_codes')"):
            args = json.loads(args)
            for e in [args, *args.get("orders", [])]:
                if isinstance(e, dict):
                    sec.verifiers.update(v for k, v in e.items() if k in ("hash", "mac")
                                         and isinstance(v, str))
        command_ids = [r[0] for r in conn.execute("SELECT id FROM commands ORDER BY created")]
    assert len(sec.verifiers) >= len(sec.codes), "a set_order per issued code"
    # the gateway's own function, under the bank's key: every issued code's MAC went to the bank
    own = {core_lockers.mac_code(c, bytes.fromhex(code_keys[bank.id]), bank.id) for c in sec.codes}
    assert own <= sec.verifiers
    # and the unkeyed hash of before keyed codes must not show up anywhere either
    sec.verifiers |= own | {core_lockers.hash_code(c, bank.id) for c in sec.codes}

    # a replay from the table (the catch-up path) for every role, too
    replays = {role: RoleStream(url, tokens[role], after=0) for role in ROLES}
    for role, s in replays.items():
        s.stop_at = last
        wait_for(lambda s=s: s.last_id >= last, 15, what=f"{role}'s replay up to {last}")

    # the webhooks got everything up to the cancel
    wait_for(lambda: "locker.order.cancelled" in hooks.types("/plain")
             and "locker.order.cancelled" in hooks.types("/opt-in"), 20, what="webhook deliveries")

    # --- every GET route, for every role ---
    spec = httpx.get(url + "/openapi.json").json()
    ids = {"bank": [bank.id], "order": [f"sx{k}-{x}" for k in range(rounds) for x in "abc"],
           "command_id": command_ids,
           "device": [d["id"] for d in gw.get("/devices")], "sub_id": list(subs.values()),
           "sample_id": ["none"], "room": ["room-1"], "job": ["none"],
           "pad": ["pad-1", bank.id], "chart": list(CHARTS), "rollout_id": ["ro-none"],
           # an endless-aisle request (this gateway has no stock source: none can be made here;
           # the aisle's own answers, with codes issued, are searched in tests/gateway/aisle/)
           "rid": ["0123456789abcdef"]}
    query = {"/events": {"limit": 1000}, "/audit": {"limit": 1000},
             "/webhooks/{sub_id}/deliveries": {"limit": 1000}, "/alerts": {"limit": 1000}}
    routes = [p for p, ops in spec["paths"].items() if "get" in ops and p != "/stream"]
    assert {"/commands/{command_id}", "/events", "/devices", "/lockers/{bank}/orders/{order}",
            "/webhooks/{sub_id}/deliveries", "/audit", "/metrics",
            "/kiosk/{pad}", "/pads/{pad}", "/customer-points", "/mirror/{room}"} <= set(routes)
    bodies: dict[str, dict[str, tuple[int, str]]] = {role: {} for role in ROLES}
    for role in ROLES:
        with httpx.Client(base_url=url, headers=bearer(tokens[role]), timeout=15) as c:
            for route in routes:
                for path in fill(route, ids):
                    r = c.get(path, params=query.get(route, {}))
                    bodies[role][path] = (r.status_code, r.text)

    # the walk saw what matters (else a clean result would mean nothing)
    kiosk = bodies["kiosk"]
    set_orders = [p for p in kiosk if p.startswith("/commands/") and '"set_order"' in kiosk[p][1]]
    assert len(set_orders) >= 3 and all(kiosk[p][0] == 200 for p in set_orders)
    assert kiosk["/lockers/" + bank.id + "/orders/sx0-b"][0] == 200
    assert kiosk["/events"][0] == 200 and "code.rejected" in kiosk["/events"][1]
    assert kiosk["/webhooks"][0] == 403 and bodies["admin"]["/webhooks"][0] == 200
    assert all(kiosk[p][0] == 200 for p in ("/kiosk/pad-1", "/pads/pad-1", "/customer-points"))
    assert bodies["admin"][f"/webhooks/{subs['/plain']}/deliveries"][0] == 200

    # --- the verdict ---
    found: list[str] = []
    for role in ROLES:
        for path, (status, text) in bodies[role].items():
            found += [f"{role} GET {path} ({status}): {f}" for f in sec.find(text)]
        for name, s in (("live", streams[role]), ("replay", replays[role])):
            text = "\n".join(s.text)
            if role not in SEES_CODES_ON_STREAM:
                found += [f"{role} {name} /stream: {f}" for f in sec.find(text)]
                continue
            # orders/admin: plain codes, only as `code` of order.ready / order.code
            seen, rest = set(), []
            for _, event, data in s.messages:
                if event == "locker" and data.get("type") in CODE_ITEMS and data.get("code"):
                    seen.add(data.pop("code"))
                rest.append(json.dumps(data))
            found += [f"{role} {name} /stream: {f}" for f in sec.find("\n".join(rest))]
            found += [f"{role} {name} /stream: {f}" for f in sec.find(text, codes=False)]
            if name == "live":  # every code, while it is fresh
                assert seen == sec.codes, (role, seen, sec.codes)
    for path in ("/plain", "/opt-in"):
        for body in hooks.bodies[path]:
            data = json.loads(body)["data"]
            if path == "/opt-in" and data.get("type") in CODE_ITEMS:
                data.pop("code", None)
            found += [f"webhook {path}: {f}" for f in sec.find(json.dumps(data))]
    opted = {json.loads(b)["data"].get("code") for b in hooks.bodies["/opt-in"]} - {None}
    assert opted == sec.codes, "the opted-in subscription gets every code"
    found += [f"gateway log: {f}" for f in sec.find(gw.log_text())]
    where = Counter(" ".join(f.split(" ")[:2]).rstrip(":") for f in found)
    assert not found, (f"{len(found)} secret(s) exposed, by reader and channel: "
                       f"{dict(sorted(where.items()))}\n" + "\n".join(sorted(found)[:40]))
    print(f"searched {sum(len(b) for b in bodies.values())} GET responses of {len(routes)} routes "
          f"for {len(ROLES)} roles, {len(ROLES)} streams over {streamed_s:.1f} s ({rounds} "
          f"rounds, {len(sec.codes)} codes), "
          f"{sum(len(v) for v in hooks.bodies.values())} webhook deliveries")
