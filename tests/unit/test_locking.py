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
from core.daemon.launcher import compile_package, daemon_argv
from core.locking import FlockLock, LockTimeout, file_lock
from core.state.store import JobRecord, StateStore

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


# -- the real daemon ----------------------------------------------------------------------------
JOB = "4242"


def fake_daemon_home(tmp_path: Path) -> dict:
    """A JOBMON_HOME with a RUNNING job, a squeue that counts its calls, and a filelock that tattles."""
    home = tmp_path / "home"
    (home / "state").mkdir(parents=True, mode=0o700)
    (home / "logs").mkdir(mode=0o700)
    (home / "config.json").write_text('{"poll": {"running_interval": 0.5, "pending_interval": 0.5}}')
    StateStore(str(home / "state")).create(JobRecord(job_id=JOB, created_at=time.time() - 5))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "squeue.calls"
    (bin_dir / "squeue").write_text(
        f"#!/bin/sh\necho call >> {calls}\necho 'JOBID|STATE|REASON|TIME'\necho '{JOB}|RUNNING|None|0:10'\n")
    (bin_dir / "sacct").write_text("#!/bin/sh\nexit 0\n")
    for name in ("squeue", "sacct"):
        (bin_dir / name).chmod(0o755)
    tattler = tmp_path / "tattler" / "filelock"
    tattler.mkdir(parents=True)
    marker = tmp_path / "filelock.imported"
    (tattler / "__init__.py").write_text(
        f"open({str(marker)!r}, 'a').write('imported')\nraise ImportError('the daemon imported filelock')\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("JOBMON_")}
    env.update(JOBMON_HOME=str(home), PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
               PYTHONPATH=f"{tattler.parent}{os.pathsep}{ROOT}")
    return {"home": home, "calls": calls, "marker": marker, "env": env}


def start_daemon(setup: dict, log_name: str) -> subprocess.Popen:
    log = open(setup["home"] / "logs" / log_name, "w")
    with log:
        return subprocess.Popen(daemon_argv(JOB), cwd="/", env=setup["env"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log)


def wait_for_polls(calls: Path, count: int, daemon: subprocess.Popen, deadline: float = 30.0) -> None:
    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up and daemon.poll() is None:
        if calls.exists() and len(calls.read_text().splitlines()) >= count:
            return
        time.sleep(0.05)
    pytest.fail(f"the daemon did not poll {count} times (exit code {daemon.poll()})")


def test_a_polling_daemon_never_imports_filelock_and_still_excludes_the_cli_and_a_second_daemon(tmp_path):
    setup = fake_daemon_home(tmp_path)
    daemon = start_daemon(setup, "first.log")
    try:
        wait_for_polls(setup["calls"], 3, daemon)  # each poll takes the record's and squeue's locks
        with pytest.raises(filelock.Timeout):
            StateStore(str(setup["home"] / "state")).monitor_lock(JOB).acquire()
        second = start_daemon(setup, "second.log")
        assert second.wait(30) == 1
        assert "another monitor already holds job" in (setup["home"] / "logs" / "second.log").read_text()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    log = (setup["home"] / "logs" / "first.log").read_text()
    assert not setup["marker"].exists(), log
    assert "Traceback" not in log, log


#: What an idle daemon must not carry (issue: idle RSS close to a bare interpreter): each was
#: measured at 0.2 to 9 MB and is only needed by the CLI or once the job has ended.
HEAVY_FOR_AN_IDLE_DAEMON = ("filelock", "requests", "core.notify.discord", "core.notify.deliver", "core.chain.policy",
                            "core.monitor.chains", "core.analysis.analyzer", "core.monitor.messages", "tempfile",
                            "socket", "ssl", "hashlib", "core.progress.parsers", "core.analysis.lines", "statistics",
                            "logging", "traceback", "datetime", "_strptime", "core.slurm.jobscript")


def test_a_polling_daemon_imports_nothing_heavy(tmp_path):
    setup = fake_daemon_home(tmp_path)
    setup["env"]["PYTHONPROFILEIMPORTTIME"] = "1"  # every import is logged to the daemon's stderr
    daemon = start_daemon(setup, "imports.log")
    try:
        wait_for_polls(setup["calls"], 3, daemon)
        log = (setup["home"] / "logs" / "imports.log").read_text()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    imported = {line.rsplit("|", 1)[1].strip() for line in log.splitlines() if line.startswith("import time:")}
    assert "core.monitor.monitor" in imported and "core.slurm.shared" in imported  # the log really lists imports
    assert sorted(imported & set(HEAVY_FOR_AN_IDLE_DAEMON)) == []


def test_the_daemon_runs_without_site_packages_until_it_must_deliver_itself():
    """-S spares the daemon site-packages' imports; with_site_packages brings back requests for the
    in-process delivery (core.daemon.compose)."""
    assert daemon_argv(JOB)[:4] == [sys.executable, "-S", "-m", "core.daemon"]
    probe = ("import importlib.util as u\nfrom core.daemon.process import with_site_packages\n"
             "print(u.find_spec('requests') is None)\nwith_site_packages()\nprint(u.find_spec('requests') is None)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    seen = subprocess.run([sys.executable, "-S", "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert seen.stdout.split() == ["True", "False"], seen.stderr


def test_the_launcher_writes_missing_bytecode_even_when_python_would_not(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # PYTHONDONTWRITEBYTECODE=1
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "sub" / "mod.py").write_text("VALUE = 1\n")
    compile_package(str(package))
    assert [path.name.split(".")[0] for path in (package / "sub" / "__pycache__").iterdir()] == ["mod"]
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "other.py").write_text("VALUE = 2\n")
    locked.chmod(0o500)
    try:
        compile_package(str(locked))  # a read-only install: nothing written, nothing raised
        assert sorted(path.name for path in locked.iterdir()) == (["other.py"] if os.geteuid() else
                                                                   ["__pycache__", "other.py"])
    finally:
        locked.chmod(0o700)


def test_a_daemon_renews_itself_in_place_and_goes_on_polling(tmp_path):
    """A fresh interpreter every JOBMON_RENEW_AFTER steps (exec): the same pid holds the job, its log goes on."""
    setup = fake_daemon_home(tmp_path)
    setup["env"]["JOBMON_RENEW_AFTER"] = "1"  # before every step but the first: a SIGTERM meets one
    daemon = start_daemon(setup, "renew.log")
    try:
        wait_for_polls(setup["calls"], 7, daemon)
        assert daemon.poll() is None
        assert StateStore(str(setup["home"] / "state")).load(JOB).monitor.pid == daemon.pid
        daemon.send_signal(signal.SIGTERM)  # lands in a sleep after which a renewal is due (or in a start): it stops
        assert daemon.wait(30) in (0, -signal.SIGTERM)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    log = (setup["home"] / "logs" / "renew.log").read_text()
    assert log.count("replacing this daemon by a fresh one") >= 2, log
    assert log.count("monitoring job 4242") >= 3 and "Traceback" not in log, log
