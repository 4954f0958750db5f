"""Capacity watch: the disk under the database, the webhook queues and the chain outbox
(issue 17, docs/operations.md "Queues, disk and reads").

Every `interval_s` it looks at:

* **the disk**: free space of the database's file system (`shutil.disk_usage`). Below
  `threshold = max(free_percent % of the disk, free_mb MiB)` it raises `disk.low` (critical);
  back above 1.1 × the threshold, `disk.ok` resolves it. A full disk refuses every write: the
  API answers 507 and device events are no longer acknowledged (they wait in the devices'
  journals, which fill in turn), so the alert has to come while retention or an operator can
  still act;
* **webhook queues**: a subscription whose `dropped` count moved (its queue reached
  `[webhooks] max_pending` and the oldest deliveries went) raises `webhook.dropping`; its
  queue back under the cap resolves it (`webhook.ok`);
* **the chain outbox**: never dropped and never refused (it is the chain's record: head office
  counts a missing `seq` as a loss, and refusing it would refuse device events with it); above
  `chain_alert_rows` rows it raises `chain.backlog`, back under 90 % of that `chain.ok`.

The alerts are ordinary stream items of kind `gateway` that the rules in
`gateway/devices/alerts.py` turn into alerts, so they reach the dashboard, webhooks and the
chain like any other. Only transitions are written (one item when a state changes), and the
state starts from the alerts still open, so a restart does not raise them again.
"""
from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.devices.ticker import tick_loop
from gateway.integrations.webhooks import queues
from gateway.storage.db import Database
from gateway.storage.store import Store, commands_path

log = logging.getLogger("gateway.capacity")

MB = 1 << 20
RECOVER = 1.1          # disk: resolved once free space is back above 1.1 x the threshold
CHAIN_RECOVER = 0.9    # chain outbox: resolved once under 90 % of the alert threshold
KEYS = ("disk.low", "chain.backlog")
WEBHOOK_KEY = "webhook.dropping:"


@dataclass(frozen=True, slots=True)
class CapacitySettings:
    """See docs/configuration.md ([database] disk_alert_*, [webhooks] max_pending,
    [chain] outbox_alert_rows)."""
    free_percent: float = 10.0       # disk.low below this share of the disk ...
    free_mb: float = 1024.0          # ... or below this many MiB, whichever is larger
    webhook_max_pending: int = 100_000
    chain_alert_rows: int = 500_000
    interval_s: float = 60.0


DiskUsage = Callable[[Path], Any]  # shutil.disk_usage: .total .used .free


def disk_threshold(total: int, settings: CapacitySettings) -> int:
    """Free bytes below which the disk is low (0: the alert is off)."""
    return int(max(total * settings.free_percent / 100.0, settings.free_mb * MB))


def _open_keys(store: Store) -> set[str]:
    rows = store.conn.execute(
        "SELECT key FROM alerts WHERE state IN ('open', 'acked') AND (key IN (?, ?) "
        "OR key LIKE 'webhook.dropping:%')", KEYS).fetchall()
    return {r[0] for r in rows}


def _read(store: Store) -> dict[str, Any]:
    row = store.conn.execute("SELECT n FROM queue_counts WHERE name = 'chain_outbox'").fetchone()
    return {"webhooks": queues(store), "chain_outbox": int(row[0]) if row else 0}


def _emit(store: Store, items: list[dict[str, Any]]) -> None:
    with store.transaction():
        for data in items:
            store.append_stream("gateway", data)


class CapacityWatch:
    """Reads the disk and the queues, writes a `gateway` stream item on every transition."""

    def __init__(self, db: Database, settings: CapacitySettings = CapacitySettings(), *,
                 chain_enabled: bool = False,
                 disk_usage: DiskUsage = shutil.disk_usage) -> None:
        self.db = db
        self.settings = settings
        self.chain_enabled = chain_enabled
        self.disk_usage = disk_usage
        self.path = Path(db.path).resolve().parent
        self._open: set[str] | None = None        # alert keys open (read once, then kept)
        self._dropped: dict[str, int] | None = None  # each subscription's `dropped`, last seen
        self.last: dict[str, Any] = {}

    def disk(self) -> dict[str, Any]:
        u = self.disk_usage(self.path)
        threshold = disk_threshold(u.total, self.settings)
        return {"path": str(self.path), "total_bytes": int(u.total), "free_bytes": int(u.free),
                "alert_below_bytes": threshold, "low": threshold > 0 and u.free < threshold}

    async def snapshot(self) -> dict[str, Any]:
        """What `/storage`, the dashboard and `/metrics` show."""
        q = await self.db.read(_read)
        d = self.disk()
        s = self.settings
        return {
            "disk": d | {"db_bytes": _db_bytes(Path(self.db.path))},
            "webhooks": {"max_pending": s.webhook_max_pending, "subscriptions": [
                w | {"full": w["pending"] >= s.webhook_max_pending} for w in q["webhooks"]]},
            "chain_outbox": {"enabled": self.chain_enabled, "rows": q["chain_outbox"],
                             "alert_rows": s.chain_alert_rows,
                             "policy": "never dropped, never refused: alert above alert_rows",
                             "alerting": q["chain_outbox"] > s.chain_alert_rows}}

    async def check(self) -> list[dict[str, Any]]:
        """One look; returns the stream items it wrote (transitions only)."""
        if self._open is None:
            self._open = await self.db.read(_open_keys)
        s, items = self.settings, []
        d = self.disk()
        mb = {k: round(d[k] / MB) for k in ("free_bytes", "total_bytes", "alert_below_bytes")}
        fields = {"free_mb": mb["free_bytes"], "total_mb": mb["total_bytes"],
                  "threshold_mb": mb["alert_below_bytes"], "path": d["path"]}
        if d["low"] and "disk.low" not in self._open:
            items.append({"type": "disk.low", **fields})
            self._open.add("disk.low")
        elif "disk.low" in self._open and d["free_bytes"] >= RECOVER * d["alert_below_bytes"]:
            items.append({"type": "disk.ok", **fields})
            self._open.discard("disk.low")

        q = await self.db.read(_read)
        seen = {w["id"]: w for w in q["webhooks"]}
        if self._dropped is None:  # drops before this process started: not news
            self._dropped = {i: w["dropped"] for i, w in seen.items()}
        for sub, w in seen.items():
            key = WEBHOOK_KEY + sub
            before = self._dropped.get(sub, 0)
            if w["dropped"] > before and key not in self._open:
                items.append({"type": "webhook.dropping", "sub": sub, "dropped": w["dropped"],
                              "pending": w["pending"], "max_pending": s.webhook_max_pending})
                self._open.add(key)
            elif key in self._open and w["pending"] < s.webhook_max_pending \
                    and w["dropped"] == before:
                items.append({"type": "webhook.ok", "sub": sub, "dropped": w["dropped"],
                              "pending": w["pending"]})
                self._open.discard(key)
            self._dropped[sub] = w["dropped"]
        for key in [k for k in self._open if k.startswith(WEBHOOK_KEY)]:
            if key[len(WEBHOOK_KEY):] not in seen:  # the subscription was deleted
                items.append({"type": "webhook.ok", "sub": key[len(WEBHOOK_KEY):],
                              "deleted": True})
                self._open.discard(key)

        rows = q["chain_outbox"]
        if rows > s.chain_alert_rows and "chain.backlog" not in self._open:
            items.append({"type": "chain.backlog", "rows": rows, "alert_rows": s.chain_alert_rows})
            self._open.add("chain.backlog")
        elif "chain.backlog" in self._open and rows < CHAIN_RECOVER * s.chain_alert_rows:
            items.append({"type": "chain.ok", "rows": rows, "alert_rows": s.chain_alert_rows})
            self._open.discard("chain.backlog")

        if items:
            await self.db.write(_emit, items)
            for it in items:
                log.warning("capacity %s %s", it["type"],
                            " ".join(f"{k}={v}" for k, v in it.items() if k != "type"))
        return items

    async def run(self) -> None:
        # a failed check (a full disk refuses the alert's own write) is logged and retried
        await tick_loop(asyncio.Event(), self.settings.interval_s, self.check, log,
                        "capacity check", first=True)


def _db_bytes(path: Path) -> int:
    """The gateway's file and its command file, their WALs included."""
    total = 0
    cmds = commands_path(path)
    for p in (path, path.with_name(path.name + "-wal"), cmds, cmds.with_name(cmds.name + "-wal")):
        try:
            total += p.stat().st_size
        except OSError:
            pass
    return total
