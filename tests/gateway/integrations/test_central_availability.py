"""Chain-wide stock availability (issue 22, docs/chain.md "Chain-wide availability"): two real
gateways report their stock through their store Mosquitto → bridge → a 3-node NATS cluster →
`phygital central` → PostgreSQL; head office serves it over HTTP; store A's kiosk and mirror
take their other stores from it, and fall back to this store's stock (marked) when head office
is killed."""
from __future__ import annotations

import json
import secrets
import time

import httpx
import psycopg
import pytest

from gateway.central.messages import ChainEvent, Refused, parse
from gateway.config_file import ConfigError
from gateway.config_file import parse as parse_config
from gateway.integrations.chain import chain_payload
from hil.central_rig import (
    CentralProcess,
    NatsCluster,
    Postgres,
    StoreBridge,
    committed_chain_items,
    differences,
)
from hil.fakes import FakeDevice
from hil.harness import GatewayProcess, free_port, wait_for
from tests.support.fitting import CHINO, SHIRT_L, SHIRT_M, SHIRT_WHITE, STOCK

NOW_MS = 1_790_000_000_000


def _stock_row(items, seq=1):
    return {"id": seq, "stream_id": 5, "type": "fitting.stock", "created": NOW_MS,
            "data": json.dumps({"type": "stock", "items": items})}


def _parse(items):
    import time
    row = _stock_row(items) | {"created": int(time.time() * 1000)}
    return parse("chain/1/store-9/fitting/gateway", chain_payload("store-9", row))


def test_stock_reports_are_parsed_and_bad_ones_refused():
    e = _parse([{"gtin": SHIRT_M, "floor": 2, "stockroom": 4}])
    assert isinstance(e, ChainEvent) and e.type == "fitting.stock"
    assert [(s.gtin, s.floor, s.stockroom) for s in e.stock] == [(SHIRT_M, 2, 4)]
    for bad in ([], [{"gtin": "123", "floor": 1, "stockroom": 1}],
                [{"gtin": SHIRT_M, "floor": -1, "stockroom": 0}],
                [{"gtin": SHIRT_M, "floor": "2", "stockroom": 0}],
                [{"gtin": SHIRT_M, "floor": 1, "stockroom": 0}] * 501):
        with pytest.raises(Refused) as exc:
            _parse(bad)
        assert exc.value.reason == "bad_stock", bad


def test_central_url_config_is_checked(tmp_path):
    ok = parse_config({"chain": {"store_id": "store-a", "central_url": "https://ho.example:8443",
                                 "central_token_file": "tok"}}, base=tmp_path)
    assert ok.gateway.chain_central_url == "https://ho.example:8443"
    assert ok.gateway.chain_central_token_file == tmp_path / "tok"
    for chain, says in [({"central_url": "https://ho", "central_token_file": "t"}, "needs store_id"),
                        ({"store_id": "s", "central_url": "ftp://ho", "central_token_file": "t"},
                         r"http\(s\) URL"),
                        ({"store_id": "s", "central_url": "https://ho"}, "go together")]:
        with pytest.raises(ConfigError, match=says):
            parse_config({"chain": chain})


def test_latest_report_wins_per_store_and_gtin():
    """Reports come in any order (QoS 1 redelivery, a batch holding two): the highest seq of
    a (store, gtin) stays, whatever arrives after it."""
    from datetime import UTC, datetime

    from gateway.central.messages import StockLine
    from gateway.central.schema import availability, create_schema, ensure_partition, write_batch

    def report(seq, floor):
        t = datetime.now(UTC)
        return ChainEvent("store-9", seq, seq, "fitting.stock", "fitting", "gateway", t,
                          {}, (StockLine(SHIRT_M, floor, 0), StockLine(SHIRT_L, seq, 1)))
    pg = Postgres().init().start()
    try:
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            create_schema(conn)
            ensure_partition(conn, (datetime.now(UTC).year, datetime.now(UTC).month))
            write_batch(conn, [report(2, 20), report(3, 30)])   # one batch, one row each
            write_batch(conn, [report(1, 10)])                   # an older one, late
            got = availability(conn, [SHIRT_M, SHIRT_L, CHINO])
    finally:
        pg.close()
    assert {g: {s: (v["floor"], v["stockroom"]) for s, v in by.items()} for g, by in got.items()} \
        == {SHIRT_M: {"store-9": (30, 0)}, SHIRT_L: {"store-9": (3, 1)}, CHINO: {}}


def _stock_file(path, here: dict[str, tuple[int, int]]):
    data = json.loads(STOCK.read_text())
    for p in data["products"]:
        if p["gtin"] in here:
            p["here"] = {"floor": here[p["gtin"]][0], "stockroom": here[p["gtin"]][1]}
    path.write_text(json.dumps(data))
    return path, len(data["products"])


class Chain:
    """PostgreSQL, the cluster, head office (consumer + HTTP) and two real gateways."""

    def __init__(self, tmp):
        self.parts = []
        self.pg = self._keep(Postgres().init().start())
        self.cluster = self._keep(NatsCluster(tmp / "nats").start())
        ports = self.cluster.mqtt_ports
        self.token = secrets.token_hex(16)
        (tmp / "ho.token").write_text(self.token + "\n")
        self.http = f"http://127.0.0.1:{free_port()}"
        self.central = self._keep(CentralProcess(
            tmp / "central", self.pg.dsn, ports, "--http", self.http.removeprefix("http://"),
            "--http-token-file", str(tmp / "ho.token")).start())
        self.bridges = {s: self._keep(StoreBridge(tmp / s, s, ports).start())
                        for s in ("store-a", "store-b")}
        wait_for(lambda: self._bridges_up() == 2, 60, interval=0.3,
                 what=f"consumer subscribed (central log {self.central.log})")
        # store B: the chain on, its own stock (SHIRT_L: 5 on the floor, 2 in the stockroom)
        stock_b, self.products_b = _stock_file(tmp / "stock-b.json",
                                               {SHIRT_L: (5, 2), SHIRT_M: (0, 3)})
        (tmp / "b.toml").write_text('[chain]\nstore_id = "store-b"\n')
        self.gw_b = self._keep(GatewayProcess(
            tmp / "gw-b", self.bridges["store-b"].port,
            extra_args=["--stock", str(stock_b), "--config", str(tmp / "b.toml")]).start())
        # store A: the demo stock (its file says SHIRT_M nearby {"store-b": 1}), head office on
        (tmp / "a.toml").write_text(
            f'[chain]\nstore_id = "store-a"\ncentral_url = "{self.http}"\n'
            f'central_token_file = "{tmp / "ho.token"}"\n')
        samples = {"S-1": {"gtin": SHIRT_M, "title": "Oxford shirt"},
                   "S-2": {"gtin": CHINO, "title": "Chino"}}
        self.gw_a = self._keep(GatewayProcess(
            tmp / "gw-a", self.bridges["store-a"].port, samples=samples,
            extra_args=["--stock", str(STOCK), "--config", str(tmp / "a.toml")]).start())

    def _keep(self, part):
        self.parts.append(part)
        return part

    def db(self):
        return psycopg.connect(self.pg.dsn, autocommit=True)

    def _bridges_up(self):
        try:
            with self.db() as c:
                return c.execute("SELECT count(*) FROM chain_stores WHERE bridge_up").fetchone()[0]
        except psycopg.Error:
            return 0

    def stock_rows(self, store):
        try:
            with self.db() as c:
                return c.execute("SELECT gtin, floor, stockroom FROM chain_stock WHERE store = %s",
                                 (store,)).fetchall()
        except psycopg.Error:
            return []

    def availability(self, *gtins, token=None):
        return httpx.get(f"{self.http}/availability", params=[("gtin", g) for g in gtins],
                         headers={"Authorization": f"Bearer {token or self.token}"}, timeout=10)

    def close(self):
        for part in reversed(self.parts):
            if isinstance(part, Postgres):
                part.close()
            else:
                part.stop()


@pytest.fixture
def chain(tmp_path):
    c = None
    try:
        c = Chain(tmp_path)
        yield c
    finally:
        if c is not None:
            c.close()


def test_nearby_comes_from_head_office_and_falls_back_when_it_is_down(chain):
    # 1. each gateway reported its whole stock file at start, through the chain
    wait_for(lambda: len(chain.stock_rows("store-b")) == chain.products_b
             and len(chain.stock_rows("store-a")) > 0, 60, interval=0.5,
             what=f"both stores' stock in PostgreSQL (central log {chain.central.log})")
    assert (SHIRT_L, 5, 2) in chain.stock_rows("store-b")

    # 2. head office serves it: typed, behind its token, with limits
    r = chain.availability(SHIRT_L, SHIRT_M[1:])          # a GTIN-13 spelling is padded
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["gtins"][SHIRT_L]["store-b"] | {"at": 0} == {"floor": 5, "stockroom": 2, "at": 0}
    assert body["gtins"][SHIRT_M]["store-b"]["stockroom"] == 3
    assert set(body["gtins"][SHIRT_L]) == {"store-a", "store-b"}
    assert chain.availability(SHIRT_L, token="x" * 32).status_code == 401
    assert httpx.get(f"{chain.http}/availability", params={"gtin": SHIRT_L}).status_code == 401
    assert chain.availability(*[f"{i:014d}" for i in range(101)]).status_code == 422
    assert chain.availability("shirt").status_code == 422
    assert chain.availability("09999999999999").json()["gtins"] == {"09999999999999": {}}

    # 3. store A's kiosk: SHIRT_M's other stores from head office (not its file's {"store-b": 1})
    pad = FakeDevice("pad-a1", chain.bridges["store-a"].port).connect()
    room = FakeDevice("room-a1", chain.bridges["store-a"].port, kind="fitting-room",
                      caps=("rfid",)).connect()
    try:
        pad.emit("tag.placed", {"uid": "04a1b2c3d4e5f6", "sample": "S-1"})
        room.emit("room.occupied", {})
        room.emit("garment.in", {"uid": "04a1b2c3d4e5f7", "gtin": SHIRT_M, "serial": "S1"})

        def kiosk():
            v = chain.gw_a.get("/pads/pad-a1")
            return {x["gtin"]: x for x in v["variants"]} if v["tag"] else None
        variants = wait_for(kiosk, 30, what="the kiosk showing S-1")
        assert variants[SHIRT_M]["nearby"] == {"store-b": 3}     # B: 0 floor + 3 stockroom
        assert variants[SHIRT_L]["nearby"] == {"store-b": 7}     # B: 5 + 2
        assert variants[SHIRT_WHITE]["nearby"]["store-b"] >= 0
        assert all(x["nearby_source"] == "head-office" and "store-a" not in x["nearby"]
                   for x in variants.values())
        assert variants[SHIRT_M]["here"] == {"floor": 2, "stockroom": 4}   # A's own file

        def mirror():
            v = chain.gw_a.get("/fitting/rooms/room-a1")
            return v["garments"][0] if v["garments"] else None
        garment = wait_for(mirror, 30, what="the mirror showing the shirt")
        assert {x["gtin"]: x["nearby"] for x in garment["variants"]}[SHIRT_L] == {"store-b": 7}

        # 3b. the chain-wide funnel: purchases in both stores reach head office through the
        # stores' hour reports; per store, head office's figures are the store's own funnel
        hour = int(time.time() * 1000) // 3_600_000 * 3_600_000
        span = {"start": hour - 3_600_000, "end": hour + 3_600_000}
        for gw, n in ((chain.gw_a, 2), (chain.gw_b, 3)):
            for i in range(n):
                r = httpx.post(f"{gw.url}/purchases", timeout=10, json={
                    "receipt": f"R-{i}", "at": hour + i, "items": [{"gtin": SHIRT_L, "qty": 1}]})
                assert r.status_code == 201, r.text
        auth = {"Authorization": f"Bearer {chain.token}"}

        def head_office():
            f = httpx.get(f"{chain.http}/funnel", params=span, headers=auth, timeout=10).json()
            return {s.pop("store"): s for s in f["stores"]}, f["totals"]

        def store_own(gw):
            t = gw.get("/analytics/funnel", **span)["totals"]
            e = t["entries"]
            return {k: t[k] for k in ("entries", "placements", "sessions", "purchases", "units")
                    } | {"purchases_per_entry": round(t["purchases"] / e, 4) if e else None}

        def same():
            stores, _ = head_office()
            return stores == {"store-a": store_own(chain.gw_a), "store-b": store_own(chain.gw_b)}
        wait_for(same, 60, interval=0.5, what=f"head office's funnel = the stores' own "
                                                 f"({head_office()[0]})")
        stores, totals = head_office()
        assert (stores["store-a"]["purchases"], stores["store-b"]["purchases"]) == (2, 3)
        assert stores["store-a"]["placements"] >= 1          # the pad placement above
        assert totals["purchases"] == 5 and totals["units"] == 5

        # 3c. every chain item each real gateway committed is in PostgreSQL exactly once
        # (seq 1..N, N = its chain-wanted stream items, same stream ids), counted against
        # its own SQLite
        def disagree():
            with chain.db() as c:
                rows = c.execute("SELECT store, seq, stream_id FROM chain_events").fetchall()
            wrong = {}
            for store, gw in (("store-a", chain.gw_a), ("store-b", chain.gw_b)):
                committed = committed_chain_items(gw.db)
                d = differences([(q, i) for s, q, i in rows if s == store], committed)
                if d or not committed:
                    wrong[store] = d or "nothing committed"
            return wrong
        try:
            wait_for(lambda: not disagree(), 60, interval=0.5,
                     what="PostgreSQL = the gateways' databases")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {disagree()}") from None

        # 4. head office killed: a product not cached yet falls back, marked, no error
        chain.central.kill()
        pad.emit("tag.placed", {"uid": "04a1b2c3d4e5f8", "sample": "S-2"})
        view = wait_for(lambda: (v := chain.gw_a.get("/pads/pad-a1"))["content"]["id"] == "S-2"
                        and v, 30, what="the kiosk showing S-2")
        assert view["stock_error"] is None and view["product"]["gtin"] == CHINO
        chino = next(x for x in view["variants"] if x["gtin"] == CHINO)
        assert chino["nearby"] == {} and chino["nearby_source"] == "unavailable"
        assert "unreachable" in chino["nearby_error"]
        assert chino["here"]["floor"] + chino["here"]["stockroom"] > 0   # this store's stock
        # head office is not the stock source: the kiosk is not marked out of service for it
        points = {p["device"]: p for p in chain.gw_a.get("/customer-points")}
        assert points["pad-a1"]["state"] == "ok", points["pad-a1"]
    finally:
        pad.close()
        room.close()
