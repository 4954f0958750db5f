"""Desired state: what a device should show, delivered on the command path
(docs/protocol.md, "Desired state").

A kind whose devices show state the gateway owns (a rack display's like count) sets the latest
`(rev, state)` per device here; `DesiredState` delivers it as a command (`show` by default)
whose args are the whole state plus `rev`. The rules:

* **Latest wins, coalesced.** At most one command in flight per device, and at most one per
  `min_interval_s`: a change that arrives meanwhile replaces the one waiting, so a burst of
  changes costs a handful of commands, each with the newest state.
* **Confirmed per connection.** A device answers `done` `{"rev": r}`; the state counts as shown
  once a command sent *after the device's latest birth* is answered so. Every birth asks again
  (the device shows what it has as "last known" until then), so a display that was offline
  catches up when it reconnects.
* **Offline costs nothing.** A command that is not answered by its deadline (device offline)
  is not followed by another until the device's next birth or a newer change.
* **Behind the device.** `{"rev": r, "stale": true}` with `r` at or above ours means the device
  has a newer rev than the gateway (its database restored from an older copy): `on_behind`
  lets the kind continue above `r`.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from gateway.devices.commands import CommandService, UnknownDevice

log = logging.getLogger("gateway.desired")


class DesiredState:
    def __init__(self, commands: CommandService, name: str = "show", *, min_interval_s: float = 0.25,
                 timeout_s: float = 10.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.commands = commands
        self.name = name
        self.min_interval_s = min_interval_s
        self.timeout_s = timeout_s
        self.monotonic = monotonic
        self.on_behind: Callable[[str, int], None] | None = None
        self.sent = 0                                   # commands submitted, all devices
        self._want: dict[str, tuple[int, dict[str, Any]]] = {}
        self._shown: dict[str, int] = {}                # rev confirmed since the latest birth
        self._births: dict[str, int] = {}               # births seen per device
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def set(self, device: str, rev: int, state: dict[str, Any]) -> None:
        """The device should show `state` (revision `rev`; a lower rev than the one set is ignored)."""
        cur = self._want.get(device)
        if cur is not None and cur[0] > rev:
            return
        self._want[device] = (rev, dict(state))
        self._kick(device)

    def birth(self, device: str) -> None:
        """The device (re)connected: it shows last known until a `show` of this connection."""
        self._births[device] = self._births.get(device, 0) + 1
        self._shown.pop(device, None)
        if device in self._want:
            self._kick(device)

    def shown(self, device: str) -> int | None:
        """The rev the device confirmed since its latest birth (None: not confirmed)."""
        return self._shown.get(device)

    def _kick(self, device: str) -> None:
        ev = self._wake.setdefault(device, asyncio.Event())
        ev.set()
        task = self._tasks.get(device)
        if task is None or task.done():
            self._tasks[device] = asyncio.get_running_loop().create_task(self._deliver(device, ev))

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

    async def _deliver(self, device: str, wake: asyncio.Event) -> None:
        last = -self.min_interval_s
        while True:
            await wake.wait()
            wake.clear()
            while True:
                want = self._want.get(device)
                if want is None or self._shown.get(device) == want[0]:
                    break
                wait = last + self.min_interval_s - self.monotonic()
                if wait > 0:  # coalesce: whatever is newest after the pause goes
                    await asyncio.sleep(wait)
                    continue
                last = self.monotonic()
                try:
                    if not await self._send(device, *want):
                        break  # not answered (offline): the next birth or change asks again
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("desired state delivery failed device=%s", device)
                    await asyncio.sleep(1.0)

    async def _send(self, device: str, rev: int, state: dict[str, Any]) -> bool:
        births = self._births.get(device, 0)
        key = f"{self.name}-{rev}-{secrets.token_hex(4)}"
        try:
            cmd, _ = await self.commands.submit(device, self.name, {**state, "rev": rev}, key,
                                                self.timeout_s, wait_send=False)
        except UnknownDevice:
            return False  # never seen: its first birth asks
        self.sent += 1
        out = await self.commands.wait(cmd["id"], self.timeout_s + self.commands.grace_ms / 1000 + 1)
        if out is None or not out["final"] or out["status"] == "expired":
            log.info("desired state not shown device=%s rev=%d status=%s", device, rev,
                     None if out is None else out["status"])
            return False
        result = out.get("result") or {}
        if out["status"] != "done":
            log.warning("desired state refused device=%s rev=%d status=%s reason=%s", device, rev,
                        out["status"], out.get("reason"))
            self._shown[device] = rev  # the same state would be refused again: wait for a change
            return True
        theirs = result.get("rev")
        if result.get("stale") and isinstance(theirs, int) and theirs >= rev:
            log.warning("device ahead of the gateway device=%s ours=%d theirs=%d", device, rev, theirs)
            if self.on_behind is not None:
                self.on_behind(device, theirs)  # sets a newer rev: the loop sends it
            else:
                self._shown[device] = rev  # nobody can go above it: stop asking
            return True
        if self._births.get(device, 0) == births:  # else answered across a birth: ask again
            self._shown[device] = rev
        return True
