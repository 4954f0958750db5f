# Small file helpers that behave the same on littlefs, FAT and the unix port (and settle()).
import gc
import json
import os


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def makedirs(path):
    cur = "/" if path.startswith("/") else ""
    for part in path.split("/"):
        if not part:
            continue
        cur = cur + part if (not cur or cur.endswith("/")) else cur + "/" + part
        if not exists(cur):
            os.mkdir(cur)


def replace(tmp, path):
    # rename() over an existing file fails on FAT: remove first (a crash between the two
    # leaves only tmp, which load_json() falls back to).
    try:
        os.rename(tmp, path)
    except OSError:
        try:
            os.remove(path)
        except OSError:
            pass
        os.rename(tmp, path)


def save_json(path, obj):
    """Write atomically: tmp file, then rename over the old one."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    replace(tmp, path)


def load_json(path, default=None):
    for p in (path, path + ".tmp"):
        try:
            with open(p) as f:
                return json.load(f)
        except (OSError, ValueError):
            pass
    return default


def settle(s):
    """A copy of str `s` for keeping long, made just after a collection: the allocator takes
    the lowest free hole that fits, so long-lived strings fill old holes instead of pinning
    the middle of the free space (a parsed message's strings sit among its garbage)."""
    gc.collect()
    return s[:]
