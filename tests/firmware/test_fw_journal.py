"""Event journal and command log, running in the real MicroPython interpreter."""
import json

from tests.support.micropython import run_micropython


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
print(json.dumps([c.get('a'), c.get('x3'), c.interrupted(), c.ids]))
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


def test_command_log_compact_format_round_trip_and_torn_line(tmp_path):
    # one JSON record per line on flash; RAM holds only ids and statuses
    mp("""
from edge.cmdlog import CommandLog
c = CommandLog('cmds.json')
c.start('a'); c.finish('a', 'done', None, {'n': [1, 2]})
c.finish('r', 'rejected', 'busy')
c.start('s')
""", tmp_path)
    lines = (tmp_path / "cmds.json").read_text().splitlines()
    assert [json.loads(l) for l in lines] == [["a", "done", None, {"n": [1, 2]}],
                                              ["r", "rejected", "busy", None], ["s", "started", None, None]]
    # a power cut mid-write of the tmp file never touches the file itself; a torn last line
    # (or garbage) in it is skipped, the whole records before it are kept
    with open(tmp_path / "cmds.json", "a") as f:
        f.write('["t", "do')
    out = mp("""
import json
from edge.cmdlog import CommandLog
c = CommandLog('cmds.json')
print(json.dumps([c.get('a'), c.get('r'), c.get('t'), c.interrupted(), c.ids]))
c.finish('s', 'failed', 'interrupted')
print(json.dumps(CommandLog('cmds.json').get('s')))
""", tmp_path)
    assert out[0] == [["a", "done", None, {"n": [1, 2]}], ["r", "rejected", "busy", None], None, ["s"],
                      ["a", "r", "s"]]
    assert out[1] == ["s", "failed", "interrupted", None]


def test_command_log_reads_the_old_format_and_a_lone_tmp_file(tmp_path):
    # before the compact format the file was one JSON list; a cut between remove and rename
    # on FAT leaves only the tmp file
    (tmp_path / "cmds.json.tmp").write_text(json.dumps([["a", "done", None, {"x": 1}], ["b", "started", None, None]]))
    out = mp("""
import json
from edge.cmdlog import CommandLog
c = CommandLog('cmds.json')
print(json.dumps([c.get('a'), c.interrupted()]))
c.finish('b', 'failed', 'interrupted')
c2 = CommandLog('cmds.json')
print(json.dumps([c2.get('a'), c2.get('b'), c2.ids]))
""", tmp_path)
    assert out[0] == [["a", "done", None, {"x": 1}], ["b"]]
    assert out[1] == [["a", "done", None, {"x": 1}], ["b", "failed", "interrupted", None], ["a", "b"]]
    assert not (tmp_path / "cmds.json.tmp").exists()


def test_command_log_save_matches_whole_ids_by_prefix(tmp_path):
    # a save copies the other lines without parsing them, matching each by its id prefix:
    # ids that are prefixes of each other, quotes, commas and UTF-8 must not be confused
    ids = ["a", "ab", 'a"b', "a,", "caf\u00e9", "a\\"]
    out = mp("""
import json
from edge.cmdlog import CommandLog
ids = %s
c = CommandLog('cmds.json', keep=4)
for cid in ids:
    c.start(cid)
for cid in ids:
    c.finish(cid, 'done', None, {'id': cid, 'long': cid * 150})  # lines longer than a copy piece
c.finish('z', 'rejected', 'busy')   # trims the two oldest finished ids
print(json.dumps(c.ids))
c2 = CommandLog('cmds.json', keep=4)
print(json.dumps([c2.get(cid) for cid in ids + ['z']]))
""" % json.dumps(ids), tmp_path)  # noqa: UP031 - MicroPython source full of braces
    assert out[0] == ids[3:] + ["z"]
    assert out[1] == [None, None, None] + [[cid, "done", None, {"id": cid, "long": cid * 150}] for cid in ids[3:]] + \
        [["z", "rejected", "busy", None]]
    lines = (tmp_path / "cmds.json").read_text(encoding="utf-8").splitlines()
    assert [json.loads(l)[0] for l in lines] == ids[3:] + ["z"]  # one line per id, in order


def test_journal_recent_entries_by_offset_match_a_full_scan(tmp_path):
    # recent entries are found by their file offset (no payload copy in RAM): same answer as
    # reading the log from the start, with multi-byte UTF-8 payloads and across a compaction
    out = mp("""
import json
from edge.journal import Journal
j = Journal('d', 50)
for i in range(20):
    j.append(j.next, '{"n":%d,"t":"caf\\u00e9 \\u2713"}' % i)
print(json.dumps(j.entries(0, 50)))       # older than the offsets: full scan
print(json.dumps(j.entries(9, 3)))        # by offset
j.ack(20)                                 # all acked: compacted, offsets reset
for i in range(3):
    j.append(j.next, '{"m":%d}' % i)
print(json.dumps(j.entries(20, 5)))
print(json.dumps(Journal('d', 50).entries(21, 5)))  # after a reboot: no offsets, a scan
j = Journal('d2', 50)
for i in range(40):
    j.append(j.next, '{"k":%d,"t":"\u00e9"}' % i)
j = Journal('d2', 50)                     # rebooted: no offsets; one at a time uses the hint
one = []
while True:
    e = j.entries(one[-1][0] if one else 0, 1)
    if not e:
        break
    one += e
print(json.dumps([one, j.entries(0, 50)]))
""", tmp_path)
    full, window, after, reboot, (one, scan) = out
    assert len(one) == 40 and one == scan
    assert [e[0] for e in full] == list(range(1, 21))
    assert json.loads(full[3][1]) == {"n": 3, "t": "café ✓"}
    assert window == [[s, full[s - 1][1]] for s in (10, 11, 12)]
    assert after == [[21, '{"m":0}'], [22, '{"m":1}'], [23, '{"m":2}']]
    assert reboot == after[1:]


def test_a_power_cut_at_any_step_of_a_compaction_never_reuses_a_published_seq(tmp_path):
    """Everything acked: the log is compacted (rewritten empty) and the metadata saved. A cut
    between those two steps left an empty log beside a journal.json whose `next` predated the
    last appends, so the next boot gave the next event a seq the gateway already had (CI:
    `test_power_cut_mid_burst_replays_the_journal_once_and_in_order`, "journal rolled back ...
    reason=behind"). The cut is made at each file step of the compaction in turn."""
    out = []
    for cut in ("save_json", "replace"):
        d = f"d-{cut}"
        out += mp(f"""
import json
from edge import fsutil
from edge.journal import Journal
j = Journal('{d}', 50)
for i in range(4):
    j.append(j.next, '{{"n":%d}}' % i)
j.ack(2)                       # metadata saved with next = 5
j.append(j.next, '{{"n":4}}')  # seq 5, 6: in the log only
j.append(j.next, '{{"n":5}}')
class Cut(Exception):
    pass
def cut(*a):
    raise Cut()
setattr(fsutil, '{cut}', cut)
try:
    j.ack(6)                   # all acked: compaction
except Cut:
    pass
""", tmp_path)
        out += mp(f"""
import json
from edge.journal import Journal
j = Journal('{d}', 50)
print(json.dumps({{"cut": '{cut}', "first": j.first, "next": j.next, "len": len(j)}}))
""", tmp_path)
    for o in out:
        # seqs 1..6 were published (and acked): the next event is 7, whatever the cut
        # (3..6 replayed again if the cut came before the ack was saved: the gateway has them)
        assert o["next"] == 7 and (o["first"], o["len"]) in ((3, 4), (7, 0)), o
    assert len(out) == 2
