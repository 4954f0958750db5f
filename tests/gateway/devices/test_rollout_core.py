"""The staged rollout's state machine (gateway/devices/rollout.py), pure: stages, advancing
only on `ota.installed` AND the new version in the birth, halting on a failure, a rollback, a
refused offer or a missed deadline, and never offering anything after a halt."""
import pytest

from gateway.devices import rollout as ro

V = "2.0.0"
DEADLINE = 60_000


def planned(n=5, percent=50, canary=None, fw=None):
    devices = {f"pad-{i}": "1.0.0" for i in range(1, n + 1)} | (fw or {})
    return ro.plan("ro-1", V, devices, canary, percent, DEADLINE, now=1000)


def install(r, dev, now):
    r = ro.on_event(r, dev, "ota.installed", {"version": V, "previous": None}, now)
    return r


def test_stages_canary_then_percent_rounded_up_then_the_rest():
    r = planned(n=6, percent=40)
    stages = {t.dev: ro.STAGE_NAMES[t.stage] for t in r.targets}
    assert stages == {"pad-1": "canary", "pad-2": "percent", "pad-3": "percent",
                      "pad-4": "all", "pad-5": "all", "pad-6": "all"}  # ceil(5 * 0.4) = 2
    r = planned(n=3, canary="pad-3")
    assert [t.dev for t in r.targets if t.stage == 0] == ["pad-3"]


def test_plan_refuses_what_it_cannot_do():
    with pytest.raises(ro.PlanError, match="no devices"):
        ro.plan("ro-1", V, {}, None, 50, DEADLINE, 0)
    with pytest.raises(ro.PlanError, match="canary 'pad-9'"):
        planned(canary="pad-9")


def test_only_the_canary_is_offered_until_it_is_back_on_the_new_version():
    r, offers = ro.advance(planned(), {}, now=1000)
    assert offers == ["pad-1"] and r.stage == 0
    r, offers = ro.advance(r, {"pad-1": "1.0.0"}, 2000)
    assert offers == []
    r = install(r, "pad-1", 3000)
    # reported, but its birth still says the old version: not yet
    r, offers = ro.advance(r, {"pad-1": "1.0.0"}, 3000)
    assert offers == [] and r.target("pad-1").state == "offered"
    r, offers = ro.advance(r, {"pad-1": V}, 4000)
    assert r.target("pad-1").state == "installed"
    assert offers == ["pad-2", "pad-3"] and ro.STAGE_NAMES[r.stage] == "percent"


def test_a_birth_with_the_version_alone_is_not_an_install():
    r, _ = ro.advance(planned(), {}, 1000)
    r, offers = ro.advance(r, {"pad-1": V}, 2000)  # no ota.installed reported
    assert offers == [] and r.target("pad-1").state == "offered"


def test_a_rollout_reaches_all_and_is_done():
    r, offers = ro.advance(planned(n=4, percent=50), {}, 1000)
    fw = {}
    seen = list(offers)
    now = 1000
    while r.status == "running":
        now += 1000
        for dev in offers:
            r = install(r, dev, now)
            fw[dev] = V
        r, offers = ro.advance(r, fw, now)
        seen += offers
    assert r.status == "done" and seen == ["pad-1", "pad-2", "pad-3", "pad-4"]
    assert all(t.state == "installed" for t in r.targets)


def test_devices_already_on_the_version_count_as_installed():
    r = planned(n=3, fw={"pad-1": V})
    r, offers = ro.advance(r, {"pad-1": V}, 1000)
    assert offers == ["pad-2"] and r.target("pad-1").reason == "already"


@pytest.mark.parametrize("etype, body, words", [
    ("ota.rolled_back", {"version": V, "boots": 4, "running": "1.0.0"}, "rolled back to 1.0.0 after 4 boots"),
    ("ota.failed", {"version": V, "reason": "bad-hash edge/boot.mpy"}, "bad-hash edge/boot.mpy"),
])
def test_a_failure_of_the_canary_halts_and_nobody_else_is_offered(etype, body, words):
    r, _ = ro.advance(planned(), {}, 1000)
    r = ro.on_event(r, "pad-1", etype, body, 5000)
    assert r.status == "halted" and words in r.reason and r.reason.startswith("pad-1")
    assert r.target("pad-1").state == "failed"
    r2, offers = ro.advance(r, {"pad-1": "1.0.0"}, 10**9)
    assert offers == [] and r2 is r
    assert [t.state for t in r.targets[1:]] == ["waiting"] * 4


def test_events_of_another_version_change_nothing():
    r, _ = ro.advance(planned(), {}, 1000)
    assert ro.on_event(r, "pad-1", "ota.failed", {"version": "9.9.9", "reason": "x"}, 2000) is r
    assert ro.on_event(r, "pad-9", "ota.failed", {"version": V, "reason": "x"}, 2000) is r


def test_an_event_of_a_device_this_rollout_has_not_offered_changes_nothing():
    """pad-2 is still waiting: its ota.failed comes from an earlier rollout's offer."""
    r, _ = ro.advance(planned(), {}, 1000)
    assert ro.on_event(r, "pad-2", "ota.failed", {"version": V, "reason": "halted"}, 2000) is r
    assert ro.on_event(r, "pad-2", "ota.installed", {"version": V}, 2000) is r


def test_a_refused_offer_halts():
    r, _ = ro.advance(planned(), {}, 1000)
    r = ro.on_offer_outcome(r, "pad-1", "rejected", "bad-signature", None, 2000)
    assert r.status == "halted" and "rejected the offer: bad-signature" in r.reason


def test_an_offer_answered_already_counts_once_the_birth_agrees():
    r, _ = ro.advance(planned(n=2), {}, 1000)
    r = ro.on_offer_outcome(r, "pad-1", "done", None, {"version": V, "already": True}, 2000)
    r, offers = ro.advance(r, {"pad-1": V}, 2000)
    assert offers == ["pad-2"]


def test_a_device_not_back_within_the_deadline_halts_the_rollout():
    r, _ = ro.advance(planned(), {}, 1000)
    r, offers = ro.advance(r, {}, 1000 + DEADLINE)  # exactly the deadline: still waiting
    assert r.status == "running"
    r, offers = ro.advance(r, {}, 1001 + DEADLINE)
    assert r.status == "halted" and "pad-1 did not come back with 2.0.0 within 60 s" in r.reason
    assert offers == []


def test_a_halt_by_hand_is_final_and_the_state_round_trips_json():
    r, _ = ro.advance(planned(), {}, 1000)
    r = ro.halt(r, "halted by ops", 2000)
    assert ro.halt(r, "again", 3000) is r
    assert ro.Rollout.from_json(r.to_json()) == r
    s = ro.summary(r)
    assert s["status"] == "halted" and s["counts"] == {"waiting": 4, "offered": 1, "installed": 0, "failed": 0}
