# Command ids the device has started or finished, kept on flash so a command is applied at
# most once, across reboots too (docs/protocol.md, "At most once per id").
#
# Memory: RAM holds only the ids and their status (an interned string); reason and result live
# on flash, one JSON record `[id, status, reason, result]` per line, oldest first, and are read
# back only when a duplicate id arrives. Every save rewrites the file to a tmp file and renames
# it over the old one (fsutil.replace), so a power cut leaves the old or the new file whole; a
# torn or unreadable line is skipped at boot. A file in the old format (one JSON list of
# records on one line) is read the same way.
import json

from edge import fsutil

STATUSES = ("started", "done", "rejected", "failed")


def _status(s):
    for k in STATUSES:  # the literal: one shared object instead of a string per entry
        if k == s:
            return k
    return s


class CommandLog:
    def __init__(self, path, keep=32):
        self.path = path
        self.keep = keep
        self.ids = []  # oldest first, in the order of the file's lines
        self.st = []  # status of each id
        self._clean = True  # every line a whole record (False: a torn line, the old format)
        for rec in self._records():
            cid = rec[0]
            if cid in self.ids:
                continue
            self.ids.append(cid)
            self.st.append(_status(rec[1]))

    def _records(self, paths=None):
        """The records on flash, oldest first (a generator: one line in RAM at a time)."""
        for p in paths or (self.path, self.path + ".tmp"):
            try:
                f = open(p)
            except OSError:
                continue
            with f:
                for line in f:
                    try:  # a torn last line does not parse (the old format had no newline)
                        rec = json.loads(line)
                    except ValueError:
                        self._clean = False
                        continue
                    if not isinstance(rec, list) or len(rec) != 4 or not line.endswith("]\n"):
                        self._clean = False  # the next save rewrites record by record
                    if not isinstance(rec, list) or not rec:
                        continue
                    if isinstance(rec[0], list):  # old format: every record in one list
                        for r in rec:
                            if isinstance(r, list) and len(r) == 4:
                                yield r
                    elif len(rec) == 4:
                        yield rec
            return

    def get(self, cid):
        """[id, status, reason, result], or None for an id never seen (or trimmed)."""
        try:
            k = self.ids.index(cid)
        except ValueError:
            return None
        if self.st[k] == "started":
            return [cid, "started", None, None]
        for rec in self._records():
            if rec[0] == cid:
                return rec
        return [cid, self.st[k], None, None]  # unreachable unless the file was lost

    def start(self, cid):
        self._put(cid, "started", None, None)

    def finish(self, cid, status, reason=None, result=None):
        return self._put(cid, status, reason, result)

    def interrupted(self):
        """Ids started but never finished (the device lost power mid-actuation)."""
        return [self.ids[k] for k in range(len(self.ids)) if self.st[k] == "started"]

    def _put(self, cid, status, reason, result):
        e = [cid, status, reason, result]
        try:
            k = self.ids.index(cid)
            self.st[k] = _status(status)
        except ValueError:
            self.ids.append(fsutil.settle(cid))
            self.st.append(_status(status))
        self._save(e, self._trim())
        return e

    def _trim(self):
        # drop the oldest finished ids; a started one must stay until it is finished
        gone = []
        i = 0
        while len(self.ids) > self.keep and i < len(self.ids):
            if self.st[i] == "started":
                i += 1
            else:
                gone.append(self.ids.pop(i))
                self.st.pop(i)
        return gone

    def _save(self, e, gone):
        """Copy the file to a tmp file, `e` in its record's place (or last), without the
        trimmed ids, then rename. A clean file is copied in pieces of at most a few hundred
        bytes, each line matched by its id prefix, never parsed (a `status` result line can
        be long: no line is held whole in RAM); a file with a torn or unreadable line, or in
        the old format, is rewritten record by record once."""
        tmp = self.path + ".tmp"
        if not fsutil.exists(self.path) and fsutil.exists(tmp):
            fsutil.replace(tmp, self.path)  # a cut between remove and rename left only tmp
        cid = e[0]
        written = cid in gone  # trimmed at once (only when `keep` ids are all started)
        with open(tmp, "w") as out:
            if self._clean:
                written = self._copy(out, e, gone, written)
            else:
                for rec in self._records((self.path,)):
                    if rec[0] == cid:
                        if written:
                            continue
                        rec = e
                        written = True
                    elif rec[0] not in self.ids:
                        continue  # trimmed
                    json.dump(rec, out)
                    out.write("\n")
            if not written:
                json.dump(e, out)
                out.write("\n")
        fsutil.replace(tmp, self.path)
        self._clean = True

    def _copy(self, out, e, gone, written):
        key = _key(e[0])  # bytes: pieces of a UTF-8 line are read as bytes
        drop = [_key(g) for g in gone]
        lim = 128
        for k in drop + [key]:
            lim = max(lim, len(k))  # a line's first piece holds any id's prefix
        try:
            f = open(self.path, "rb")
        except OSError:
            return written
        with f:
            start = True
            keep = True
            while True:
                piece = f.readline(lim)
                if not piece:
                    return written
                if start:
                    keep = not piece.startswith(key)
                    if not keep and not written:
                        json.dump(e, out)
                        out.write("\n")
                        written = True
                    for k in drop:
                        if piece.startswith(k):
                            keep = False  # trimmed
                if keep:
                    out.write(piece)
                start = piece.endswith(b"\n")


def _key(cid):
    # how a record line of `cid` starts (json.dump writes the id first)
    return ("[" + json.dumps(cid) + ",").encode()
