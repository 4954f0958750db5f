"""Fitting rooms, the pure core: anonymous sessions, staff requests, the back-and-forth rule
and the analytics (docs/fitting-rooms.md). No I/O: times are passed in (unix ms), state is
plain JSON (`to_dict`/`from_dict`), and every change the outside world should hear about is
queued as a stream item (`take_changes`) with the device commands it needs (`take_commands`).

Rules, all in `Rules`:

* **Session**: starts when the room becomes occupied, or at the first garment that comes in
  while it is free (customers often walk in with garments before the curtain closes); ends
  when the room becomes free. No personal data: a session is an id, a room and times.
* **Try-on**: a product (GTIN) whose garment came in during a session; counted once per
  session and product.
* **Swap**: a garment coming back in after it went out, in the same session (per item:
  GTIN + serial, or the tag UID). **Back-and-forth alert**: the `swap_n`-th swap within
  `swap_window_ms` of a session raises one `advice` request for staff (once per session).
* **Requests**: `size` (another size/colour, from the mirror), `call` (button or mirror),
  `advice` (the alert). States: `open` → `acknowledged` → `on_the_way` → `done`, or
  `cancelled`. A `size` request is `done` by itself when a garment of the wanted GTIN comes
  into that room; open requests are `cancelled` when the room becomes free. One open `call`
  per room: more presses are the same call. Acknowledging a call turns the room's call LED off
  (device command `call_ack`).
* **Attribution**: a purchased unit of GTIN P at time t converts the most recent try-on of P
  whose session ended in [t - attribution_ms, t] and is not converted yet; units with no such
  try-on are unattributed.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

REQUEST_KINDS = ("size", "call", "advice")
REQUEST_STATES = ("open", "acknowledged", "on_the_way", "done", "cancelled")
FINAL = ("done", "cancelled")
# state -> states staff may move a request to
NEXT = {"open": ("acknowledged", "on_the_way", "done", "cancelled"),
        "acknowledged": ("on_the_way", "done", "cancelled"),
        "on_the_way": ("done", "cancelled"), "done": (), "cancelled": ()}


class FittingError(ValueError):
    """A request the core refuses; `reason` is a short code for the API."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Rules:
    swap_n: int = 3                      # swaps that raise the back-and-forth alert
    swap_window_ms: int = 10 * 60_000    # ... within this long
    attribution_ms: int = 2 * 3600_000   # a purchase this long after a try-on converts it

    def __post_init__(self) -> None:
        if self.swap_n < 1 or self.swap_window_ms <= 0 or self.attribution_ms <= 0:
            raise ValueError("fitting rules: swap_n >= 1, swap_window_ms > 0, attribution_ms > 0")


def item_key(uid: str, gtin: str | None, serial: str | None) -> str:
    return f"{gtin}/{serial}" if gtin and serial else f"uid:{uid}"


class FittingRooms:
    def __init__(self, rules: Rules | None = None) -> None:
        self.rules = rules or Rules()
        self.rooms: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.requests: dict[str, dict[str, Any]] = {}
        self.purchases: list[dict[str, Any]] = []
        self.footfall: list[list[int]] = []  # [at, entries]
        self.n = 0  # id counter
        self._changes: list[dict[str, Any]] = []
        self._commands: list[tuple[str, str, dict[str, Any], str]] = []

    # -- state ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"rules": asdict(self.rules), "rooms": self.rooms, "sessions": self.sessions,
                "requests": self.requests, "purchases": self.purchases,
                "footfall": self.footfall, "n": self.n}

    @classmethod
    def from_dict(cls, d: dict[str, Any], rules: Rules | None = None) -> FittingRooms:
        core = cls(rules or Rules(**d.get("rules", {})))
        core.rooms, core.sessions = d["rooms"], d["sessions"]
        core.requests, core.purchases = d["requests"], d["purchases"]
        core.footfall, core.n = d["footfall"], d["n"]
        return core

    def take_changes(self) -> list[dict[str, Any]]:
        out, self._changes = self._changes, []
        return out

    def take_commands(self) -> list[tuple[str, str, dict[str, Any], str]]:
        """(device, command, args, idempotency key) to send."""
        out, self._commands = self._commands, []
        return out

    def _id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n}"

    def _emit(self, type: str, room: str, at: int, **data: Any) -> None:
        self._changes.append({"type": f"fitting.{type}", "room": room, "at": at, **data})

    def room(self, room: str) -> dict[str, Any]:
        return self.rooms.setdefault(room, {"occupied": False, "session": None, "garments": {},
                                            "occupied_since": None})

    # -- device events ----------------------------------------------------------------------

    def occupied(self, room: str, at: int) -> None:
        r = self.room(room)
        if r["occupied"]:
            return
        r["occupied"], r["occupied_since"] = True, at
        if r["session"] is None:
            self._start(room, at, "occupied")

    def free(self, room: str, at: int) -> None:
        r = self.room(room)
        r["occupied"] = False
        sid = r["session"]
        if sid is None:
            return
        s = self.sessions[sid]
        s["end"] = at
        r["session"] = None
        for q in self.requests.values():
            if q["room"] == room and q["state"] not in FINAL:
                self._set_state(q, "cancelled", at, "room-free")
        self._emit("session.closed", room, at, session=sid, tried=sorted(s["tried"]),
                   duration_ms=at - s["start"])

    def _start(self, room: str, at: int, why: str) -> dict[str, Any]:
        sid = self._id("s")
        s = {"id": sid, "room": room, "start": at, "end": None, "why": why, "tried": [],
             "items": {}, "swaps": [], "alerted": False, "converted": []}
        self.sessions[sid] = s
        self.room(room)["session"] = sid
        self._emit("session.started", room, at, session=sid, why=why)
        return s

    def garment_in(self, room: str, at: int, uid: str, gtin: str | None,
                   serial: str | None) -> None:
        r = self.room(room)
        key = item_key(uid, gtin, serial)
        r["garments"][key] = {"uid": uid, "gtin": gtin, "serial": serial, "since": at}
        s = self.sessions[r["session"]] if r["session"] else self._start(room, at, "garment")
        item = s["items"].setdefault(key, {"gtin": gtin, "ins": 0, "outs": 0})
        item["ins"] += 1
        swap = item["outs"] > 0
        if gtin and gtin not in s["tried"]:
            s["tried"].append(gtin)
        self._emit("garment.in", room, at, session=s["id"], key=key, uid=uid, gtin=gtin,
                   serial=serial, swap=swap)
        if swap:
            s["swaps"].append(at)
            recent = [t for t in s["swaps"] if t > at - self.rules.swap_window_ms]
            if len(recent) >= self.rules.swap_n and not s["alerted"]:
                s["alerted"] = True
                q = self._request(room, "advice", at, session=s["id"], swaps=len(recent),
                                  window_ms=self.rules.swap_window_ms,
                                  garments=self._garments(room))
                self._emit("alert.back_and_forth", room, at, session=s["id"], request=q["id"],
                           swaps=len(recent))
        for q in self.requests.values():  # the size staff brought is here
            if q["room"] == room and q["kind"] == "size" and q["state"] not in FINAL \
                    and gtin is not None and q.get("gtin") == gtin:
                self._set_state(q, "done", at, "delivered")

    def garment_out(self, room: str, at: int, uid: str) -> None:
        r = self.room(room)
        key = next((k for k, g in r["garments"].items() if g["uid"] == uid), None)
        if key is None:
            return  # never seen in (e.g. before the gateway knew the room)
        g = r["garments"].pop(key)
        sid = r["session"]
        if sid is not None and key in self.sessions[sid]["items"]:
            self.sessions[sid]["items"][key]["outs"] += 1
        self._emit("garment.out", room, at, session=sid, key=key, uid=uid, gtin=g["gtin"],
                   serial=g["serial"])

    def call(self, room: str, at: int, source: str = "button") -> dict[str, Any]:
        for q in self.requests.values():
            if q["room"] == room and q["kind"] == "call" and q["state"] not in FINAL:
                return q  # already calling: the same call
        r = self.room(room)
        return self._request(room, "call", at, session=r["session"], source=source,
                             garments=self._garments(room))

    def _garments(self, room: str) -> list[dict[str, Any]]:
        return [{"key": k, "gtin": g["gtin"], "serial": g["serial"], "uid": g["uid"]}
                for k, g in self.room(room)["garments"].items()]

    # -- requests ---------------------------------------------------------------------------

    def _request(self, room: str, kind: str, at: int, **data: Any) -> dict[str, Any]:
        q = {"id": self._id("r"), "room": room, "kind": kind, "state": "open", "created": at,
             "updated": at, "reason": None, "via": "staff", "history": [["open", at]], **data}
        self.requests[q["id"]] = q
        self._emit("request", room, at, request=q)
        return q

    def ask_size(self, room: str, at: int, gtin: str, instead_of: str | None,
                 where: str | None, via: str = "staff") -> dict[str, Any]:
        r = self.room(room)
        if r["session"] is None:
            raise FittingError("no-session", f"room {room} has no session: nobody is in it")
        for q in self.requests.values():
            if q["room"] == room and q["kind"] == "size" and q.get("gtin") == gtin \
                    and q["state"] not in FINAL:
                return q  # asked already (a double tap on the mirror)
        q = self._request(room, "size", at, session=r["session"], gtin=gtin,
                          instead_of=instead_of, where=where)
        q["via"] = via
        return q

    def dispatch_progress(self, rid: str, at: int, via: str, dispatch: dict[str, Any],
                          state: str | None, fallback: bool) -> None:
        """A size request's dispatch (tube carrier) moved on: record it on the request and move
        the request forward to `state` (never back). `fallback`: the dispatch failed or was
        cancelled, so the request goes back to staff (`open`, `via: staff`)."""
        q = self.requests[rid]
        changed = q.get("dispatch") != dispatch
        q["dispatch"] = dispatch
        if q["state"] in FINAL:
            if changed:
                self._emit("request", q["room"], at, request=q)
            return
        if fallback:
            if q.get("fallback") is None:  # once: staff may move it on from there
                q["via"], q["fallback"] = "staff", via
                self._set_state(q, "open", at, f"{via}-{dispatch['state']}")
            elif changed:
                self._emit("request", q["room"], at, request=q)
            return
        if "dispatched" not in q:  # first report: the dispatcher took it
            q["via"], q["dispatched"] = via, at
        if state is not None and REQUEST_STATES.index(state) > REQUEST_STATES.index(q["state"]):
            self._set_state(q, state, at, f"{via}-{dispatch['state']}")
        elif changed:
            self._emit("request", q["room"], at, request=q)

    def _set_state(self, q: dict[str, Any], state: str, at: int, reason: str | None) -> None:
        q["state"], q["updated"], q["reason"] = state, at, reason
        q["history"].append([state, at])
        self._emit("request", q["room"], at, request=q)

    def update_request(self, rid: str, state: str, at: int, by: str | None = None) -> dict[str, Any]:
        q = self.requests.get(rid)
        if q is None:
            raise FittingError("unknown-request", f"unknown request {rid!r}")
        if state not in REQUEST_STATES:
            raise FittingError("bad-state", f"state must be one of {', '.join(REQUEST_STATES)}")
        if state == q["state"]:
            return q
        if state not in NEXT[q["state"]]:
            raise FittingError("bad-transition",
                               f"request {rid} is {q['state']}: it can go to "
                               f"{', '.join(NEXT[q['state']]) or 'nothing (final)'}")
        if q["kind"] == "call" and q["state"] == "open":  # first staff reaction: LED off
            self._commands.append((q["room"], "call_ack", {}, f"fr:{rid}:call_ack"))
        q["by"] = by
        self._set_state(q, state, at, None)
        return q

    # -- POS, door counter ------------------------------------------------------------------

    def purchase(self, receipt: str, at: int, items: list[tuple[str, int]]) -> dict[str, Any]:
        if any(p["receipt"] == receipt for p in self.purchases):
            return next(p for p in self.purchases if p["receipt"] == receipt)  # POS retry
        lines = []
        for gtin, qty in items:
            converted = []
            for _ in range(qty):
                s = self._attribute(gtin, at)
                if s is not None:
                    s["converted"].append(gtin)
                    converted.append(s["id"])
            lines.append({"gtin": gtin, "qty": qty, "sessions": converted})
        p = {"receipt": receipt, "at": at, "lines": lines}
        self.purchases.append(p)
        return p

    def _attribute(self, gtin: str, at: int) -> dict[str, Any] | None:
        best = None
        for s in self.sessions.values():
            end = s["end"]
            if gtin in s["tried"] and gtin not in s["converted"] and end is not None \
                    and at - self.rules.attribution_ms <= end <= at and (best is None or end > best["end"]):
                best = s
        return best

    def door_count(self, at: int, entries: int) -> None:
        self.footfall.append([at, entries])

    # -- analytics --------------------------------------------------------------------------

    def analytics(self, start: int | None = None, end: int | None = None) -> dict[str, Any]:
        """Figures for sessions that started, and purchases/door counts made, in [start, end)
        (over what this core holds; the service keeps history in tables and calls `analytics`
        with the rows of the period)."""
        return analytics(self.sessions.values(), self.purchases,
                         [(t, n) for t, n in self.footfall], start, end)


def analytics(all_sessions: Iterable[dict[str, Any]], purchases: Iterable[dict[str, Any]],
              footfall: Iterable[tuple[int, int]], start: int | None = None,
              end: int | None = None) -> dict[str, Any]:
    """The figures of `FittingRooms.analytics` from sessions, purchases and door counts
    (`(at, entries)`): those outside [start, end) are left out here."""
    lo = start if start is not None else -(2 ** 62)
    hi = end if end is not None else 2 ** 62
    sessions = [s for s in all_sessions if lo <= s["start"] < hi]
    products: dict[str, dict[str, Any]] = {}
    for s in sessions:
        for g in s["tried"]:
            p = products.setdefault(g, {"gtin": g, "try_ons": 0, "converted": 0})
            p["try_ons"] += 1
            p["converted"] += g in s["converted"]
    for p in products.values():
        p["conversion"] = round(p["converted"] / p["try_ons"], 4)
    tries = sum(p["try_ons"] for p in products.values())
    conv = sum(p["converted"] for p in products.values())
    closed = [s for s in sessions if s["end"] is not None]
    rooms: dict[str, dict[str, Any]] = {}
    for s in closed:
        r = rooms.setdefault(s["room"], {"room": s["room"], "sessions": 0, "occupied_ms": 0})
        r["sessions"] += 1
        r["occupied_ms"] += min(s["end"], hi) - max(s["start"], lo)
    for r in rooms.values():
        r["avg_session_ms"] = r["occupied_ms"] // r["sessions"]
        if start is not None and end is not None:
            r["occupancy"] = round(r["occupied_ms"] / (end - start), 4)
    buys = [p for p in purchases if lo <= p["at"] < hi]
    entries = sum(n for t, n in footfall if lo <= t < hi)
    units = sum(line["qty"] for p in buys for line in p["lines"])
    attributed = sum(len(line["sessions"]) for p in buys for line in p["lines"])
    return {
        "sessions": len(sessions),
        "sessions_converted": sum(1 for s in sessions if s["converted"]),
        "session_conversion": round(sum(1 for s in sessions if s["converted"]) / len(sessions), 4)
        if sessions else None,
        "try_ons": tries, "try_ons_converted": conv,
        "try_on_conversion": round(conv / tries, 4) if tries else None,
        "products": sorted(products.values(), key=lambda p: p["gtin"]),
        "rooms": sorted(rooms.values(), key=lambda r: r["room"]),
        "purchases": len(buys), "units": units, "units_attributed": attributed,
        "footfall": entries,
        "footfall_conversion": round(len(buys) / entries, 4) if entries else None,
    }
