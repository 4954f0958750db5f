# Command ids the device has started or finished, kept on flash so a command is applied at
# most once, across reboots too (docs/protocol.md, "At most once per id").
from edge import fsutil


class CommandLog:
    def __init__(self, path, keep=32):
        self.path = path
        self.keep = keep
        self.entries = fsutil.load_json(path, [])  # [[id, status, reason, result], ...] oldest first

    def get(self, cid):
        for e in self.entries:
            if e[0] == cid:
                return e
        return None

    def start(self, cid):
        self.entries.append([cid, "started", None, None])
        self._trim()
        fsutil.save_json(self.path, self.entries)

    def finish(self, cid, status, reason=None, result=None):
        e = self.get(cid)
        if e is None:
            e = [cid, status, reason, result]
            self.entries.append(e)
        else:
            e[1], e[2], e[3] = status, reason, result
        self._trim()
        fsutil.save_json(self.path, self.entries)
        return e

    def interrupted(self):
        """Ids started but never finished (the device lost power mid-actuation)."""
        return [e[0] for e in self.entries if e[1] == "started"]

    def _trim(self):
        # drop the oldest finished ids; a started one must stay until it is finished
        i = 0
        while len(self.entries) > self.keep and i < len(self.entries):
            if self.entries[i][1] == "started":
                i += 1
            else:
                self.entries.pop(i)
