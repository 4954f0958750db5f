"""Event journal and command log, running in the real MicroPython interpreter."""
import json

from tests.support import run_micropython


def mp(code, tmp_path, heap="96k"):
    r = run_micropython(code, heap=heap, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr + r.stdout
    return [json.loads(l) for l in r.stdout.splitlines() if l.startswith(("{", "["))]


def test_journal_survives_restart_and_replays_in_order(tmp_path):
    mp("""
from edge.journal import Journal
j = Journal('d', 50)
for i in range(5):
    j.append(j.next, '{"n":%d}' % i)
j.ack(2)
""", tmp_path)
    out = mp("""
import json
from edge.journal import Journal
j = Journal('d', 50)
print(json.dumps({"first": j.first, "next": j.next, "epoch": j.epoch, "len": len(j)}))
print(json.dumps(j.entries(0, 10)))
""", tmp_path)
    meta, entries = out
    assert (meta["first"], meta["next"], meta["len"]) == (3, 6, 3)
    assert [e[0] for e in entries] == [3, 4, 5]
    assert entries[0][1] == '{"n":2}'


def test_epoch_is_stable_across_boots_and_new_after_wipe(tmp_path):
    code = "from edge.journal import Journal\nprint('[\"%s\"]' % Journal('d').epoch)"
    a = mp(code, tmp_path)[0][0]
    b = mp(code, tmp_path)[0][0]
    assert a == b and len(a) == 8
    import shutil
    shutil.rmtree(tmp_path / "d")
    assert mp(code, tmp_path)[0][0] != a


def test_torn_last_line_is_dropped_and_appends_continue(tmp_path):
    mp("""
from edge.journal import Journal
j = Journal('d', 50)
j.append(1, 'a'); j.append(2, 'b')
""", tmp_path)
    with open(tmp_path / "d" / "journal.log", "a") as f:
        f.write("3 {\"half")  # power cut in the middle of an append
    out = mp("""
import json
from edge.journal import Journal
j = Journal('d', 50)
j.append(j.next, 'c')
print(json.dumps(j.entries(0, 10)))
""", tmp_path)
    # seq 3 was never published (publish follows the write), so reusing it is safe
    assert out[0] == [[1, "a"], [2, "b"], [3, "c"]]


def test_ring_bound_drops_oldest_and_counts(tmp_path):
    out = mp("""
import json
from edge.journal import Journal
j = Journal('d', 10)
for i in range(25):
    j.append(j.next, 'e%d' % i)
print(json.dumps([j.first, j.next, j.dropped, len(j)]))
j2 = Journal('d', 10)
print(json.dumps([j2.first, j2.next, j2.dropped, [e[0] for e in j2.entries(0, 100)]]))
""", tmp_path)
    assert out[0] == [16, 26, 15, 10]
    assert out[1][:3] == [16, 26, 15]
    assert out[1][3] == list(range(16, 26))


def test_ack_everything_compacts_file(tmp_path):
    mp("""
from edge.journal import Journal
j = Journal('d', 50)
for i in range(30):
    j.append(j.next, 'x' * 50)
j.ack(30)
""", tmp_path)
    assert (tmp_path / "d" / "journal.log").stat().st_size == 0
    meta = json.loads((tmp_path / "d" / "journal.json").read_text())
    assert meta["first"] == 31 and meta["next"] == 31


def test_command_log_remembers_outcomes_and_interrupted_ids(tmp_path):
    mp("""
from edge.cmdlog import CommandLog
c = CommandLog('cmds.json', keep=4)
c.start('a'); c.finish('a', 'done', None, {'times': 2})
c.start('b')   # power lost here
for i in range(4):
    c.finish('x%d' % i, 'rejected', 'busy')
""", tmp_path)
    out = mp("""
import json
from edge.cmdlog import CommandLog
c = CommandLog('cmds.json', keep=4)
print(json.dumps([c.get('a'), c.get('x3'), c.interrupted(), [e[0] for e in c.entries]]))
""", tmp_path)
    a, x3, interrupted, ids = out[0]
    assert a is None  # oldest finished id trimmed first
    assert x3 == ["x3", "rejected", "busy", None]
    assert interrupted == ["b"]  # a started id is never trimmed away
    assert ids == ["b", "x1", "x2", "x3"]


def test_command_log_keeps_outcome_across_boot(tmp_path):
    mp("""
from edge.cmdlog import CommandLog
c = CommandLog('cmds.json')
c.start('a'); c.finish('a', 'done', None, {'times': 2})
""", tmp_path)
    out = mp("""
import json
from edge.cmdlog import CommandLog
print(json.dumps(CommandLog('cmds.json').get('a')))
""", tmp_path)
    assert out[0] == ["a", "done", None, {"times": 2}]
