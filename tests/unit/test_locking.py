"""core/locking.py: the daemon's flock and the CLI's filelock exclude each other, across processes."""
from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import filelock
import pytest

from core import locking
from core.locking import FlockLock, LockTimeout, file_lock

ROOT = Path(__file__).resolve().parents[2]

HOLDER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[3])
    kind, path = sys.argv[1], sys.argv[2]
    if kind == "filelock":
        from filelock import FileLock
        lock = FileLock(path, timeout=10)
    else:
        from core.locking import FlockLock
        lock = FlockLock(path, 10)
    lock.acquire()
    print("held", flush=True)
    sys.stdin.readline()
    lock.release()
    print("released", flush=True)
""")

KINDS = ("filelock", "lean")


def make_lock(kind: str, path: str, timeout: float):
    return filelock.FileLock(path, timeout=timeout) if kind == "filelock" else FlockLock(path, timeout)


@contextmanager
def held_elsewhere(kind: str, path: str) -> Iterator[subprocess.Popen]:
    """Another process holds `path` with filelock or the lean lock until it is told to release (a line on stdin)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, kind, path, str(ROOT)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        yield holder
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(10)


def tell_to_release(holder: subprocess.Popen) -> None:
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.stdout.readline() == "released\n"


def timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


@pytest.mark.parametrize("holder_kind", KINDS)
@pytest.mark.parametrize("waiter_kind", KINDS)
def test_each_kind_of_lock_excludes_the_other(tmp_path, holder_kind, waiter_kind):
    path = str(tmp_path / "job.lock")
    with held_elsewhere(holder_kind, path) as holder:
        waiter = make_lock(waiter_kind, path, 0.3)
        with pytest.raises(TimeoutError) as refused:
            waiter.acquire()
        assert isinstance(refused.value, OSError)  # call sites catch OSError
        if waiter_kind == "lean":
            assert isinstance(refused.value, LockTimeout)
        tell_to_release(holder)
        later = make_lock(waiter_kind, path, 5)
        later.acquire()
        later.release()


def test_the_lean_lock_waits_out_its_timeout_before_giving_up(tmp_path):
    path = str(tmp_path / "job.lock")
    with held_elsewhere("filelock", path):
        elapsed = timed(lambda: pytest.raises(LockTimeout, FlockLock(path, 0.4).acquire))
    assert 0.4 <= elapsed < 3


@pytest.mark.parametrize("holder_kind", KINDS)
def test_timeout_zero_tries_once_and_answers_at_once(tmp_path, holder_kind):
    """monitor_lock uses timeout=0 as "does a live daemon hold this job?"."""
    path = str(tmp_path / "job.monitor.lock")
    with held_elsewhere(holder_kind, path):
        elapsed = timed(lambda: pytest.raises(LockTimeout, FlockLock(path, 0).acquire))
        assert elapsed < 0.5
    free = FlockLock(path, 0)
    assert timed(free.acquire) < 0.5
    free.release()


def test_a_negative_timeout_waits_until_the_holder_lets_go(tmp_path):
    path = str(tmp_path / "job.lock")
    with held_elsewhere("filelock", path) as holder:
        threading.Timer(0.5, tell_to_release, [holder]).start()
        waiter = FlockLock(path, -1)
        assert timed(waiter.acquire) >= 0.4
        waiter.release()


@pytest.mark.parametrize("waiter_kind", KINDS)
def test_a_killed_lean_holder_frees_the_lock(tmp_path, waiter_kind):
    path = str(tmp_path / "job.lock")
    with held_elsewhere("lean", path) as holder:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        waiter = make_lock(waiter_kind, path, 5)
        waiter.acquire()
        waiter.release()


def test_release_unlocks_but_keeps_the_lock_file(tmp_path):
    path = str(tmp_path / "job.lock")
    with FlockLock(path, 0):
        assert os.path.exists(path)
    assert os.path.exists(path)
    other = filelock.FileLock(path, timeout=0)
    other.acquire()
    other.release()


def test_releasing_an_unheld_lock_does_nothing_and_a_second_acquire_is_refused(tmp_path):
    lock = FlockLock(str(tmp_path / "job.lock"), 0)
    lock.release()
    lock.acquire()
    with pytest.raises(RuntimeError, match="already held"):
        lock.acquire()
    lock.release()
    lock.release()


def test_an_unusable_folder_raises_an_oserror_not_a_timeout(tmp_path):
    with pytest.raises(OSError) as failure:
        FlockLock(str(tmp_path / "missing" / "job.lock"), 0).acquire()
    assert not isinstance(failure.value, TimeoutError)


def test_without_flock_the_lean_lock_falls_back_to_filelock_soft_lock_like_the_cli(tmp_path, monkeypatch):
    """Lustre without -o flock answers ENOSYS: filelock then uses a marker file, and so must the daemon."""
    def no_flock(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    path = str(tmp_path / "job.lock")
    first = FlockLock(path, 0)
    with pytest.warns(UserWarning, match="flock not supported"):
        first.acquire()
    with pytest.warns(UserWarning, match="flock not supported"), pytest.raises(TimeoutError):
        FlockLock(path, 0).acquire()  # the marker is someone else's file: left alone, read as held
    first.release()
    with pytest.warns(UserWarning, match="flock not supported"):
        with FlockLock(path, 0):
            pass


def test_file_lock_gives_filelock_to_the_cli_and_flock_to_the_daemon(tmp_path, monkeypatch):
    path = str(tmp_path / "job.lock")
    monkeypatch.setattr(locking, "_lean", False)
    assert isinstance(file_lock(path, 1), filelock.FileLock)
    locking.use_lean_locks()
    lock = file_lock(path, 1)
    assert isinstance(lock, FlockLock) and lock.timeout == 1
