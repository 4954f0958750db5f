"""The real MicroPython unix port as a board on a serial port (a pty), for mpremote.

The unix port's REPL is MicroPython's own (shared/runtime/pyexec.c): friendly REPL, Ctrl-A
raw REPL and raw-paste with flow control, as on an ESP32 or a Pico. `UnixBoard(root)` runs
`micropython -i` with its stdin/stdout on the master side of a pty and serves the slave's
name as `port`; mpremote (the CLI or its SerialTransport) opens that like a USB serial port.
Before the REPL starts, a boot script mounts the board's `/` and sets `sys.path` to a board's
`['', '.frozen', '/lib']`: with ``fs="posix"`` `root` is a host directory (`os.VfsPosix`: what
mpremote writes to `/edge/boot.py` lands in `root/edge/boot.py`); with ``fs="lfs2"`` `root` is
a flash image file formatted as littlefs v2 (`os.VfsLfs2` on a block device, the filesystem of
ESP32 and RP2 boards: its rename, its paths and its errors), seen only through the board.

What it is not: no `machine`, no reset (Ctrl-D at the friendly REPL ends the process), no
`main.py` at boot, and the filesystem is the host's (POSIX rename, not littlefs). The raw REPL,
the code mpremote sends and the interpreter that runs it are the real thing; the boot lines
and resets of a board are `hil.pi.fakeboard.FakeBoard`'s part.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import time
import tty
from pathlib import Path
from typing import Self

from hil.sim.firmware import micropython_binary

BOOT = """\
import os, sys


class FileBlockDev:  # MicroPython's extended block protocol, on an image file of the host
    def __init__(self, path, block_size=4096):
        self.f = open(path, "r+b")
        self.bs = block_size
        self.f.seek(0, 2)
        self.n = self.f.tell() // block_size

    def readblocks(self, block, buf, offset=0):
        self.f.seek(block * self.bs + offset)
        self.f.readinto(buf)

    def writeblocks(self, block, buf, offset=0):
        self.f.seek(block * self.bs + offset)
        self.f.write(buf)
        self.f.flush()

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.n
        if op == 5:  # block size
            return self.bs
        if op == 6:  # erase: nothing to do on a file
            return 0


fs, where = sys.argv[1], sys.argv[2]
if fs == "posix":
    os.umount("/")
    os.mount(os.VfsPosix(where), "/")
else:
    bdev = FileBlockDev(where)  # opened while the host's filesystem is still mounted
    os.umount("/")
    try:
        os.mount(os.VfsLfs2(bdev), "/")
    except OSError:  # a blank image: format it, as a board does on first boot
        os.VfsLfs2.mkfs(bdev)
        os.mount(os.VfsLfs2(bdev), "/")
os.chdir("/")
sys.path[:] = ["", ".frozen", "/lib"]
"""


class UnixBoard:
    def __init__(self, root: str | Path, heapsize: str = "256K", fs: str = "posix",
                 flash_kb: int = 1024):
        self.root = Path(root)
        self.fs = fs
        self.heapsize = heapsize
        if fs == "posix":
            self.root.mkdir(parents=True, exist_ok=True)
        elif fs == "lfs2":  # `root` is the flash image; a new one is blank (0xff, as erased flash)
            if not self.root.exists():
                self.root.parent.mkdir(parents=True, exist_ok=True)
                self.root.write_bytes(b"\xff" * (flash_kb * 1024))
        else:
            raise ValueError(f"fs must be 'posix' or 'lfs2', not {fs!r}")
        self.proc: subprocess.Popen | None = None
        self.master = self.slave = -1
        self.port = ""

    def start(self) -> UnixBoard:
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        fd, boot = tempfile.mkstemp(suffix=".py", prefix="unixboard-")
        os.write(fd, BOOT.encode())
        os.close(fd)
        self._boot = boot
        self.proc = subprocess.Popen(
            [micropython_binary(), "-X", f"heapsize={self.heapsize}", "-i", boot, self.fs, str(self.root)],
            stdin=self.master, stdout=self.master, stderr=self.master, close_fds=True)
        # the REPL is up when the banner has been written; wait for it, then drop it
        deadline = time.monotonic() + 10
        seen = b""
        while b">>> " not in seen:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"micropython REPL did not start: {seen[-300:]!r}")
            import select

            r, _, _ = select.select([self.slave], [], [], 0.1)
            if r:
                seen += os.read(self.slave, 4096)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None
        for fd in (self.master, self.slave):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.master = self.slave = -1
        if getattr(self, "_boot", None):
            Path(self._boot).unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
