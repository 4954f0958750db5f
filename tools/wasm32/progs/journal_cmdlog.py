# The event journal and the command log across a reboot, with 13-digit millisecond timestamps
# (long ints on a 32-bit port). `journal_cmdlog.py boot1` then `boot2` on the same flash (a
# power cut in between may tear the journal's last line). Prints JSON lines; runs in the unix
# port and the 32-bit WebAssembly lane alike (tests/firmware/test_wasm32.py, bench/wasm32_heap.py).
import gc
import json
import sys

from edge.cmdlog import CommandLog
from edge.journal import Journal

KEEP = []  # what a device keeps: measured after the program (bench/wasm32_heap.py)
T0 = 1765000000000  # 2025-12-06, unix ms: > 2**30, a long int on 32-bit


def boot1():
    j = Journal("j", 10)
    for i in range(25):
        j.append(j.next, {"type": "tag.placed", "ts": T0 + i * 1000, "seq": j.next})
    j.ack(18)  # drops 16..18 (1..15 already dropped by the ring)
    c = CommandLog("cmd.log", keep=4)
    c.start("c1")
    c.finish("c1", "done", None, {"at": T0 + 5})
    c1 = c.get("c1")  # a repeat of c1 now answers from the log
    c.start("c2")  # power cut before it finishes
    for k in range(3, 8):
        c.start("c%d" % k)
        c.finish("c%d" % k, "rejected" if k % 2 else "done", "busy" if k % 2 else None, None)
    print(json.dumps({"boot": 1, "journal": [j.first, j.next, j.dropped, len(j)],
                      "cmd_ids": c.ids, "c1": c1}))
    KEEP.extend((j, c))


def boot2():
    j = Journal("j", 10)
    e = j.entries(0, 100)
    c = CommandLog("cmd.log", keep=4)
    again = c.get("c7")
    print(json.dumps({"boot": 2, "journal": [j.first, j.next, j.dropped, len(j)],
                      "seqs": [s for s, _ in e], "ts": [json.loads(p)["ts"] for _, p in e],
                      "ts_sum": sum(json.loads(p)["ts"] for _, p in e),
                      "cmd_ids": c.ids, "interrupted": c.interrupted(), "c7": again,
                      "c1_trimmed": c.get("c1")}))
    j.ack(j.next - 1)  # everything acked: the file is compacted to nothing
    j.append(j.next, '{"n":1}')
    print(json.dumps({"after_compact": [j.first, j.next, len(j), j.entries(0, 10)]}))
    KEEP.extend((j, c))


{"boot1": boot1, "boot2": boot2}[sys.argv[1]]()
gc.collect()
print(json.dumps({"heap_alloc": gc.mem_alloc()}))  # 64-bit unix; see KEEP
