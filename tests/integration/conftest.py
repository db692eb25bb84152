"""Integration harness: a real local Slurm, a local Discord receiver, jobmon run as a non-root user.

`scripts/test.sh` (as root) starts Slurm and creates the user named by JOBMON_TEST_USER. The
checkout is copied to a world-readable folder so that user runs it exactly as README's "folder
on PATH" install: the `jobmon` entry point, with the system python3 (which lacks requests and
filelock, so the first run builds the user's private venv).

The tests run in parallel (scripts/test.sh: pytest-xdist, `-n 4 --dist loadgroup`): each test takes a
shared turn on the one Slurm, and a test marked `alone` (it stops a Slurm daemon: test_outages.py) takes
it exclusively. The unit tests come first and the `long_running` ones next, so that the unit tests run
while the outage tests have the Slurm to themselves and the longest waits start early.
"""
from __future__ import annotations

import fcntl
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Set

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from discord_receiver import DiscordReceiver  # noqa: E402

from core.notify.outbox import summary_status  # noqa: E402
from core.state.codec import decode  # noqa: E402
from core.state.migrate import upgrade  # noqa: E402
from core.state.model import JobRecord  # noqa: E402

USER_PATH = "/usr/local/bin:/usr/bin:/bin"
#: Lock files every pytest process on this machine shares: xdist's workers, and a second run at the same time.
MACHINE_LOCKS = os.path.join(tempfile.gettempdir(), "jobmon-it")


def as_record(state: dict) -> JobRecord:
    """A state file's JSON as the typed record jobmon reads (derived facts like `done` live there)."""
    return decode(JobRecord, upgrade(state))


def is_done(state: dict) -> bool:
    return as_record(state).done


def notification(state: dict) -> str:
    """How the job's messages fared, as `status` shows it: none, pending, sending, sent, gone, failed."""
    return summary_status(as_record(state).outbox)


def pytest_collection_modifyitems(items) -> None:
    """Every test in this folder needs the real Slurm: `-m "not integration"` skips them all. Order:
    the unit tests, then the `long_running` Slurm tests, then the others (a stable sort: each module's
    tests stay together and in their order, only the long ones start early)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.fspath).startswith(here + os.sep):
            item.add_marker(pytest.mark.integration)

    def start_order(item) -> int:
        if not item.get_closest_marker("integration"):
            return 0
        return 1 if item.get_closest_marker("long_running") else 2

    items.sort(key=start_order)


def _open_lock(name: str) -> int:
    path = f"{MACHINE_LOCKS}.{name}.lock"
    try:
        return os.open(path, os.O_RDONLY)  # O_CREAT on another user's file in /tmp is refused (protected_regular)
    except FileNotFoundError:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
        os.fchmod(fd, 0o644)
        return fd


#: The machine locks this process holds exclusively (a test module holding one for all its tests).
_HELD_EXCLUSIVE: Set[str] = set()


@contextmanager
def machine_lock(name: str, *, exclusive: bool = True) -> Iterator[None]:
    """A readers-writer lock across processes that prefers writers: one waiting for the exclusive turn
    holds the gate while it waits, so no new shared turn starts before it has had its own. Taking a
    lock this process already holds exclusively is a no-op."""
    if name in _HELD_EXCLUSIVE:
        yield
        return
    gate, lock = _open_lock(name + "-gate"), _open_lock(name)
    try:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        if exclusive:
            _HELD_EXCLUSIVE.add(name)
        try:
            yield
        finally:
            _HELD_EXCLUSIVE.discard(name)
    finally:
        os.close(lock)  # closing releases the flock
        os.close(gate)


@pytest.fixture(autouse=True)
def slurm_turn(request) -> Iterator[None]:
    """Parallel tests share the Slurm; a test marked `alone` (it stops slurmctld or slurmdbd) has it to itself,
    from before its jobs are submitted until its daemons are stopped (test_outages.py holds it for the
    whole module)."""
    with machine_lock("slurm", exclusive=request.node.get_closest_marker("alone") is not None):
        yield


def _slurm_up() -> bool:
    try:
        done = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and "UP" in done.stdout


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    with machine_lock("slurm", exclusive=False):  # not while a test that stops a Slurm daemon has it
        up = _slurm_up()
    if not up:
        if os.environ.get("JOBMON_TEST_USER"):
            pytest.fail("Slurm is not running although scripts/test.sh set it up: see /var/log/slurm/")
        pytest.skip("no running Slurm: run scripts/test.sh as root (it starts a local cluster)")


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str

    @property
    def is_self(self) -> bool:
        return self.uid == os.getuid()


@pytest.fixture(scope="session")
def account(slurm_cluster) -> Account:
    name = os.environ.get("JOBMON_TEST_USER", "jobmon-it")
    if os.geteuid() != 0:
        name = pwd.getpwuid(os.getuid()).pw_name
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        pytest.fail(f"test user {name!r} does not exist: run scripts/test.sh as root (it creates it)")
    return Account(name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


@pytest.fixture(scope="session")
def base_dir(account) -> str:
    folder = tempfile.mkdtemp(prefix="jobmon-it-", dir="/tmp")
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def app(base_dir, account) -> str:
    """A copy of the checkout the test user can read, as a user would put it on PATH."""
    target = os.path.join(base_dir, "app")
    anywhere = shutil.ignore_patterns("__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".hypothesis")

    def ignore(folder: str, names: List[str]):
        skipped = set(anywhere(folder, names))
        if os.path.samefile(folder, ROOT):  # the checkout's own runtime files, not core/state
            skipped |= {".git", ".venv", "state", "logs", "config.json"} & set(names)
        return skipped

    shutil.copytree(ROOT, target, ignore=ignore)
    for folder, _subdirs, files in os.walk(target):
        os.chmod(folder, 0o755)
        for name in files:
            path = os.path.join(folder, name)
            os.chmod(path, 0o755 if os.access(path, os.X_OK) else 0o644)
    # First run: builds the user's private venv when the system python3 lacks the dependencies (one
    # worker at a time: they would all build the same ~/.local/share/jobmon/venv).
    with machine_lock("user-venv"):
        done = _run_as(account, [os.path.join(target, "jobmon"), "--version"], {}, timeout=300)
    assert done.returncode == 0, done.stderr
    return target


def _run_as(account: Account, argv: List[str], env: Dict[str, str], timeout: float, cwd: Optional[str] = None):
    base_env = {"HOME": account.home, "PATH": USER_PATH, "LANG": "C.UTF-8", "USER": account.name,
                "LOGNAME": account.name}
    base_env.update(env)
    if account.is_self:
        command = argv
        full_env = base_env
    else:
        command = ["runuser", "-u", account.name, "--", "env", "-i", *[f"{k}={v}" for k, v in base_env.items()], *argv]
        full_env = None
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd or "/")


@dataclass
class Env:
    """One test's world: JOBMON_HOME, a job folder, the receiver, and helpers to act as the user."""

    account: Account
    app: str
    home: str
    work: str
    receiver: DiscordReceiver
    env: Dict[str, str]

    def jobmon(self, *args: str, timeout: float = 60, extra_env: Optional[Dict[str, str]] = None):
        env = dict(self.env)
        env.update(extra_env or {})
        return _run_as(self.account, [os.path.join(self.app, "jobmon"), *args], env, timeout, cwd=self.work)

    def run(self, *argv: str, timeout: float = 60):
        return _run_as(self.account, list(argv), self.env, timeout, cwd=self.work)

    def write_script(self, name: str, body: str) -> str:
        path = os.path.join(self.work, name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(body)
        os.chown(path, self.account.uid, self.account.gid)
        os.chmod(path, 0o755)
        return path

    def write_config(self, discord: Optional[dict] = None, **sections: dict) -> None:
        """Rewrite config.json: the receiver's two webhooks (or `discord` overrides) plus sections."""
        hooks = {"success_webhook": self.receiver.webhook_url("success"),
                 "error_webhook": self.receiver.webhook_url("error"), **(discord or {})}
        config = {"discord": hooks, **sections}
        path = os.path.join(self.home, "config.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(config, handle)
        os.chown(path, self.account.uid, self.account.gid)
        os.chmod(path, 0o600)

    def status_row(self, job_id: str) -> dict:
        done = self.jobmon("status", "--json", "--all")
        assert done.returncode == 0, done.stderr
        return [row for row in json.loads(done.stdout)["jobs"] if row["job_id"] == job_id][0]

    def state(self, job_id: str) -> dict:
        with open(os.path.join(self.home, "state", f"{job_id}.json"), encoding="utf-8") as handle:
            return json.load(handle)

    def monitor_log(self, job_id: str) -> str:
        try:
            with open(os.path.join(self.home, "logs", f"{job_id}.monitor.log"), encoding="utf-8") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def submit(self, *args: str) -> str:
        done = self.jobmon("submit", *args)
        assert done.returncode == 0, f"submit failed: {done.stdout}{done.stderr}"
        job_id = done.stdout.split("Submitted batch job ", 1)[1].split()[0]
        return job_id

    def wait_state(self, job_id: str, predicate: Callable[[dict], bool], timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        last: dict = {}
        while time.monotonic() < deadline:
            try:
                last = self.state(job_id)
            except (OSError, ValueError):
                last = {}
            if last and predicate(last):
                return last
            time.sleep(0.2)
        raise AssertionError(f"job {job_id}: {what} not reached in {timeout}s; state={last}\n"
                             f"monitor log:\n{self.monitor_log(job_id)}")

    def wait_done(self, job_id: str, timeout: float = 60) -> dict:
        return self.wait_state(job_id, is_done, timeout, "done")

    def daemon_pid(self, job_id: str) -> int:
        return self.state(job_id)["monitor"]["pid"]


@pytest.fixture
def jm(request, app, account, base_dir) -> Env:
    test_dir = tempfile.mkdtemp(prefix=request.node.name[:40] + "-", dir=base_dir)
    home = os.path.join(test_dir, "home")
    work = os.path.join(test_dir, "work")
    os.makedirs(home)
    os.makedirs(work)
    for folder in (test_dir, home, work):
        os.chown(folder, account.uid, account.gid)
    os.chmod(test_dir, 0o755)
    receiver = DiscordReceiver()
    receiver.start()
    env = {"JOBMON_HOME": home, "JOBMON_POLL_INTERVAL": "1", "JOBMON_PENDING_INTERVAL": "1"}
    world = Env(account, app, home, work, receiver, env)
    world.write_config()
    yield world
    _stop_daemons(world)
    receiver.stop()


def _stop_daemons(world: Env) -> None:
    """Kill any daemon the test left behind, so none outlives its receiver."""
    state_dir = os.path.join(world.home, "state")
    for name in os.listdir(state_dir) if os.path.isdir(state_dir) else []:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(state_dir, name), encoding="utf-8") as handle:
                pid = json.load(handle).get("monitor", {}).get("pid", 0)
        except (OSError, ValueError):
            continue
        if pid > 0 and _is_monitor_process(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _is_monitor_process(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"core.daemon.main" in handle.read()
    except OSError:
        return False


def squeue_state(job_id: str) -> str:
    done = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
    return done.stdout.strip()


def wait_job_state(job_id: str, states: tuple, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = squeue_state(job_id)
        if state in states:
            return state
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not reach {states} within {timeout}s (last: {state!r})")


def slurm_local(command: str) -> None:
    script = os.path.join(ROOT, "scripts", "slurm-local.sh")
    done = subprocess.run(["bash", script, command], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr


def wait_for_accounting(timeout: float = 120) -> None:
    """Wait until sacct is current again: a new job's own record (not sacct's placeholder) is there.

    After slurmdbd or slurmctld restarts, sacct lags: the records queued meanwhile arrive ~17 s
    later, and until then a job that just ended may have only its placeholder. A test that restarted
    a daemon waits for this before it lets the other tests have the Slurm again.
    """
    name = "jobmon-it-accounting-check"
    done = subprocess.run(["sbatch", "--parsable", "-J", name, "-o", "/dev/null", "--wrap", "true"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip().split(";")[0]
    deadline = time.monotonic() + timeout
    row = ""
    while time.monotonic() < deadline:
        row = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "--format=JobName,State,ReqMem"],
                             capture_output=True, text=True, timeout=60).stdout.strip()
        fields = row.split("|")
        if len(fields) == 3 and fields[0] == name and fields[1] == "COMPLETED" and not fields[2].endswith("?"):
            return
        time.sleep(0.5)
    raise AssertionError(f"sacct did not catch up within {timeout}s (job {job_id}: {row!r})")
