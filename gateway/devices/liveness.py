"""Liveness of MQTT devices that the broker's last will does not cover (docs/protocol.md,
"Liveness without the will").

Over MQTT the gateway cannot see whether a device set a last will: a device that connects
without one, sends its birth and dies (or hangs with its TCP connection open) would stay
`online` forever. So the gateway checks for itself: a device marked online that sent nothing
(birth, status, event, reply: `devices.last_seen`) for `idle` is asked for a `rebirth` on its
`ctl` topic, which every device must answer with a birth; if nothing arrives within `answer`
after that, the gateway marks it offline itself (a `device` stream item `change: offline`,
`reason: silent`, which raises the usual offline alert). A device it marked offline that is
heard from again (an event, a reply) is asked for a rebirth, and its birth marks it online.

The will stays the fast path (offline within 1.5 × keepalive); this is the net under it,
at the price of one birth per idle device per `idle`. CoAP devices are left to the CoAP edge,
which has its own heartbeat rule (gateway/transport/coap.py).

`plan` is the pure core; `LivenessMonitor` runs it on the gateway's loop.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.devices import protocol
from gateway.devices.commands import Publisher, now_ms
from gateway.devices.ingest import public_device
from gateway.devices.ticker import tick_loop
from gateway.storage.db import Database
from gateway.storage.store import Store

log = logging.getLogger("gateway.liveness")


@dataclass
class Plan:
    probe: list[str] = field(default_factory=list)                  # send a rebirth now
    offline: list[tuple[str, int]] = field(default_factory=list)    # (device, last_seen)
    revive: list[str] = field(default_factory=list)                 # heard from after silence


def plan(devices: Iterable[dict[str, Any]], now: int, probes: dict[str, int],
         silenced: dict[str, int], idle_ms: int, answer_ms: int,
         skip: Callable[[str], bool] = lambda dev: False) -> Plan:
    """What to do about each device (pure). `probes`: device → when its rebirth was sent;
    `silenced`: device → its `last_seen` when it was marked offline here. Both are updated."""
    out = Plan()
    seen = set()
    for d in devices:
        dev = d["id"]
        seen.add(dev)
        if skip(dev):
            probes.pop(dev, None)
            silenced.pop(dev, None)
            continue
        if not d["online"]:
            probes.pop(dev, None)
            mark = silenced.get(dev)
            if mark is not None and d["last_seen"] > mark:  # it is talking again
                out.revive.append(dev)
                silenced[dev] = d["last_seen"]  # once per new sign of life
            continue
        silenced.pop(dev, None)
        if now - d["last_seen"] < idle_ms:
            probes.pop(dev, None)
            continue
        sent = probes.get(dev)
        if sent is None or sent < d["last_seen"]:
            probes[dev] = now
            out.probe.append(dev)
        elif now - sent >= answer_ms:
            out.offline.append((dev, d["last_seen"]))
            probes.pop(dev, None)
    for dev in [k for k in probes if k not in seen]:
        del probes[dev]
    return out


def _devices(store: Store) -> list[dict[str, Any]]:
    return [{"id": r[0], "online": bool(r[1]), "last_seen": r[2]} for r in
            store.conn.execute("SELECT id, online, last_seen FROM devices")]


def mark_silent(store: Store, device: str, last_seen: int) -> bool:
    """Mark `device` offline if it is still online and has not been heard from since
    `last_seen` (a birth that raced the check wins). Returns whether it changed."""
    with store.transaction():
        cur = store.conn.execute("UPDATE devices SET online = 0 WHERE id = ? AND online = 1 "
                                 "AND last_seen <= ?", (device, last_seen))
        if cur.rowcount == 0:
            return False
        dev = store.get_device(device)
        assert dev is not None
        store.append_stream("device", {"change": "offline", "reason": "silent",
                                       **public_device(dev)})
        return True


class LivenessMonitor:
    def __init__(self, db: Database, publish: Publisher, *, idle_s: float, answer_s: float,
                 skip: Callable[[str], bool] = lambda dev: False,
                 ready: Callable[[], bool] = lambda: True,
                 clock: Callable[[], int] = now_ms) -> None:
        self.db = db
        self.publish = publish
        self.idle_ms = int(idle_s * 1000)
        self.answer_ms = int(answer_s * 1000)
        self.tick_s = max(0.05, min(5.0, idle_s / 4, answer_s / 4))
        self.skip = skip
        self.ready = ready  # False while the gateway itself may not hear devices (broker link
        #                     down, ingest backlog): nobody is judged then, probes start over
        self.clock = clock
        self.probes: dict[str, int] = {}
        self.silenced: dict[str, int] = {}

    async def step(self) -> Plan:
        now = self.clock()
        if not self.ready():
            self.probes.clear()
            return Plan()
        p = plan(await self.db.read(_devices), now, self.probes, self.silenced, self.idle_ms,
                 self.answer_ms, self.skip)
        for dev in p.probe + p.revive:
            why = (f"silent for {self.idle_ms // 1000} s" if dev in p.probe
                   else "heard from after it was marked offline")
            log.info("liveness: rebirth requested device=%s (%s)", dev, why)
            await self._rebirth(dev, now)
        for dev, last_seen in p.offline:
            if await self.db.write(mark_silent, dev, last_seen):
                self.silenced[dev] = last_seen
                log.warning("liveness: device offline device=%s: nothing heard for %d s and no "
                            "answer to a rebirth (no last will, or the will was lost)", dev,
                            (now - last_seen) // 1000)
        return p

    async def _rebirth(self, dev: str, now: int) -> None:
        try:
            await self.publish(protocol.topic(dev, "ctl"), protocol.encode_ctl_rebirth(dev, now),
                               qos=1, retain=False)
        except Exception as exc:  # noqa: BLE001 - no answer then: the device goes offline
            log.warning("liveness: rebirth publish failed device=%s error=%r", dev, exc)

    async def run(self) -> None:
        await tick_loop(asyncio.Event(), self.tick_s, self.step, log, "liveness step", first=True)


