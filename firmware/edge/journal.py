# Event journal: un-acknowledged events on flash, replayed in order after an outage or reboot.
#
# journal.log holds lines "<seq> <payload>\n" appended before each publish; journal.json holds
# the epoch, the first un-acknowledged seq and the next seq. An ack drops entries <= upto; the
# file is rewritten (compacted) when everything is acked or it holds too many dead lines. The
# ring is bounded: past `max_events` un-acked entries the oldest is dropped and counted.
import json
import os
from binascii import hexlify

from edge import fsutil


class Journal:
    CACHE = 16  # file offsets of the recent entries: the hot path seeks instead of scanning

    def __init__(self, directory, max_events=200):
        self.dir = directory
        self.log_path = directory + "/journal.log"
        self.meta_path = directory + "/journal.json"
        self.max_events = max_events
        fsutil.makedirs(directory)
        meta = fsutil.load_json(self.meta_path)
        if not meta or "epoch" not in meta:
            meta = {"epoch": hexlify(os.urandom(4)).decode(), "first": 1, "next": 1, "dropped": 0}
        self.epoch = meta["epoch"]
        self.first = meta["first"]
        self.next = meta["next"]
        self.dropped = meta.get("dropped", 0)
        self._c0 = 0  # seq of the entry at _offs[0]
        self._offs = []  # where the recent entries start in the log (small ints: no payload in RAM)
        self._dead = 0  # lines in the file below `first`
        self._hint = None  # (seq, offset): where the entry after the last one read starts
        self._recover()

    # --- boot -----------------------------------------------------------------
    def _recover(self):
        torn = False
        last = self.first - 1
        dead = 0
        try:
            with open(self.log_path) as f:
                for line in f:
                    if not line.endswith("\n"):
                        torn = True  # power cut mid-append: that event was never published
                        break
                    seq = self._seq(line)
                    if seq is None:
                        torn = True
                        continue
                    if seq < self.first:
                        dead += 1
                    if seq > last:
                        last = seq
        except OSError:
            pass
        if last + 1 > self.next:
            self.next = last + 1
        self._dead = dead
        if torn or dead:
            self._compact()
        else:
            self._save_meta()

    @staticmethod
    def _seq(line):
        sp = line.find(" ")
        if sp <= 0:
            return None
        try:
            return int(line[:sp])
        except ValueError:
            return None

    # --- use --------------------------------------------------------------------
    def __len__(self):
        return self.next - self.first

    def append(self, seq, payload):
        """Store an event whose envelope carries `seq` (must be `self.next`): a JSON str, or
        an object json.dump writes straight to the file (no string of it in RAM)."""
        if seq != self.next:
            raise ValueError("journal expects seq %d" % self.next)
        with open(self.log_path, "a") as f:
            f.seek(0, 2)
            pos = f.tell()
            f.write(str(seq))  # in pieces: no copy of the payload in RAM
            f.write(" ")
            if isinstance(payload, str):
                f.write(payload)
            else:
                json.dump(payload, f)
            f.write("\n")
        self.next = seq + 1
        if not self._offs:
            self._c0 = seq
        self._offs.append(pos)
        if len(self._offs) > self.CACHE:
            self._offs.pop(0)
            self._c0 += 1
        if len(self) > self.max_events:
            self.dropped += 1  # the ring is full: oldest event goes, the gateway sees the gap
            self.first += 1
            self._dead += 1
            self._save_meta()
        if self._dead > self.max_events:
            self._compact()

    def ack(self, upto):
        """The gateway has persisted every seq <= upto. Returns True if anything was dropped."""
        if upto < self.first:
            return False
        if upto >= self.next:
            upto = self.next - 1
        self._dead += upto - self.first + 1
        self.first = upto + 1
        if self.first == self.next or self._dead > self.max_events:
            self._compact()
        else:
            self._save_meta()
        return True

    def rebase(self, epoch, upto):
        """The gateway's `new_epoch`: entries <= upto are settled, the rest go on (same seqs)
        in `epoch`. One metadata write after the ack's: a power cut in between leaves the old
        epoch, which the gateway answers with the same `new_epoch` again."""
        self.ack(upto)
        self.epoch = epoch
        self._save_meta()

    def entries(self, after, limit):
        """Up to `limit` journaled (seq, payload) with seq > after, in order."""
        start = max(after + 1, self.first)
        if start >= self.next or limit <= 0:
            return []
        out = []
        with open(self.log_path) as f:
            h = self._hint
            if self._offs and self._c0 <= start < self._c0 + len(self._offs):
                f.seek(self._offs[start - self._c0])
            elif h and h[0] == start:  # the sender reads one entry at a time: no rescans
                f.seek(h[1])
            for line in f:
                seq = self._seq(line)
                if seq is not None and seq >= start:
                    out.append((seq, line[line.find(" ") + 1:-1]))
                    if len(out) >= limit:
                        break
            self._hint = (out[-1][0] + 1, f.tell()) if out else None
        return out

    # --- storage ----------------------------------------------------------------
    def _save_meta(self):
        fsutil.save_json(self.meta_path, {"epoch": self.epoch, "first": self.first,
                                          "next": self.next, "dropped": self.dropped})

    def _compact(self):
        tmp = self.log_path + ".tmp"
        with open(tmp, "w") as out:
            try:
                with open(self.log_path) as f:
                    for line in f:
                        if not line.endswith("\n"):
                            break
                        seq = self._seq(line)
                        if seq is not None and self.first <= seq < self.next:
                            out.write(line)
            except OSError:
                pass
        # the metadata first: a power cut after the log's rewrite and before it left an empty
        # log beside a `next` older than the last appends, and the next boot reused a seq the
        # gateway had (the old log beside the new metadata only holds dead lines: recovered)
        self._save_meta()
        fsutil.replace(tmp, self.log_path)
        self._offs = []  # the offsets moved
        self._hint = None
        self._dead = 0
