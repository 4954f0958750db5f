"""The rack displays' service (gateway/kinds/rack_display/) and the desired-state delivery
(gateway/devices/desired.py) on a real SQLite store and the real command service; the device is
a fake that answers `show` commands as the firmware does (or stays silent: offline)."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.devices.commands import CommandService, apply_reply
from gateway.devices.protocol import Reply
from gateway.http import auth
from gateway.kinds.rack_display import KIND
from gateway.kinds.rack_display.core import LikeError
from gateway.kinds.rack_display.service import RackDisplayService
from gateway.storage.db import Database
from gateway.storage.store import Store


def _device_tx(store: Store, dev: str, online: bool, now: int) -> None:
    with store.transaction():
        store.upsert_device(id=dev, kind="rack-display", fw="t", caps=["show"], cfg="x", session=1,
                            epoch="e1", boot=1, reset=None, online=online, now=now)


def _reply_tx(store: Store, reply: Reply, now: int) -> dict[str, Any] | None:
    with store.transaction():
        return apply_reply(store, reply, now)[0]


class FakeDisplay:
    """Answers each `show` like the firmware: done {rev}, older revs {rev, stale}."""

    def __init__(self) -> None:
        self.online = True
        self.rev = 0
        self.likes: int | None = None
        self.shows: list[dict[str, Any]] = []
        self.db: Database | None = None
        self.cmds: CommandService | None = None

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        msg = json.loads(payload)
        assert not retain
        if not self.online or msg["type"] != "cmd":
            return
        args = msg["body"]["args"]
        self.shows.append(args)
        if args["rev"] < self.rev:
            result = {"rev": self.rev, "stale": True}
        else:
            self.rev, self.likes = args["rev"], args["likes"]
            result = {"rev": args["rev"]}
        asyncio.get_running_loop().create_task(self._answer(msg["id"], result))

    async def _answer(self, cid: str, result: dict[str, Any]) -> None:
        await asyncio.sleep(0.01)
        assert self.db is not None and self.cmds is not None
        rec = await self.db.commands.write(_reply_tx, Reply("rack-1", cid, None, "done", None, result), 0)
        if rec is not None:
            from gateway.storage.store import public_command
            self.cmds.notify(public_command(rec))


@pytest.fixture
def world(tmp_path):
    async def make(min_interval_s: float = 0.25, stale=None):
        dev = FakeDisplay()
        db = Database(tmp_path / "gw.db", kind_migrations={KIND.name: KIND.migrations})
        await db.__aenter__()
        await db.write(_device_tx, "rack-1", True, 0)
        cmds = CommandService(db, dev.publish, tick_s=0.05)
        dev.db, dev.cmds = db, cmds
        svc = RackDisplayService(db, cmds, lambda: 1_800_000_000_000, min_interval_s=min_interval_s,
                                 stale=stale)
        await svc.load()
        runner = asyncio.get_running_loop().create_task(svc.run())
        ticker = asyncio.get_running_loop().create_task(cmds.run())
        return dev, db, cmds, svc, (runner, ticker)
    return make


async def _settle(svc: RackDisplayService, dev: FakeDisplay, likes: int, timeout: float = 10) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < end:
        if dev.likes == likes and svc.desired.shown("rack-1") == svc.view("rack-1")["rev"]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"display shows {dev.likes}, wanted {likes}; view {svc.view('rack-1')}")


async def _close(db, tasks) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await db.__aexit__(None, None, None)


def test_likes_reach_the_display_and_duplicate_feed_ids_count_once(world):
    async def main():
        dev, db, _cmds, svc, tasks = await world()
        try:
            await svc.put_rack("rack-1", "DENIM", ["P-1", "P-2"])
            r = await svc.post_likes([{"id": "e1", "product": "P-1"}, {"id": "e2", "product": "P-2"},
                                      {"id": "e3", "product": "P-9"}])  # P-9 is not on this rack
            assert r == {"accepted": 3, "duplicates": 0}
            await _settle(svc, dev, 2)
            # the feed retries the whole batch, and repeats an id inside one batch
            r = await svc.post_likes([{"id": "e1", "product": "P-1"}, {"id": "e2", "product": "P-2"},
                                      {"id": "e4", "product": "P-1"}, {"id": "e4", "product": "P-1"}])
            assert r == {"accepted": 1, "duplicates": 3}
            await _settle(svc, dev, 3)
            r = await svc.post_likes([{"id": "e5", "product": "P-1", "delta": -1}])
            await _settle(svc, dev, 2)
            assert svc.view("rack-1")["likes"] == 2 and svc.view("rack-1")["label"] == "DENIM"
            assert dev.shows[-1]["label"] == "DENIM"
        finally:
            await _close(db, tasks)
    asyncio.run(main())


def test_the_displays_get_the_stores_words_for_last_known_and_a_new_language_at_start(world, tmp_path):
    """`rack_stale` of the store's texts ([screens], docs/rack-display.md) is part of what a
    display shows; a gateway started with other words sends them (rev + 1), once."""
    from gateway.http.screen_texts import ScreenTexts

    async def main():
        fr = ScreenTexts(None, "fr")
        dev, db, _cmds, svc, tasks = await world(stale=lambda d: fr.for_page(d)["rack_stale"])
        try:
            await svc.put_rack("rack-1", "DENIM", ["P-1"])
            await svc.post_likes([{"id": "e1", "product": "P-1"}])
            await _settle(svc, dev, 1)
            assert dev.shows[-1]["stale"] == "DERNIER CHIFFRE"
            rev = svc.view("rack-1")["rev"]
        finally:
            await _close(db, tasks)
        own = ScreenTexts({"en": {"rack_stale": "OFFLINE - SORRY"}}, "en")
        dev, db, _cmds, svc, tasks = await world(stale=lambda d: own.for_page(d)["rack_stale"])
        try:
            assert svc.view("rack-1")["rev"] == rev + 1  # restated at start with the new words
            await _settle(svc, dev, 1)
            assert [s["stale"] for s in dev.shows] == ["OFFLINE - SORRY"]
        finally:
            await _close(db, tasks)
    asyncio.run(main())


def test_a_burst_of_500_likes_is_coalesced_latest_wins(world):
    async def main():
        dev, db, _cmds, svc, tasks = await world()
        try:
            await svc.put_rack("rack-1", "RACK", ["P-1"])
            t0 = asyncio.get_running_loop().time()
            await asyncio.gather(*(svc.post_likes([{"id": f"b{i}", "product": "P-1"}]) for i in range(500)))
            await _settle(svc, dev, 500)
            elapsed = asyncio.get_running_loop().time() - t0
            # one show per 250 ms at most (plus the first): far fewer than the 500 likes
            assert len(dev.shows) <= 2 + elapsed / 0.25, (len(dev.shows), elapsed)
            assert len(dev.shows) < 100
            assert dev.shows[-1]["likes"] == 500
            assert [s["rev"] for s in dev.shows] == sorted(s["rev"] for s in dev.shows)
        finally:
            await _close(db, tasks)
    asyncio.run(main())


def test_an_offline_display_is_asked_once_then_catches_up_on_its_birth(world):
    async def main():
        dev, db, cmds, svc, tasks = await world()
        try:
            await svc.put_rack("rack-1", "RACK", ["P-1"])
            await svc.post_likes([{"id": "x0", "product": "P-1"}])
            await _settle(svc, dev, 1)
            dev.online = False
            await db.write(_device_tx, "rack-1", False, 0)
            for i in range(1, 20):
                await svc.post_likes([{"id": f"x{i}", "product": "P-1"}])
            await asyncio.sleep(0.5)
            assert dev.likes == 1 and svc.desired.sent <= 3  # one show waits; nothing piles up
            dev.online = True
            await db.write(_device_tx, "rack-1", True, 0)
            svc.on_birth("rack-1")
            await cmds.on_birth("rack-1")
            await _settle(svc, dev, 20)
            # a birth always asks again, even with nothing new: the display clears "last known"
            before = len(dev.shows)
            svc.on_birth("rack-1")
            await _settle(svc, dev, 20)
            assert len(dev.shows) == before + 1 and dev.shows[-1]["rev"] == svc.view("rack-1")["rev"]
        finally:
            await _close(db, tasks)
    asyncio.run(main())


def test_a_display_ahead_of_the_gateway_makes_it_continue_above(world):
    async def main():
        dev, db, _cmds, svc, tasks = await world()
        try:
            dev.rev = 50  # e.g. the gateway's database was restored from an older copy
            await svc.put_rack("rack-1", "RACK", ["P-1"])
            await svc.post_likes([{"id": "a", "product": "P-1"}])
            await _settle(svc, dev, 1)
            assert svc.view("rack-1")["rev"] == 51
        finally:
            await _close(db, tasks)
    asyncio.run(main())


def test_bad_input_is_refused_with_what_to_send(world):
    async def main():
        dev, db, _cmds, svc, tasks = await world()
        try:
            with pytest.raises(LikeError, match="delta must be 1"):
                await svc.post_likes([{"id": "a", "product": "P-1", "delta": 5}])
            with pytest.raises(LikeError, match="bad product"):
                await svc.post_likes([{"id": "a", "product": "P 1"}])
            with pytest.raises(LikeError, match="printable ASCII"):
                await svc.put_rack("rack-1", "é" * 3, ["P-1"])
            with pytest.raises(LikeError, match="bad device id"):
                await svc.put_rack("Rack_1", "R", ["P-1"])
            assert svc.view("rack-1") is None and dev.shows == []
        finally:
            await _close(db, tasks)
    asyncio.run(main())


def test_the_likes_feed_role_can_post_likes_and_nothing_else():
    feed = auth.Principal("t", "shop", frozenset(auth.resolve_scopes("likes-feed")))
    assert feed.may(auth.required_scopes("POST", "/likes"))
    for method, path in (("GET", "/racks"), ("GET", "/lockers/lk-1/orders/o-1"), ("GET", "/events"),
                         ("GET", "/stream"), ("PUT", "/racks/rack-1"), ("POST", "/devices/rack-1/commands"),
                         ("POST", "/lockers/lk-1/orders")):
        assert not feed.may(auth.required_scopes(method, path)), (method, path)
    reader = auth.Principal("r", "kiosk", frozenset(auth.resolve_scopes("kiosk")))
    assert reader.may(auth.required_scopes("GET", "/racks/rack-1"))
    assert not reader.may(auth.required_scopes("POST", "/likes"))
    staff = auth.Principal("s", "staff", frozenset(auth.resolve_scopes("staff")))
    assert staff.may(auth.required_scopes("PUT", "/racks/rack-1"))
