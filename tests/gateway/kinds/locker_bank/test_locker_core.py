"""The locker bank's pure core (gateway/kinds/locker_bank/core.py): allocation, orders, codes, expiry."""
from __future__ import annotations

import hashlib
import hmac
import json
import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from gateway.kinds.locker_bank.core import (
    FITS,
    ORDER_TRANSITIONS,
    CompartmentState,
    LockerBank,
    Lockout,
    LockoutPolicy,
    OrderState,
    Reason,
    Refused,
    Size,
    device_event,
    hash_code,
    is_weak,
    key_id,
    mac_code,
    salt_id,
    upgrade_legacy,
)

KEY = bytes(range(32))  # the bank's code key (tools/provision.py makes a random one)
H = 3600.0
DAY = 24 * H


def seq_rng(*codes: int):
    """An rng that returns the given values in turn (then a fixed fallback)."""
    it = iter(codes)
    return lambda n: next(it, 271828) % n


def make_bank(sizes="SSMML", rng=None, **kw) -> LockerBank:
    return LockerBank("bank-a", list(enumerate(sizes, start=1)), salt="pepper", rng=rng or random.Random(7).randrange,
                      **{"key": KEY, **kw})


def refused(fn, *args, **kw) -> str:
    with pytest.raises(Refused) as e:
        fn(*args, **kw)
    return e.value.reason


def ready(bank: LockerBank, order_id: str, size="S", now=0.0):
    o = bank.assign(order_id, size, now)
    return bank.loaded(o.compartment_id, True, now)


# --- allocation -------------------------------------------------------------------------------
def test_smallest_fitting_compartment_is_chosen_and_larger_ones_only_when_needed():
    bank = make_bank("LMS")  # ids: 1=L, 2=M, 3=S
    assert bank.assign("a", "S", 0).compartment_id == 3
    assert bank.assign("b", "S", 0).compartment_id == 2  # S full: next size up
    assert bank.assign("c", "S", 0).compartment_id == 1
    assert refused(bank.assign, "d", "S", 0) == Reason.BANK_FULL


def test_m_never_goes_into_s_and_l_only_into_l():
    bank = make_bank("SSM")
    assert bank.assign("m1", Size.M, 0).compartment_id == 3
    assert refused(bank.assign, "m2", "M", 0) == Reason.BANK_FULL
    assert refused(bank.assign, "l1", "L", 0) == Reason.NO_SIZE
    assert refused(bank.assign, "x", "XL", 0) == Reason.BAD_SIZE
    assert FITS[Size.L] == (Size.L,) and FITS[Size.M] == (Size.M, Size.L)


def test_out_of_service_compartments_are_not_offered():
    bank = make_bank("SL")
    bank.set_out_of_order(2, True, 0)
    assert refused(bank.assign, "l", "L", 0) == Reason.NO_SIZE
    bank.block(1, "forced")
    assert refused(bank.assign, "s", "S", 0) == Reason.NO_SIZE
    bank.clear(1)
    assert bank.assign("s", "S", 0).compartment_id == 1


def test_asking_again_for_a_live_order_returns_the_same_compartment():
    bank = make_bank()
    a = bank.assign("o1", "M", 0)
    assert bank.assign("o1", "M", 5) is a
    assert refused(bank.assign, "o1", "L", 5) == Reason.DUPLICATE_ORDER
    bank.cancel("o1", 6)
    assert refused(bank.assign, "o1", "M", 7) == Reason.DUPLICATE_ORDER  # order ids are not reused


def test_reservation_expires_and_frees_the_compartment():
    bank = make_bank("S", reserve_s=2 * H)
    o = bank.assign("o1", "S", 0)
    assert bank.state_of(1) is CompartmentState.RESERVED
    assert bank.tick(2 * H - 1) == []
    [t] = bank.tick(2 * H)
    assert (t.order_id, t.old, t.new, t.reason) == ("o1", OrderState.ASSIGNED, OrderState.CANCELLED,
                                                    "reservation-expired")
    assert o.state is OrderState.CANCELLED and bank.state_of(1) is CompartmentState.FREE
    assert bank.assign("o2", "S", 2 * H).compartment_id == 1


# --- load ----------------------------------------------------------------------------------------------
def test_door_closed_with_the_parcel_makes_the_order_ready_with_a_code():
    bank = make_bank(rng=seq_rng(482913), pickup_window_s=3 * DAY)
    o = bank.assign("o1", "S", 10)
    assert bank.open_for_load("o1") == o.compartment_id
    issued = bank.loaded(o.compartment_id, True, 100)
    assert issued.code == "482913" and issued.code_mac == mac_code("482913", KEY, "pepper")
    assert issued.expires_at == 100 + 3 * DAY
    assert o.state is OrderState.READY and o.code_mac == issued.code_mac
    assert bank.state_of(o.compartment_id) is CompartmentState.LOADED
    assert [(t.old, t.new) for t in bank.take_changes()] == [(None, OrderState.ASSIGNED),
                                                             (OrderState.ASSIGNED, OrderState.READY)]


def test_door_closed_but_compartment_empty_is_not_ready():
    bank = make_bank()
    o = bank.assign("o1", "S", 0)
    assert bank.loaded(o.compartment_id, False, 5) is None
    assert o.state is OrderState.ASSIGNED and o.code_mac is None
    assert bank.loaded(o.compartment_id, None, 6) is not None  # no sensor: staff's word


def test_load_is_refused_for_a_compartment_without_a_reservation():
    bank = make_bank("SS")
    o = ready(bank, "o1")
    assert refused(bank.check_open, 2, "load") == Reason.NOT_RESERVED
    assert refused(bank.check_open, o.compartment_id, "load") == Reason.OCCUPIED
    assert refused(bank.open_for_load, "o1") == Reason.ORDER_STATE
    assert refused(bank.check_open, 2, "retrieve") == Reason.EMPTY
    assert refused(bank.check_open, 2, "pickup") == Reason.BAD_PURPOSE
    bank.set_out_of_order(2, True, 0)
    bank.check_open(2, "service")  # service is always allowed
    assert refused(bank.check_open, 2, "retrieve") == Reason.OUT_OF_ORDER


# --- codes ---------------------------------------------------------------------------------------------
def test_the_verifier_is_hmac_sha256_under_the_bank_key_as_the_firmware_computes_it():
    assert mac_code("123456", KEY, "pepper") == hmac.new(KEY, b"pepper123456", hashlib.sha256).hexdigest()
    assert mac_code("123456", KEY, "pepper") != hashlib.sha256(b"pepper123456").hexdigest()
    assert salt_id("pepper") == hashlib.sha256(b"pepper").hexdigest()[:8]
    assert key_id(KEY) == hmac.new(KEY, b"key-id", hashlib.sha256).hexdigest()[:8]
    assert key_id(KEY) != key_id(bytes(32))


def _search(verifier: str, salt: str) -> str | None:
    """What anyone holding a leaked verifier and the salt (the bank id) tries: every code."""
    base = hashlib.sha256(salt.encode())
    for i in range(10**6):
        h = base.copy()
        h.update(b"%06d" % i)
        if h.hexdigest() == verifier:
            return f"{i:06d}"
    return None


def test_a_leaked_set_order_verifier_plus_the_salt_does_not_yield_the_code():
    # the set_order args (what a read-scope leak, a log line or a DB backup would show)
    bank = make_bank(rng=seq_rng(482913))
    o = bank.assign("o1", "S", 0)
    issued = bank.loaded(o.compartment_id, True, 1)
    leaked = bank.to_dict()["orders"][0]
    verifier = leaked.get("code_mac") or leaked.get("code_hash")
    assert verifier == issued.code_mac
    assert _search(verifier, bank.salt) is None, "10**6 unkeyed hashes recovered the code"
    assert issued.code not in json.dumps(bank.to_dict()) and KEY.hex() not in json.dumps(bank.to_dict())


def test_a_wrong_key_never_verifies_and_a_bank_without_a_key_issues_nothing():
    bank = make_bank(rng=seq_rng(482913))
    o = bank.assign("o1", "S", 0)
    code = bank.loaded(o.compartment_id, True, 1).code
    other = LockerBank.from_dict(bank.to_dict(), key=bytes(32))  # another bank's key
    assert refused(other.redeem, code, 2) == Reason.CODE_UNKNOWN
    assert bank.redeem(code, 2).id == "o1"
    keyless = make_bank(key=None)
    assert refused(keyless.assign, "o2", "S", 0) == Reason.NO_KEY
    # a key removed after the assignment: the load issues no code (the service logs why)
    late = make_bank()
    o = late.assign("o3", "S", 0)
    late.key = None
    assert refused(late.loaded, o.compartment_id, True, 1) == Reason.NO_KEY
    assert refused(LockerBank.from_dict(bank.to_dict()).redeem, code, 2) == Reason.NO_KEY


def _legacy_row(bank: LockerBank) -> dict:
    """`bank` as the gateway before keyed codes stored it: SHA-256 hashes, no `verifier`."""
    d = bank.to_dict()
    d.pop("verifier")
    d.pop("macs")
    d["hashes"] = {}
    for o in d["orders"]:
        o["code_hash"] = o.pop("code_mac")
    return d


def test_a_legacy_row_is_upgraded_to_macs_by_one_search_and_its_live_codes_are_pushed():
    codes = {"o1": "482913", "o2": "130363", "o3": "104729"}
    bank = make_bank("SSS", rng=seq_rng(482913, 130363, 104729))
    for oid in codes:
        o = bank.assign(oid, "S", 0)
        bank.loaded(o.compartment_id, True, 1)
    bank.collected(bank.orders["o2"].compartment_id, 5)  # spent: remembered, not pushed
    d = _legacy_row(bank)
    for o in d["orders"]:  # what the old gateway stored
        o["code_hash"] = hash_code(codes[o["id"]], "pepper")
        d["hashes"][o["code_hash"]] = o["id"]
    old = LockerBank.from_dict(d, key=KEY)
    assert old.legacy and old.to_dict() == d  # loaded and saved unchanged until upgraded
    assert refused(old.redeem, "482913", 2) == Reason.NO_KEY  # nothing verified the weak way
    push, lost = upgrade_legacy(old, KEY)
    assert lost == [] and not old.legacy
    assert sorted(o.id for o in push) == ["o1", "o3"]
    for o in old.orders.values():
        assert o.code_mac == mac_code(codes[o.id], KEY, "pepper")
    row = json.dumps(old.to_dict())
    assert not any(hash_code(c, "pepper") in row for c in codes.values())
    assert old.redeem("482913", 6).id == "o1"
    assert refused(old.redeem, "130363", 6) == Reason.CODE_USED  # the spent one still says so
    assert LockerBank.from_dict(old.to_dict(), key=KEY).legacy is False


def test_codes_are_six_digits_unique_and_never_trivial():
    bank = make_bank("S" * 5, rng=seq_rng(111111, 123456, 482913, 482913, 7, 654321, 903172, 5, 6))
    codes = [ready(bank, f"o{i}").code for i in range(4)]
    assert codes == ["482913", "000007", "903172", "000005"]
    assert is_weak("000000") and is_weak("234567") and is_weak("987654") and is_weak("890123")
    assert not is_weak("482913")


def test_a_code_opens_once():
    bank = make_bank()
    issued = ready(bank, "o1")
    o = bank.redeem(issued.code, 10)
    assert o.id == "o1" and bank.state_of(o.compartment_id) is CompartmentState.COLLECTING
    assert refused(bank.redeem, issued.code, 11) == Reason.CODE_USED
    bank.collected(o.compartment_id, 20)
    assert o.state is OrderState.COLLECTED and bank.state_of(o.compartment_id) is CompartmentState.FREE
    assert refused(bank.redeem, issued.code, 30) == Reason.CODE_USED


def test_reissued_code_replaces_the_old_one():
    bank = make_bank()
    old = ready(bank, "o1")
    new = bank.reissue_code("o1", 50)
    assert new.code != old.code
    assert refused(bank.redeem, old.code, 60) == Reason.CODE_REVOKED
    assert bank.redeem(new.code, 61).id == "o1"


def test_pickup_window_expires_then_staff_retrieve_returns_the_order():
    bank = make_bank(pickup_window_s=2 * DAY)
    issued = ready(bank, "o1", now=0)
    [t] = bank.tick(2 * DAY)
    assert (t.new, t.reason) == (OrderState.EXPIRED, "pickup-window-passed")
    cid = issued.compartment_id
    assert bank.state_of(cid) is CompartmentState.EXPIRED
    assert refused(bank.redeem, issued.code, 2 * DAY) == Reason.CODE_EXPIRED
    assert bank.open_for_retrieve("o1") == cid
    assert bank.retrieved(cid, True, 2 * DAY + 5) is None  # still inside
    assert bank.retrieved(cid, False, 2 * DAY + 9).state is OrderState.RETURNED
    assert bank.state_of(cid) is CompartmentState.FREE


def test_redeem_after_the_window_is_refused_even_before_tick():
    bank = make_bank(pickup_window_s=DAY)
    issued = ready(bank, "o1", now=0)
    assert refused(bank.redeem, issued.code, DAY) == Reason.CODE_EXPIRED


def test_code_for_a_blocked_compartment_is_not_spent():
    bank = make_bank()
    issued = ready(bank, "o1")
    bank.block(issued.compartment_id, "jammed")
    assert refused(bank.redeem, issued.code, 5) == Reason.BLOCKED
    bank.clear(issued.compartment_id)
    assert bank.redeem(issued.code, 6).id == "o1"


def test_incomplete_pickup_spends_the_code_and_needs_a_new_one():
    bank = make_bank()
    issued = ready(bank, "o1")
    cid = issued.compartment_id
    bank.pickup_opened(cid, 5)
    bank.pickup_incomplete(cid, 9)
    assert bank.state_of(cid) is CompartmentState.LOADED
    assert refused(bank.redeem, issued.code, 10) == Reason.CODE_USED
    assert bank.redeem(bank.reissue_code("o1", 11).code, 12).id == "o1"


# --- lockout ---------------------------------------------------------------------------------------------
def test_three_wrong_codes_in_five_minutes_lock_for_10_then_20_then_30_minutes():
    lk = Lockout(LockoutPolicy())
    assert lk.failure(0) is None and lk.failure(100) is None
    assert lk.failure(200) == 600 and lk.locked(799) and not lk.locked(800)
    for t in (800, 801, 802):
        d = lk.failure(t)
    assert d == 1200
    for t in (2100, 2101, 2102):
        d = lk.failure(t)
    assert d == 1800
    for t in (4000, 4001, 4002):
        d = lk.failure(t)
    assert d == 1800  # the last step repeats


def test_failures_spread_beyond_the_window_do_not_lock_and_the_level_decays():
    lk = Lockout(LockoutPolicy())
    assert [lk.failure(t) for t in (0, 200, 400, 600)] == [None, None, None, None]
    assert [lk.failure(t) for t in (1000, 1001, 1002)] == [None, None, 600]
    assert [lk.failure(t) for t in (1602 + 3600, 1603 + 3600, 1604 + 3600)] == [None, None, 600]


def test_bank_redeem_counts_wrong_codes_and_a_good_code_resets_the_level():
    bank = make_bank()
    issued = ready(bank, "o1")
    for t in (1, 2, 3):
        assert refused(bank.redeem, "555550", t) == Reason.CODE_UNKNOWN
    assert refused(bank.redeem, issued.code, 4) == Reason.KEYPAD_LOCKED
    assert bank.redeem(issued.code, 604).id == "o1"
    assert bank.lockout.level == 0
    assert refused(bank.redeem, "12", 605) == Reason.BAD_CODE


# --- staff ------------------------------------------------------------------------------------------------
def test_out_of_order_with_a_parcel_inside_needs_force():
    bank = make_bank()
    issued = ready(bank, "o1")
    assert refused(bank.set_out_of_order, issued.compartment_id, True, 0) == Reason.OCCUPIED
    bank.set_out_of_order(issued.compartment_id, True, 0, force=True)
    assert bank.state_of(issued.compartment_id) is CompartmentState.OUT_OF_ORDER
    assert refused(bank.clear, issued.compartment_id) == Reason.NOT_BLOCKED


# --- device events ------------------------------------------------------------------------------------------
def test_device_events_drive_the_order_through_pickup():
    bank = make_bank()
    o = bank.assign("o1", "S", 0)
    cid = o.compartment_id
    assert device_event(bank, "load.empty", {"compartment": cid}, 1) is None
    issued = device_event(bank, "order.loaded", {"compartment": cid, "occupied": 1}, 2)
    assert issued is not None and o.state is OrderState.READY
    device_event(bank, "door.opened", {"compartment": cid, "why": "pickup", "order": "o1"}, 3)
    assert refused(bank.redeem, issued.code, 4) == Reason.CODE_USED  # opened offline: spent here too
    device_event(bank, "pickup.collected", {"compartment": cid, "order": "o1", "occupied": 0}, 5)
    assert o.state is OrderState.COLLECTED
    device_event(bank, "door.forced", {"compartment": cid}, 6)
    assert bank.state_of(cid) is CompartmentState.BLOCKED


def test_a_pickup_reported_after_the_gateway_expired_the_order_is_still_recorded():
    bank = make_bank(pickup_window_s=DAY)
    issued = ready(bank, "o1", now=0)
    bank.tick(DAY)
    bank.collected(issued.compartment_id, DAY + 60)  # the bank was offline and had no clock
    assert bank.order("o1").state is OrderState.COLLECTED


def test_interrupted_pickup_gives_the_code_back():
    bank = make_bank()
    issued = ready(bank, "o1")
    device_event(bank, "door.opened", {"compartment": issued.compartment_id, "why": "pickup"}, 1)
    device_event(bank, "pickup.interrupted", {"compartment": issued.compartment_id}, 2)
    assert bank.redeem(issued.code, 3).id == "o1"


def test_state_survives_a_json_round_trip():
    bank = make_bank()
    issued = ready(bank, "o1")
    bank.assign("o2", "M", 0)
    bank.block(5, "jammed")
    assert refused(bank.redeem, "000000", 1) == Reason.CODE_UNKNOWN
    copy = LockerBank.from_dict(json.loads(json.dumps(bank.to_dict())), key=KEY)
    assert copy.snapshot() == bank.snapshot()
    assert copy.lockout.failures == [1]
    assert copy.redeem(issued.code, 2).id == "o1"
    assert refused(copy.redeem, issued.code, 3) == Reason.CODE_USED


# --- property: allocation and the order state machine -----------------------------------------------
class BankMachine(RuleBasedStateMachine):
    """Random operations against one bank. Invariants: no compartment holds two live orders, no
    order is lost, a code opens at most once, expiry is honoured, sizes fit."""

    def __init__(self):
        super().__init__()
        self.rng = random.Random(0)
        # a small pool of codes, so draws collide and the uniqueness rule is exercised
        pool = lambda n: (self.rng.randrange(80) * 7919 + 100003) % n
        self.bank = LockerBank("b", list(enumerate("SSMMLL", start=1)), salt="s", rng=pool, key=KEY,
                               reserve_s=2 * H, pickup_window_s=DAY,
                               lockout=LockoutPolicy(after=10**9))  # lockout tested above
        self.now = 0.0
        self.n = 0
        self.assigned: set[str] = set()
        self.codes: dict[str, str] = {}  # code -> order id
        self.opened: dict[str, int] = {}  # code -> successful redeems

    @initialize(seed=st.integers(0, 2**32))
    def seed(self, seed):
        self.rng.seed(seed)

    @rule(size=st.sampled_from("SML"))
    def assign(self, size):
        self.n += 1
        oid = f"o{self.n}"
        try:
            o = self.bank.assign(oid, size, self.now)
        except Refused as e:
            assert e.reason in (Reason.BANK_FULL, Reason.NO_SIZE)
            fitting = [c for c in self.bank.compartments.values() if c.size in FITS[Size(size)]
                       and not c.blocked and not c.out_of_order]
            assert all(c.order_id for c in fitting) and (e.reason == Reason.NO_SIZE) == (not fitting)
            return
        self.assigned.add(oid)
        assert self.bank.compartments[o.compartment_id].size in FITS[o.size]

    def _pick(self, data, states):
        orders = sorted((o for o in self.bank.orders.values() if o.state in states), key=lambda o: o.id)
        return data.draw(st.sampled_from(orders)) if orders else None

    @rule(data=st.data(), occupied=st.sampled_from([True, False, None]))
    def load(self, data, occupied):
        o = self._pick(data, {OrderState.ASSIGNED})
        if o is None:
            return
        try:
            issued = self.bank.loaded(o.compartment_id, occupied, self.now)
        except Refused as e:
            assert e.reason == Reason.NO_CODE
            return
        if issued:
            assert issued.code not in self.codes
            self.codes[issued.code] = o.id

    @rule(data=st.data())
    def redeem(self, data):
        if not self.codes:
            return
        code = data.draw(st.sampled_from(sorted(self.codes)))
        try:
            o = self.bank.redeem(code, self.now)
        except Refused:
            return
        assert o.id == self.codes[code] and o.code_mac == mac_code(code, KEY, "s")
        assert o.pickup_until is not None and self.now < o.pickup_until, "expired code opened"
        self.opened[code] = self.opened.get(code, 0) + 1

    @rule(code=st.integers(0, 999999))
    def redeem_guess(self, code):
        c = str(code).zfill(6)
        if c not in self.codes:
            with pytest.raises(Refused):
                self.bank.redeem(c, self.now)

    @rule(data=st.data(), empty=st.booleans())
    def door_closes_after_pickup(self, data, empty):
        o = self._pick(data, {OrderState.READY})
        if o is None or self.bank.state_of(o.compartment_id) is not CompartmentState.COLLECTING:
            return
        if empty:
            self.bank.collected(o.compartment_id, self.now)
        else:
            self.bank.pickup_incomplete(o.compartment_id, self.now)

    @rule(data=st.data())
    def reissue(self, data):
        o = self._pick(data, {OrderState.READY})
        if o is None:
            return
        try:
            issued = self.bank.reissue_code(o.id, self.now)
        except Refused as e:
            assert e.reason == Reason.NO_CODE
            return
        assert issued.code not in self.codes
        self.codes[issued.code] = o.id

    @rule(data=st.data(), occupied=st.booleans())
    def retrieve(self, data, occupied):
        o = self._pick(data, {OrderState.READY, OrderState.EXPIRED})
        if o is None:
            return
        try:
            self.bank.open_for_retrieve(o.id)
        except Refused:
            return
        self.bank.retrieved(o.compartment_id, occupied, self.now)

    @rule(data=st.data())
    def cancel(self, data):
        o = self._pick(data, {OrderState.ASSIGNED})
        if o is not None:
            self.bank.cancel(o.id, self.now)

    @rule(cid=st.integers(1, 6), on=st.booleans(), force=st.booleans())
    def out_of_order(self, cid, on, force):
        try:
            self.bank.set_out_of_order(cid, on, self.now, force)
        except Refused as e:
            assert e.reason == Reason.OCCUPIED

    @rule(cid=st.integers(1, 6), block=st.booleans())
    def block_or_clear(self, cid, block):
        if block:
            self.bank.block(cid, "forced")
        elif self.bank.compartments[cid].blocked:
            self.bank.clear(cid)

    @rule(dt=st.sampled_from([1.0, 60.0, H, 3 * H, DAY / 2, DAY]))
    def time_passes(self, dt):
        self.now += dt
        self.bank.tick(self.now)
        for o in self.bank.orders.values():
            assert not (o.state is OrderState.ASSIGNED and self.now >= o.reserve_until)
            assert not (o.state is OrderState.READY and o.code_used_at is None and self.now >= o.pickup_until)

    @invariant()
    def one_live_order_per_compartment(self):
        holders: dict[int, str] = {}
        for o in self.bank.orders.values():
            if o.live:
                assert o.compartment_id not in holders, f"compartment {o.compartment_id} double-assigned"
                holders[o.compartment_id] = o.id
                assert self.bank.compartments[o.compartment_id].order_id == o.id
                assert self.bank.compartments[o.compartment_id].size in FITS[o.size]
        for c in self.bank.compartments.values():
            assert c.order_id == holders.get(c.id)

    @invariant()
    def no_order_is_lost(self):
        assert self.assigned == set(self.bank.orders)

    @invariant()
    def a_code_opens_at_most_once(self):
        assert all(n == 1 for n in self.opened.values())

    @invariant()
    def every_change_is_a_legal_transition(self):
        for t in self.bank.take_changes():
            assert t.old is None or t.new in ORDER_TRANSITIONS[t.old]

    @invariant()
    def live_codes_are_unique(self):
        live = [o.code_mac for o in self.bank.orders.values()
                if o.state is OrderState.READY and o.code_mac and o.code_used_at is None]
        assert len(live) == len(set(live))


TestBankMachine = BankMachine.TestCase
TestBankMachine.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
