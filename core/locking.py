"""Locks on the state folder's `.lock` files: filelock in the CLI, a bare ``fcntl.flock`` in the daemon.

Why two: ``import filelock`` (4.x) brings inspect, secrets/hashlib/OpenSSL, pathlib and urllib.parse,
about 9 MB that a long-lived idle daemon would carry only to lock a file once per poll. filelock's
UnixFileLock takes ``flock(fd, LOCK_EX | LOCK_NB)`` on the lock file itself, so the daemon's FlockLock
and a CLI's FileLock on the same path exclude each other, and the kernel frees either when its
process dies. Lock files are never deleted: two processes could then lock two different inodes.
"""
from __future__ import annotations

import errno
import fcntl
import os
import time
from typing import TYPE_CHECKING, Any, Optional, Tuple, Union

if TYPE_CHECKING:
    from filelock import FileLock

#: How often a waiting lock tries again (filelock's default poll interval).
POLL_INTERVAL = 0.05
#: The errnos filelock counts as "held by someone else" after a nonblocking flock.
_CONTENTION = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES})

_lean = False


def use_lean_locks() -> None:
    """The daemon calls this first: from then on file_lock() in this process never imports filelock."""
    global _lean
    _lean = True


def file_lock(path: str, timeout: float) -> Union[FlockLock, FileLock]:
    """A fresh, unacquired lock on `path` (never shared across fork). Use it in `with` or acquire()/release().

    `timeout` in seconds: 0 tries once, a negative one waits forever. Failing to get the lock in time
    raises a TimeoutError (an OSError): filelock.Timeout or LockTimeout.
    """
    if _lean:
        return FlockLock(path, timeout)
    from filelock import FileLock

    return FileLock(path, timeout=timeout)


class LockTimeout(TimeoutError):
    """Another process held the lock for the whole timeout."""


class FlockLock:
    """filelock.UnixFileLock's lock without filelock; not re-entrant (no call site nests a lock)."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._fd: Optional[int] = None
        self._delegate: Any = None  # a filelock.FileLock, where the filesystem has no flock

    def acquire(self) -> None:
        if self._fd is not None or self._delegate is not None:
            raise RuntimeError(f"lock {self.path} is already held by this object")
        deadline = time.monotonic() + self.timeout
        while True:
            fd, created = _open_lock_file(self.path)
            try:
                locked = _try_flock(fd)
            except OSError as exc:
                if exc.errno != errno.ENOSYS:
                    os.close(fd)
                    raise
                self._delegate_to_filelock(fd, created, deadline)
                return
            except BaseException:
                os.close(fd)
                raise
            if locked and os.fstat(fd).st_nlink:
                self._fd = fd
                return
            os.close(fd)  # held elsewhere, or our file was deleted meanwhile: try the file now at the path
            remaining = deadline - time.monotonic()
            if self.timeout >= 0 and remaining <= 0:
                raise LockTimeout(f"lock {self.path} is held by another process")
            time.sleep(POLL_INTERVAL if self.timeout < 0 else min(POLL_INTERVAL, remaining))

    def _delegate_to_filelock(self, fd: int, created: bool, deadline: float) -> None:
        """No flock on this filesystem (e.g. Lustre without -o flock): let filelock fall back to its
        soft lock, as the CLI's FileLock does, after removing the placeholder file we just created
        (a soft lock reads an existing file as held)."""
        try:
            if created and os.path.samestat(os.lstat(self.path), os.fstat(fd)):
                os.unlink(self.path)
        finally:
            os.close(fd)
        from filelock import FileLock

        remaining = -1.0 if self.timeout < 0 else max(deadline - time.monotonic(), 0.0)
        delegate = FileLock(self.path, timeout=remaining)
        delegate.acquire()
        self._delegate = delegate

    def release(self) -> None:
        """Unlock and close; releasing a lock that is not held does nothing (as with filelock)."""
        if self._delegate is not None:
            delegate, self._delegate = self._delegate, None
            delegate.release()
            return
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)  # closing alone would free the lock too

    def __enter__(self) -> FlockLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _open_lock_file(path: str) -> Tuple[int, bool]:
    """(fd, whether this call created the file). Mode 0o666 and no O_TRUNC, like filelock: umask decides."""
    flags = os.O_RDWR | os.O_NOFOLLOW
    while True:
        try:
            return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666), True
        except FileExistsError:
            pass
        try:
            return os.open(path, flags), False
        except FileNotFoundError:
            continue  # deleted between the two opens: create it


def _try_flock(fd: int) -> bool:
    """One nonblocking exclusive flock: True if taken, False if another process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in _CONTENTION:
            return False
        raise
    return True


def filelock_version() -> str:
    """The installed filelock's version (importing it proves the CLI's locks will work): for `jobmon doctor`."""
    import filelock

    return str(filelock.__version__)
