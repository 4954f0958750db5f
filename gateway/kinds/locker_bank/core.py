"""Locker bank: compartments, orders and pickup codes. The pure core of the locker service.

No I/O, no asyncio, no clock: every call that depends on time takes `now` (seconds; the
service passes Unix time). Randomness comes from an injected `rng(n) -> int in [0, n)`
(default `secrets.randbelow`), so tests are deterministic.

Two kinds of calls:

* **decisions** (`assign`, `check_open`, `redeem`, `cancel`, `set_out_of_order`, ...): they
  change nothing and raise `Refused(reason)` when the rules say no;
* **facts** reported by the bank's firmware (`loaded`, `pickup_opened`, `collected`,
  `retrieved`, `block`, ...): a door that opened did open, so facts are applied even when the
  gateway did not expect them; they raise `Refused` only when they name something unknown.

Every order state change is recorded as a `Transition`; `take_changes()` hands them to the
service, which turns each one into an event for the order system.

Rules (docs/lockers.md): smallest fitting size (S→S/M/L, M→M/L, L→L), one live order per
compartment, one live code per bank value, a code opens at most once, reservations and pickup
windows expire, keypad lockout after repeated wrong codes.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import pairwise
from typing import Any, cast

Rng = Callable[[int], int]


# --- vocabulary ----------------------------------------------------------------------------
class Size(StrEnum):
    S = "S"
    M = "M"
    L = "L"


# a parcel of size k may go into these compartment sizes, in order of preference
FITS: dict[Size, tuple[Size, ...]] = {
    Size.S: (Size.S, Size.M, Size.L),
    Size.M: (Size.M, Size.L),
    Size.L: (Size.L,),
}


class CompartmentState(StrEnum):
    FREE = "free"  # empty, in service
    RESERVED = "reserved"  # an order is assigned, waiting for staff to load it
    LOADED = "loaded"  # parcel inside, order ready, code live
    COLLECTING = "collecting"  # the pickup code opened the door; waiting for it to close empty
    EXPIRED = "expired"  # parcel inside, pickup window passed: staff retrieves it
    OUT_OF_ORDER = "out_of_order"  # staff took it out of service
    BLOCKED = "blocked"  # the device saw a fault (door forced, lock jammed): staff must clear it


class OrderState(StrEnum):
    ASSIGNED = "assigned"
    READY = "ready"
    COLLECTED = "collected"
    EXPIRED = "expired"
    RETURNED = "returned"
    CANCELLED = "cancelled"


LIVE = frozenset({OrderState.ASSIGNED, OrderState.READY, OrderState.EXPIRED})  # holds a compartment

# the order state machine; anything else is a bug and raises
ORDER_TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    OrderState.ASSIGNED: frozenset({OrderState.READY, OrderState.CANCELLED}),
    OrderState.READY: frozenset({OrderState.COLLECTED, OrderState.EXPIRED, OrderState.RETURNED}),
    # a bank offline at expiry may still hand the parcel out: the door sensor is the truth
    OrderState.EXPIRED: frozenset({OrderState.RETURNED, OrderState.COLLECTED}),
    OrderState.COLLECTED: frozenset(),
    OrderState.RETURNED: frozenset(),
    OrderState.CANCELLED: frozenset(),
}


class Reason:
    """Refusal reasons (the same words the firmware uses where the rule is the same)."""

    BANK_FULL = "bank-full"  # fitting compartments exist but all are taken
    NO_SIZE = "no-size"  # no in-service compartment of a fitting size in this bank
    BAD_SIZE = "bad-size"
    DUPLICATE_ORDER = "duplicate-order"  # the order id was used before and is finished
    UNKNOWN_ORDER = "unknown-order"
    NO_COMPARTMENT = "no-compartment"
    NOT_RESERVED = "not-reserved"  # load: the compartment has no order waiting to be loaded
    OCCUPIED = "occupied"  # holds a live order
    EMPTY = "empty"  # holds no order
    BUSY = "busy"  # a pickup is under way at that compartment
    BLOCKED = "blocked"
    OUT_OF_ORDER = "out-of-order"
    NOT_BLOCKED = "not-blocked"
    ORDER_STATE = "order-state"  # the order's state does not allow the action
    BAD_PURPOSE = "bad-purpose"
    BAD_CODE = "bad-code"  # not N digits
    CODE_UNKNOWN = "code-unknown"
    CODE_USED = "code-used"
    CODE_REVOKED = "code-revoked"  # replaced by a newer code for the same order
    CODE_EXPIRED = "code-expired"
    KEYPAD_LOCKED = "keypad-locked"
    NO_CODE = "no-code"  # could not draw a unique code (the rng is broken)
    NO_KEY = "no-key"  # the bank has no code key (tools/provision.py, [lockers] keys_file)


class Refused(Exception):
    """A rule said no. `reason` is one of `Reason`; nothing was changed."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# --- codes -----------------------------------------------------------------------------------
VERIFIER = "hmac-sha256"  # what `LockerBank.to_dict` stores; a row without it holds legacy hashes
KEY_LEN = 32


def mac_code(code: str, key: bytes, salt: str) -> str:
    """The code's verifier: hex HMAC-SHA256 under the bank's secret key of `salt + code`. The
    firmware computes the same from hashlib (ipad/opad) with the key it got at provisioning.

    A code has only 10**6 values, so an unkeyed hash of it falls to an exhaustive search in
    under a second; a MAC cannot be searched without the key, which lives only in the gateway's
    keys file and on that bank (docs/security.md).
    """
    return hmac.new(key, (salt + code).encode(), hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """8 hex digits that name a key without revealing it: the device checks it has the same."""
    return hmac.new(key, b"key-id", hashlib.sha256).hexdigest()[:8]


def hash_code(code: str, salt: str) -> str:
    """LEGACY verifier (before keyed codes): hex SHA-256 of `salt + code`. Reversible by trying
    all 10**6 codes; only kept to upgrade old state (`upgrade_legacy`)."""
    return hashlib.sha256((salt + code).encode()).hexdigest()


def salt_id(salt: str) -> str:
    """First 8 hex digits of SHA-256(salt): lets the device check it holds the same salt."""
    return hashlib.sha256(salt.encode()).hexdigest()[:8]


def is_weak(code: str) -> bool:
    """Codes a person might guess first: one repeated digit, or a straight run (123456, 654321)."""
    if len(set(code)) == 1:
        return True
    steps = {(int(b) - int(a)) % 10 for a, b in pairwise(code)}
    return steps in ({1}, {9})


def draw_code(rng: Rng, digits: int = 6) -> str:
    return str(rng(10**digits)).zfill(digits)


# --- keypad lockout ----------------------------------------------------------------------------
@dataclass
class LockoutPolicy:
    """`after` wrong codes within `window_s` lock the keypad for `lock_s[level]` (the last value
    repeats); the level falls back to 0 after `reset_s` without a failure or on a good code."""

    after: int = 3
    window_s: float = 300.0
    lock_s: tuple[float, ...] = (600.0, 1200.0, 1800.0)
    reset_s: float = 3600.0


@dataclass
class Lockout:
    policy: LockoutPolicy = field(default_factory=LockoutPolicy)
    failures: list[float] = field(default_factory=list)
    level: int = 0
    until: float | None = None
    last_failure: float | None = None

    def locked(self, now: float) -> bool:
        return self.until is not None and now < self.until

    def failure(self, now: float) -> float | None:
        """Count a wrong code. Returns the lock duration if this failure locks the keypad."""
        p = self.policy
        if self.last_failure is not None and now - self.last_failure >= p.reset_s:
            self.level = 0
        self.last_failure = now
        self.failures = [t for t in self.failures if now - t < p.window_s] + [now]
        if len(self.failures) < p.after:
            return None
        duration = p.lock_s[min(self.level, len(p.lock_s) - 1)]
        self.level += 1
        self.failures = []
        self.until = now + duration
        return duration

    def success(self) -> None:
        self.failures = []
        self.level = 0

    # the bank's own keypad counts and locks by itself (offline too); the gateway mirrors it
    def device_failure(self, at: float, failures: int) -> None:
        """A wrong code at the bank's keypad at `at`: `failures` in the bank's window so far
        (its count goes on across its reboots), the last ones at the times the gateway saw."""
        self.failures = (self.failures + [at])[-failures:] if failures > 0 else []
        self.last_failure = at

    def device_locked(self, at: float, for_s: float, level: int) -> None:
        """The bank locked its keypad at `at` for `for_s` seconds."""
        self.until = at + for_s
        self.level = level
        self.failures = []

    def recent_failures(self, now: float) -> int:
        return sum(1 for t in self.failures if now - t < self.policy.window_s)


# --- model ---------------------------------------------------------------------------------------
@dataclass
class Transition:
    order_id: str
    compartment_id: int
    old: OrderState | None
    new: OrderState
    at: float
    reason: str = ""


@dataclass
class IssuedCode:
    """A freshly drawn pickup code. `code` (plain text) exists only here: hand it to the order
    system once and drop it; the bank keeps `code_mac`. The device gets `set_order` with
    `compartment`, `order`, `mac` and `exp` (= `expires_at`, in ms)."""

    order_id: str
    compartment_id: int
    code: str
    code_mac: str
    expires_at: float


@dataclass
class Compartment:
    id: int
    size: Size
    order_id: str | None = None
    out_of_order: bool = False
    blocked: str | None = None  # cause: "forced", "jammed", ...


@dataclass
class Order:
    id: str
    size: Size
    compartment_id: int
    state: OrderState
    assigned_at: float
    reserve_until: float
    ready_at: float | None = None
    pickup_until: float | None = None
    code_mac: str | None = None  # the live code's verifier (mac_code), hex
    code_used_at: float | None = None  # the code opened the door (or was redeemed)
    needs_code: bool = False  # the code was spent but the parcel is still inside: reissue
    closed_at: float | None = None

    @property
    def live(self) -> bool:
        return self.state in LIVE


PURPOSES = ("load", "service", "retrieve")


def _due(o: Order, now: float) -> tuple[OrderState, str] | None:
    """What time does to an order at `now`: a reservation runs out (cancelled), a pickup window
    passes (expired, unless a pickup is under way: code used, door open); else None."""
    if o.state is OrderState.ASSIGNED and now >= o.reserve_until:
        return OrderState.CANCELLED, "reservation-expired"
    if (o.state is OrderState.READY and (o.code_used_at is None or o.needs_code)
            and o.pickup_until is not None and now >= o.pickup_until):
        return OrderState.EXPIRED, "pickup-window-passed"
    return None


class LockerBank:
    """One bank: its compartments, the orders in them and their pickup codes."""

    def __init__(self, bank_id: str, compartments: Iterable[tuple[int, Size | str]], *, salt: str,
                 reserve_s: float = 4 * 3600, pickup_window_s: float = 3 * 24 * 3600, code_digits: int = 6,
                 rng: Rng | None = None, lockout: LockoutPolicy | None = None,
                 key: bytes | None = None):
        self.id = bank_id
        self.salt = salt
        # the bank's code key: never stored with the bank (to_dict), the service passes it in
        self.key = key
        self.legacy = False  # verifiers are SHA-256 hashes from an old row: upgrade_legacy
        self.reserve_s = reserve_s
        self.pickup_window_s = pickup_window_s
        self.code_digits = code_digits
        self.rng: Rng = rng or secrets.randbelow
        self.lockout = Lockout(lockout or LockoutPolicy())
        self.compartments: dict[int, Compartment] = {}
        for cid, size in compartments:
            if cid in self.compartments:
                raise ValueError(f"compartment {cid} listed twice")
            self.compartments[cid] = Compartment(cid, Size(size))
        if not self.compartments:
            raise ValueError("a bank needs at least one compartment")
        self.orders: dict[str, Order] = {}
        self._by_mac: dict[str, str] = {}  # every verifier issued (until the order is forgotten) -> order id
        self._changes: list[Transition] = []

    # --- queries ------------------------------------------------------------------------------
    def compartment(self, cid: int) -> Compartment:
        c = self.compartments.get(cid)
        if c is None:
            raise Refused(Reason.NO_COMPARTMENT, str(cid))
        return c

    def order(self, order_id: str) -> Order:
        o = self.orders.get(order_id)
        if o is None:
            raise Refused(Reason.UNKNOWN_ORDER, order_id)
        return o

    def order_in(self, cid: int) -> Order | None:
        oid = self.compartment(cid).order_id
        return self.orders[oid] if oid is not None else None

    def state_of(self, cid: int) -> CompartmentState:
        c = self.compartment(cid)
        if c.blocked:
            return CompartmentState.BLOCKED
        if c.out_of_order:
            return CompartmentState.OUT_OF_ORDER
        o = self.orders[c.order_id] if c.order_id else None
        if o is None:
            return CompartmentState.FREE
        if o.state is OrderState.ASSIGNED:
            return CompartmentState.RESERVED
        if o.state is OrderState.EXPIRED:
            return CompartmentState.EXPIRED
        if o.code_used_at is not None and not o.needs_code:
            return CompartmentState.COLLECTING
        return CompartmentState.LOADED

    def live_orders(self) -> list[Order]:
        return [o for o in self.orders.values() if o.live]

    def take_changes(self) -> list[Transition]:
        """Order state changes since the last call, oldest first (the service's outbox)."""
        out, self._changes = self._changes, []
        return out

    # --- internal -----------------------------------------------------------------------------
    def _move(self, o: Order, new: OrderState, now: float, reason: str = "") -> None:
        if new not in ORDER_TRANSITIONS[o.state]:
            raise AssertionError(f"order {o.id}: {o.state} -> {new} is not a transition")
        old, o.state = o.state, new
        if not o.live:
            o.closed_at = now
            c = self.compartments[o.compartment_id]
            if c.order_id == o.id:
                c.order_id = None
        self._changes.append(Transition(o.id, o.compartment_id, old, new, now, reason))

    def _usable(self, c: Compartment) -> bool:
        return not c.blocked and not c.out_of_order

    def _unavailable(self, c: Compartment) -> None:
        if c.blocked:
            raise Refused(Reason.BLOCKED, f"compartment {c.id}: {c.blocked}")
        if c.out_of_order:
            raise Refused(Reason.OUT_OF_ORDER, f"compartment {c.id}")

    def _keyed(self) -> bytes:
        if self.key is None:
            raise Refused(Reason.NO_KEY, f"bank {self.id} has no code key: provision one "
                          f"(tools/provision.py device ... --kind locker-bank) and give the "
                          f"gateway its keys file (--locker-keys / [lockers] keys_file)")
        if self.legacy:
            raise Refused(Reason.NO_KEY, f"bank {self.id}: its stored codes are being upgraded")
        return self.key

    def _issue(self, o: Order, now: float) -> IssuedCode:
        key = self._keyed()
        for _ in range(1000):
            code = draw_code(self.rng, self.code_digits)
            h = mac_code(code, key, self.salt)
            # unique against every verifier still remembered: live codes, and recently spent
            # ones, so a `code.reused` report from the device always means what it says
            if not is_weak(code) and h not in self._by_mac:
                break
        else:
            raise Refused(Reason.NO_CODE, "1000 draws gave no unused code")
        o.code_mac = h
        o.code_used_at = None
        o.needs_code = False
        o.pickup_until = now + self.pickup_window_s
        self._by_mac[h] = o.id
        return IssuedCode(o.id, o.compartment_id, code, h, o.pickup_until)

    # --- assignment -----------------------------------------------------------------------------
    def assign(self, order_id: str, size: Size | str, now: float, reserve_s: float | None = None) -> Order:
        """Reserve the smallest free compartment that fits. Asking again for a live order
        returns its existing reservation (never a second compartment)."""
        try:
            size = Size(size)
        except ValueError:
            raise Refused(Reason.BAD_SIZE, repr(size)) from None
        old = self.orders.get(order_id)
        if old is not None:
            if old.live and old.size is size:
                return old
            raise Refused(Reason.DUPLICATE_ORDER, order_id)
        if self.key is None:  # it could never get a code: say so now, not once it is loaded
            self._keyed()
        fitting = [c for c in self.compartments.values() if c.size in FITS[size] and self._usable(c)]
        if not fitting:
            raise Refused(Reason.NO_SIZE, f"no {size}-fitting compartment in service")
        free = [c for c in fitting if c.order_id is None]
        if not free:
            raise Refused(Reason.BANK_FULL, f"all {len(fitting)} fitting compartments are taken")
        rank = FITS[size].index
        best = min(free, key=lambda c: (rank(c.size), c.id))
        o = Order(order_id, size, best.id, OrderState.ASSIGNED, now,
                  now + (self.reserve_s if reserve_s is None else reserve_s))
        best.order_id = order_id
        self.orders[order_id] = o
        self._changes.append(Transition(order_id, best.id, None, OrderState.ASSIGNED, now, "assigned"))
        return o

    def cancel(self, order_id: str, now: float) -> Order:
        """Drop a reservation before the parcel is loaded (a loaded one is retrieved instead)."""
        o = self.order(order_id)
        if o.state is not OrderState.ASSIGNED:
            raise Refused(Reason.ORDER_STATE, f"order {order_id} is {o.state}")
        self._move(o, OrderState.CANCELLED, now, "cancelled")
        return o

    # --- staff ------------------------------------------------------------------------------------
    def check_open(self, cid: int, purpose: str) -> None:
        """May staff open this compartment for `purpose` (load / service / retrieve)?"""
        if purpose not in PURPOSES:
            raise Refused(Reason.BAD_PURPOSE, purpose)
        c = self.compartment(cid)
        if purpose == "service":
            return  # staff may always open for service (that is how faults get fixed)
        self._unavailable(c)
        st = self.state_of(cid)
        if purpose == "load":
            if st is CompartmentState.FREE:
                raise Refused(Reason.NOT_RESERVED, f"compartment {cid}")
            if st is not CompartmentState.RESERVED:
                raise Refused(Reason.OCCUPIED, f"compartment {cid} is {st}")
        else:  # retrieve
            if st is CompartmentState.COLLECTING:
                raise Refused(Reason.BUSY, f"a pickup is under way at compartment {cid}")
            if st not in (CompartmentState.LOADED, CompartmentState.EXPIRED):
                raise Refused(Reason.EMPTY, f"compartment {cid} is {st}")

    def open_for_load(self, order_id: str) -> int:
        o = self.order(order_id)
        if o.state is not OrderState.ASSIGNED:
            raise Refused(Reason.ORDER_STATE, f"order {order_id} is {o.state}")
        self.check_open(o.compartment_id, "load")
        return o.compartment_id

    def open_for_retrieve(self, order_id: str) -> int:
        o = self.order(order_id)
        if o.state not in (OrderState.READY, OrderState.EXPIRED):
            raise Refused(Reason.ORDER_STATE, f"order {order_id} is {o.state}")
        self.check_open(o.compartment_id, "retrieve")
        return o.compartment_id

    def set_out_of_order(self, cid: int, on: bool, now: float, force: bool = False) -> None:
        """Take a compartment out of service (or back). A compartment holding a live order is
        refused unless `force` (its customer could not collect)."""
        c = self.compartment(cid)
        if on and c.order_id is not None and not force:
            raise Refused(Reason.OCCUPIED, f"compartment {cid} holds order {c.order_id}")
        c.out_of_order = on

    def clear(self, cid: int) -> None:
        """Staff checked a blocked compartment and releases it."""
        c = self.compartment(cid)
        if not c.blocked:
            raise Refused(Reason.NOT_BLOCKED, f"compartment {cid}")
        c.blocked = None

    def reissue_code(self, order_id: str, now: float) -> IssuedCode:
        """A new code for a ready order (the old one was spent without a pickup, or lost).
        The old hash is revoked; the pickup window restarts."""
        o = self.order(order_id)
        if o.state is not OrderState.READY:
            raise Refused(Reason.ORDER_STATE, f"order {order_id} is {o.state}")
        return self._issue(o, now)

    # --- time ----------------------------------------------------------------------------------------
    def tick(self, now: float) -> list[Transition]:
        """Expire reservations (→ cancelled, compartment free) and pickup windows (→ expired,
        code dead, staff retrieves). A pickup under way (code used, door open) is left alone."""
        before = len(self._changes)
        for o in list(self.orders.values()):
            due = _due(o, now)
            if due is not None:
                self._move(o, due[0], now, due[1])
        return self._changes[before:]

    def due(self, now: float) -> bool:
        """Would `tick(now)` change anything? (Reads only: the service asks every second and
        touches nothing when the answer is no.)"""
        return any(_due(o, now) is not None for o in self.orders.values())

    # --- codes ---------------------------------------------------------------------------------------
    def redeem(self, code: str, now: float) -> Order:
        """Validate a code entered through the gateway (a kiosk or QR reader on the API). On
        success the code is spent and the order's compartment may be opened for pickup. Wrong
        codes count toward the keypad lockout. (The bank's firmware applies the same rules to
        its own keypad, offline too.)"""
        if self.lockout.locked(now):
            raise Refused(Reason.KEYPAD_LOCKED)
        if len(code) != self.code_digits or not code.isdigit():
            raise Refused(Reason.BAD_CODE)
        h = mac_code(code, self._keyed(), self.salt)
        oid = self._by_mac.get(h)
        o = self.orders.get(oid) if oid else None
        reason = None
        if o is None:
            reason = Reason.CODE_UNKNOWN
        elif o.code_mac != h:
            reason = Reason.CODE_REVOKED
        elif o.code_used_at is not None or o.state is OrderState.COLLECTED:
            reason = Reason.CODE_USED
        elif o.state is not OrderState.READY or (o.pickup_until is not None and now >= o.pickup_until):
            reason = Reason.CODE_EXPIRED
        if reason:
            self.lockout.failure(now)
            raise Refused(reason)
        assert o is not None
        self._unavailable(self.compartments[o.compartment_id])
        o.code_used_at = now
        self.lockout.success()
        return o

    # --- facts from the device -------------------------------------------------------------------------
    def _holding(self, cid: int) -> Order:
        """The order a pickup or a retrieve takes out of `cid` (ready or expired)."""
        o = self.order_in(cid)
        if o is None or o.state not in (OrderState.READY, OrderState.EXPIRED):
            raise Refused(Reason.EMPTY, f"compartment {cid}")
        return o

    def _spend_code(self, cid: int, now: float) -> Order:
        """A pickup door opened with the code of `cid`'s order: the code is used (once)."""
        o = self._holding(cid)
        if o.code_used_at is None:
            o.code_used_at = now
        return o

    def loaded(self, cid: int, occupied: bool | None, now: float) -> IssuedCode | None:
        """The load door closed. Occupied (or no sensor: `None`) → order ready and a code is
        issued; sensed empty → the order stays assigned (staff must load again)."""
        o = self.order_in(cid)
        if o is None or o.state is not OrderState.ASSIGNED:
            raise Refused(Reason.NOT_RESERVED, f"compartment {cid}")
        if occupied is False:
            return None
        issued = self._issue(o, now)
        o.ready_at = now
        self._move(o, OrderState.READY, now, "loaded")
        return issued

    def pickup_opened(self, cid: int, now: float) -> Order:
        """The device let a code open this door (possibly offline): the code is spent."""
        return self._spend_code(cid, now)

    def pickup_interrupted(self, cid: int, now: float) -> Order:
        """Power failed while the lock was being released and the door stayed shut: the device
        gave the code back, and so do we."""
        o = self.order_in(cid)
        if o is None:
            raise Refused(Reason.EMPTY, f"compartment {cid}")
        if o.state is OrderState.READY:
            o.code_used_at = None
        return o

    def pickup_incomplete(self, cid: int, now: float) -> Order:
        """The pickup door closed but the occupancy sensor still sees the parcel. The code is
        spent (one use); the order stays ready and needs `reissue_code`."""
        o = self._spend_code(cid, now)
        o.needs_code = True
        return o

    def collected(self, cid: int, now: float) -> Order:
        """The pickup door closed with the compartment empty."""
        o = self._spend_code(cid, now)
        self._move(o, OrderState.COLLECTED, now, "collected")
        return o

    def retrieved(self, cid: int, occupied: bool | None, now: float) -> Order | None:
        """Staff's retrieve door closed. Empty (or no sensor) → order returned, compartment free;
        still occupied → nothing changes."""
        o = self._holding(cid)
        if occupied:
            return None
        self._move(o, OrderState.RETURNED, now, "retrieved")
        return o

    def block(self, cid: int, cause: str) -> None:
        """The device blocked the compartment (door forced, lock jammed)."""
        self.compartment(cid).blocked = cause

    # --- housekeeping ----------------------------------------------------------------------------------
    def forget(self, *order_ids: str) -> None:
        """Drop finished orders (and their verifiers) once the service has archived them (one
        pass over the verifiers, however many orders: an upgraded bank sheds a year at once)."""
        for order_id in order_ids:
            o = self.order(order_id)
            if o.live:
                raise Refused(Reason.ORDER_STATE, f"order {order_id} is {o.state}")
        gone = set(order_ids)
        for order_id in gone:
            del self.orders[order_id]
        self._by_mac = {h: oid for h, oid in self._by_mac.items() if oid not in gone}

    def to_dict(self) -> dict[str, Any]:
        """Everything but the rng, the key and the outbox, JSON-ready (the service stores it).
        Verifiers are MACs (`verifier`); a legacy bank keeps its old key names, unchanged."""
        from dataclasses import asdict
        return {"id": self.id, "salt": self.salt, "reserve_s": self.reserve_s,
                "pickup_window_s": self.pickup_window_s, "code_digits": self.code_digits,
                "lockout": {**asdict(self.lockout.policy), "lock_s": list(self.lockout.policy.lock_s)},
                "lockout_state": {"failures": self.lockout.failures, "level": self.lockout.level,
                                  "until": self.lockout.until, "last_failure": self.lockout.last_failure},
                "compartments": [asdict(c) for c in self.compartments.values()],
                **self._verifiers()}

    def _verifiers(self) -> dict[str, Any]:
        from dataclasses import asdict
        orders = [asdict(o) for o in self.orders.values()]
        if self.legacy:  # not upgraded yet: written back exactly as the old gateway wrote it
            for o in orders:
                o["code_hash"] = o.pop("code_mac")
            return {"orders": orders, "hashes": dict(self._by_mac)}
        return {"orders": orders, "verifier": VERIFIER, "macs": dict(self._by_mac)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], rng: Rng | None = None, key: bytes | None = None) -> LockerBank:
        """A bank from `to_dict`. A row written before keyed codes (no `verifier`: SHA-256
        hashes) loads with `legacy` set: it issues and redeems nothing until `upgrade_legacy`."""
        pol = dict(d["lockout"])
        pol["lock_s"] = tuple(pol["lock_s"])
        bank = cls(d["id"], [(c["id"], c["size"]) for c in d["compartments"]], salt=d["salt"],
                   reserve_s=d["reserve_s"], pickup_window_s=d["pickup_window_s"],
                   code_digits=d["code_digits"], rng=rng, lockout=LockoutPolicy(**pol), key=key)
        for c in d["compartments"]:
            comp = bank.compartments[c["id"]]
            comp.order_id, comp.out_of_order, comp.blocked = c["order_id"], c["out_of_order"], c["blocked"]
        verifier = d.get("verifier")
        if verifier not in (None, VERIFIER):
            raise ValueError(f"bank {d['id']}: unknown code verifier {verifier!r}")
        bank.legacy = verifier is None
        for o in d["orders"]:
            o = dict(o, size=Size(o["size"]), state=OrderState(o["state"]))
            if "code_hash" in o:
                o["code_mac"] = o.pop("code_hash")
            bank.orders[o["id"]] = Order(**o)
        bank._by_mac = dict(d["macs"] if not bank.legacy else d["hashes"])
        ls = d.get("lockout_state") or {}
        bank.lockout.failures = list(ls.get("failures", []))
        bank.lockout.level = ls.get("level", 0)
        bank.lockout.until = ls.get("until")
        bank.lockout.last_failure = ls.get("last_failure")
        return bank

    def snapshot(self) -> list[dict[str, Any]]:
        """Compartments with their state and order, for the API and the dashboard."""
        return [{"id": c.id, "size": str(c.size), "state": str(self.state_of(c.id)), "order": c.order_id,
                 "blocked": c.blocked} for c in sorted(self.compartments.values(), key=lambda c: c.id)]


def device_event(bank: LockerBank, etype: str, body: dict[str, Any], now: float,
                 at: float | None = None) -> IssuedCode | None:
    """Apply one firmware event (docs/lockers.md) to the bank. Returns a freshly issued code
    when the event made an order ready (the service then sends `set_order` to the device and
    the code to the order system). Rejected codes and keypad lockouts update `bank.lockout`,
    dated `at` (when the bank saw it, for an event journaled offline; default `now`); other
    events that change no order state (alarms) are ignored here, the service records and
    forwards them."""
    # unchecked here: every use goes through bank.compartment(), which refuses what is not one of its ids
    cid = cast(int, body.get("compartment"))
    at = now if at is None else at
    if etype in ("code.rejected", "code.reused") and isinstance(body.get("failures"), int):
        bank.lockout.device_failure(at, body["failures"])
    elif etype == "keypad.locked" and isinstance(body.get("for_s"), int | float):
        bank.lockout.device_locked(at, body["for_s"], int(body.get("level") or 0))
    elif etype == "door.opened" and body.get("why") == "pickup":
        bank.lockout.success()  # a good code: the bank starts its count and level again
    if etype == "order.loaded":
        return bank.loaded(cid, None if body.get("occupied") is None else bool(body["occupied"]), now)
    if etype == "door.opened" and body.get("why") == "pickup":
        bank.pickup_opened(cid, now)
    elif etype == "pickup.collected":
        bank.collected(cid, now)
    elif etype == "pickup.incomplete":
        bank.pickup_incomplete(cid, now)
    elif etype == "pickup.interrupted":
        bank.pickup_interrupted(cid, now)
    elif etype == "order.retrieved":
        occ = body.get("occupied")
        bank.retrieved(cid, None if occ is None else bool(occ), now)
    elif etype in ("door.forced", "lock.jammed"):
        bank.block(cid, "forced" if etype == "door.forced" else "jammed")
    return None


def upgrade_legacy(bank: LockerBank, key: bytes, max_digits: int = 7) -> tuple[list[Order], list[str]]:
    """Turn a legacy bank's SHA-256 verifiers (a row written before keyed codes) into MACs
    under `key`, once. The gateway legitimately holds those hashes, and every one falls to an
    exhaustive search of the code space (exactly why they had to go): one pass over all
    10**digits codes finds every code of the bank at once (about a second for 6 digits).

    Returns (the ready orders whose live code the device must now get as a MAC — `load_codes`
    with `replace`; the hashes not found, dropped: only possible with more than `max_digits`
    digits or a corrupt row; the bank keeps verifying such a code its own legacy way)."""
    if not bank.legacy:
        return [], []
    want = {bytes.fromhex(h): h for h in bank._by_mac}
    want.update((bytes.fromhex(o.code_mac), o.code_mac) for o in bank.orders.values() if o.code_mac)
    found: dict[str, str] = {}
    if want and bank.code_digits <= max_digits:
        base = hashlib.sha256(bank.salt.encode())
        fmt = "%0" + str(bank.code_digits) + "d"
        for i in range(10**bank.code_digits):
            code = fmt % i
            h = base.copy()
            h.update(code.encode())
            d = h.digest()
            if d in want:
                found[want[d]] = code
                if len(found) == len(want):
                    break
    bank._by_mac = {mac_code(found[h], key, bank.salt): oid for h, oid in bank._by_mac.items()
                    if h in found}
    push = []
    for o in bank.orders.values():
        if o.code_mac is None:
            continue
        plain = found.get(o.code_mac)
        o.code_mac = None if plain is None else mac_code(plain, key, bank.salt)
        if o.code_mac is not None and o.state is OrderState.READY and o.code_used_at is None:
            push.append(o)
    bank.key, bank.legacy = key, False
    return push, [h for h in want.values() if h not in found]
