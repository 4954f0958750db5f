"""Fault-injection suite (hil/faults.py): the virtual store (pads + a locker bank on the real
firmware, the gateway process, Mosquitto with persistence) under every scripted fault once,
then the invariants, checked from the database and the devices' own flash. The summary table
is printed (pytest -s, or `python -m hil.faults`; `--soak 600` for the long run)."""
from hil.faults import FaultRig


def test_store_survives_scripted_faults_with_invariants_intact(tmp_path, capsys):
    with FaultRig(tmp_path, pads=2, seed=1) as rig:
        rig.run_sequence()
        checks = rig.check()
    with capsys.disabled():  # the summary table shows in every CI log, not only on failure
        print(rig.summary(checks))
    assert len(rig.faults) == len(FaultRig.SEQUENCE) + 1
    failed = [c for c in checks if not c.ok]
    assert not failed, rig.summary(checks)
