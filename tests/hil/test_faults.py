"""Fault-injection suite (hil/faults.py): the virtual store (pads, a locker bank and a tube line
on the real firmware, the gateway process, Mosquitto with persistence) under every scripted fault once,
then the invariants, checked from the database and the devices' own flash. The summary table
is printed (pytest -s, or `python -m hil.faults`; `--soak 600` for the long run)."""
import pytest

from hil.fault_tube import NETWORK, no_capsule_lost, one_carrier_per_segment
from hil.faults import FaultRig


@pytest.mark.slow  # a long scenario: `pytest -m slow` (README, "Tests")
def test_store_survives_scripted_faults_with_invariants_intact(tmp_path, capsys):
    with FaultRig(tmp_path, pads=2, seed=1) as rig:
        rig.run_sequence()
        checks = rig.check()
    with capsys.disabled():  # the summary table shows in every CI log, not only on failure
        print(rig.summary(checks))
    assert len(rig.faults) == len(FaultRig.SEQUENCE) + 1
    failed = [c for c in checks if not c.ok]
    assert not failed, rig.summary(checks)


# -- the tube checkers can fail: recorded evidence of a violation in, FAIL out -----------------

def _rec(job, frm, to, history, state="delivered", reason=""):
    return {"job": job, "from": frm, "to": to, "state": state, "reason": reason,
            "history": [list(h) for h in history]}


def test_tube_checker_fails_on_a_recorded_two_carrier_segment():
    ok, _ = one_carrier_per_segment(NETWORK, {"T1": 1, "T2": 1}, [], [])
    assert ok
    # the line model saw carriers 3 and 4 in T1 at once: fails whatever the gateway says
    ok, detail = one_carrier_per_segment(NETWORK, {"T1": 2, "T2": 1}, [(12.5, "T1", (3, 4))], [])
    assert not ok and "'T1': 2" in detail and "(3, 4)" in detail


def test_tube_checker_fails_on_overlapping_persisted_dispatches():
    a = _rec("a", "stockroom", "floor", [(0, "queued", ""), (1, "routing", ""), (2, "in_transit", ""),
                                          (4, "arrived", ""), (5, "delivered", "")])
    b = _rec("b", "floor", "stockroom", [(0, "queued", ""), (4.5, "in_transit", ""),
                                          (6, "arrived", ""), (7, "delivered", "")])
    assert one_carrier_per_segment(NETWORK, {"T1": 1}, [], [a, b])[0]
    # b in the tube from 3 s, while a's carrier was still flying on the same segments
    b["history"][1][0] = 3.0
    ok, detail = one_carrier_per_segment(NETWORK, {"T1": 1}, [], [a, b])
    assert not ok and "('a', 'b', ['T1', 'T2'])" in detail
    # a dispatch still in the tube (held, never arrived) overlaps everything after it
    c = _rec("c", "stockroom", "floor", [(10, "in_transit", ""), (11, "held", "door")], state="held")
    d = _rec("d", "floor", "stockroom", [(20, "in_transit", ""), (22, "arrived", "")])
    assert not one_carrier_per_segment(NETWORK, {}, [], [c, d])[0]


def test_tube_checker_fails_on_a_lost_or_unexplained_capsule():
    done = _rec("a", "stockroom", "floor", [(2, "in_transit", ""), (4, "arrived", ""), (5, "delivered", "")])
    ok, _ = no_capsule_lost(["a"], [done], [(1, "stockroom", "floor")], in_tube=0)
    assert ok
    assert not no_capsule_lost(["a", "b"], [done], [(1, "stockroom", "floor")], 0)[0]  # b missing
    lost = _rec("b", "floor", "stockroom", [(2, "in_transit", ""), (9, "lost", "PE-T1")], state="lost")
    assert not no_capsule_lost(["a", "b"], [done, lost], [(1, "stockroom", "floor")], 1)[0]
    failed = _rec("b", "floor", "stockroom", [(9, "failed", "")], state="failed")
    assert not no_capsule_lost(["a", "b"], [done, failed], [(1, "stockroom", "floor")], 0)[0]
    failed["reason"] = "carrier lost twice"
    assert no_capsule_lost(["a", "b"], [done, failed], [(1, "stockroom", "floor")], 0)[0]
    # delivered on paper, but the line never saw it arrive
    assert not no_capsule_lost(["a"], [done], [], 0)[0]
