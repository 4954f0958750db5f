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
        for rec in self._records():
            cid = rec[0]
            if cid in self.ids:
                continue
            self.ids.append(cid)
            self.st.append(_status(rec[1]))

    def _records(self):
        """The records on flash, oldest first (a generator: one line in RAM at a time)."""
        for p in (self.path, self.path + ".tmp"):
            try:
                f = open(p)
            except OSError:
                continue
            with f:
                for line in f:
                    try:  # a torn last line does not parse (the old format had no newline)
                        rec = json.loads(line)
                    except ValueError:
                        continue
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
            self.ids.append(cid)
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
        trimmed ids, then rename. Lines are matched by their id prefix, not parsed: a save
        makes no garbage per record beyond reading the line."""
        tmp = self.path + ".tmp"
        if not fsutil.exists(self.path) and fsutil.exists(tmp):
            fsutil.replace(tmp, self.path)  # a cut between remove and rename left only tmp
        key = _key(e[0])
        drop = [_key(g) for g in gone]
        written = e[0] in gone  # trimmed at once (only when `keep` ids are all started)
        with open(tmp, "w") as out:
            for line in self._lines():
                if line.startswith(key):
                    if written:
                        continue  # trimmed, or a duplicate line of this id: keep one
                    written = True
                    line = json.dumps(e) + "\n"
                else:
                    for k in drop:
                        if line.startswith(k):
                            line = None
                            break
                    if line is None:
                        continue  # trimmed
                out.write(line)
            if not written:
                json.dump(e, out)
                out.write("\n")
        fsutil.replace(tmp, self.path)

    def _lines(self):
        """The file's record lines, oldest first; a torn (or blank) line is skipped and a line
        in the old format (every record in one list) comes back as one line per record."""
        try:
            f = open(self.path)
        except OSError:
            return
        with f:
            for line in f:
                if line.startswith("[["):
                    try:
                        recs = json.loads(line)
                    except ValueError:
                        continue
                    for r in recs:
                        if isinstance(r, list) and len(r) == 4:
                            yield json.dumps(r) + "\n"
                elif line.endswith("]\n"):
                    yield line


def _key(cid):
    # how a record line of `cid` starts (json.dump writes the id first)
    return "[" + json.dumps(cid) + ","
