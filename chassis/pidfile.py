"""The pid file: written when ready, atomically, and locked for the life of the process.

The lock is the liveness test (a pid alone is fooled by pid reuse): an ``flock`` on the
pid file itself. At start-up the existing file (or a new empty one) is opened and
locked, so a second chassis fails at once with the pid it finds there, and a file
whose lock is free is stale and gets replaced. When the process is ready, the pid is
written to a temporary file in the same directory, which is locked too, and renamed
over the path: readers see the old content or the new, never half of it, and the lock
moves with the new inode. A starter that opened the old inode notices the rename
(inode differs) and tries again. The lock is held by the open file description, so
forked workers share it: an orphaned worker still holding a port keeps a second
instance from starting. The file is removed on clean exit if it is still ours.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from chassis.errors import ChassisError


class PidFile:
    def __init__(self, path: Path, owner: tuple[int, int] | None = None) -> None:
        self.path = path
        self.owner = owner
        self.fd: int | None = None
        self.written = False
        #: Where the file was before :meth:`set_aside` (an upgrade in progress).
        self.set_aside_from: Path | None = None

    def acquire(self) -> None:
        """Lock the path now (before forking), or fail naming the running chassis."""
        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise ChassisError(f"cannot open pid file {self.path}: {e.strerror} (check "
                                   "--pid-file and the directory's permissions)") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                content = _read_all(fd)
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise ChassisError(f"cannot lock pid file {self.path}: {e.strerror}") from None
                who = f"pid {content}" if content.isdigit() else "a chassis that is starting up"
                raise ChassisError(
                    f"pid file {self.path} is locked by a running chassis ({who}); stop it "
                    "first or choose another --pid-file"
                ) from None
            if _same_file(fd, self.path):
                self.fd = fd
                return
            os.close(fd)  # renamed or removed while we waited: look again
        raise ChassisError(f"pid file {self.path} keeps changing; is another chassis starting?")

    def write(self, pid: int) -> None:
        """Publish ``pid``: temp file, lock, chmod 0644, chown, rename over the path."""
        assert self.fd is not None, "acquire() first"
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.write(fd, f"{pid}\n".encode())
                os.fchmod(fd, 0o644)
                if self.owner is not None and os.geteuid() == 0:
                    os.fchown(fd, *self.owner)
                os.fsync(fd)
                os.rename(tmp, self.path)
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as e:
            raise ChassisError(f"cannot write pid file {self.path}: {e.strerror}") from None
        old, self.fd = self.fd, fd
        os.close(old)
        self.written = True

    def set_aside(self) -> Path | None:
        """An upgrade begins (SIGUSR2): rename our file to ``PATH.oldbin`` (nginx's name),
        so the new chassis can lock and write ``PATH``; returns the new name (None when
        the file was never written or is no longer ours).

        The lock moves with the inode: :meth:`release` then removes ``PATH.oldbin``, never
        the new chassis' file.
        """
        if self.fd is None or not self.written or not _same_file(self.fd, self.path):
            return None
        aside = self.path.with_name(self.path.name + ".oldbin")
        try:
            os.rename(self.path, aside)
        except OSError as e:
            raise ChassisError(f"cannot rename pid file {self.path} to {aside.name}: "
                               f"{e.strerror}") from None
        self.set_aside_from = self.path
        self.path = aside
        return aside

    def restore(self) -> None:
        """The upgrade failed: ``PATH.oldbin`` goes back to ``PATH`` unless someone (a new
        chassis still running) holds ``PATH``."""
        original = self.set_aside_from
        if original is None or self.fd is None or not _same_file(self.fd, self.path):
            return
        try:
            fd = os.open(original, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = None
        except OSError:
            return
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return  # locked: a chassis holds it
            finally:
                os.close(fd)
        with contextlib.suppress(OSError):
            os.rename(self.path, original)
            self.path = original
            self.set_aside_from = None

    def release(self) -> None:
        """Remove the file if it is still ours, and drop the lock."""
        if self.fd is None:
            return
        if _same_file(self.fd, self.path):
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        os.close(self.fd)
        self.fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    fst = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)


def _read_all(fd: int) -> str:
    try:
        return os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
