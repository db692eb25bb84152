"""The processes jobmon starts besides Slurm's commands: detached monitor daemons and the short-lived
processes that deliver a job's outbox. Fork, exec and wait live here and nowhere else in core/."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, TextIO, Tuple

from core import logs
from core.config import Paths
from core.errors import JobmonError
from core.slurm.model import CommandResult

#: The folder that holds the `core` package: children import jobmon from there.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def log_to(stream: TextIO, job_id: str) -> None:
    """A jobmon child's log lines (the daemon's and its delivery process's, into the job's monitor log)."""
    logs.log_to(stream, f"{job_id} pid={os.getpid()}")


def child_env(paths: Paths) -> Dict[str, str]:
    """The environment of a jobmon child: ours, with its home and package made explicit."""
    python_path = os.pathsep.join(p for p in (PACKAGE_PARENT, os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, JOBMON_HOME=paths.home, PYTHONPATH=python_path)


def module_argv(module: str, *args: str, site: bool = True) -> List[str]:
    """A fresh interpreter running only `module`: no CLI, no argparse, a small footprint.

    site=False (-S) leaves out site-packages and their start-up hooks (.pth files), for a child that needs
    only the standard library and jobmon (found through PYTHONPATH, see child_env) until it calls
    `with_site_packages`.
    """
    return [sys.executable, *([] if site else ["-S"]), "-m", module, *args]


def replace_process(argv: List[str]) -> None:
    """Become `argv` (exec): same pid, same open log; returns only by raising OSError."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


def with_site_packages() -> None:
    """Add site-packages to a process started with site=False, before it imports a library from there."""
    if sys.flags.no_site:
        import site

        site.main()


def detach_and_exec(argv: List[str], log_path: str, env: Dict[str, str]) -> int:
    """Double-fork + setsid, stdio to /dev/null and the log, SIGHUP ignored, then exec `argv`.

    Returns the daemon's pid. Exec gives the daemon a fresh, lean interpreter and means no lock
    object or thread of the caller crosses the fork.
    """
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            os.setsid()
            grandchild = os.fork()
            if grandchild > 0:
                os.write(write_end, str(grandchild).encode())
                os._exit(0)
            os.close(write_end)
            os.chdir("/")
            os.umask(0o077)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            stdin = os.open(os.devnull, os.O_RDONLY)
            out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(stdin, 0)
            os.dup2(out, 1)
            os.dup2(out, 2)
            os.closerange(3, 65536)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    os.close(write_end)
    try:
        data = os.read(read_end, 32)
    finally:
        os.close(read_end)
        os.waitpid(child, 0)
    if not data:
        raise JobmonError("could not start the monitor daemon (fork failed)")
    return int(data)


def run_child(argv: List[str], env: Dict[str, str], timeout: float, should_stop: Callable[[], bool]) -> Optional[int]:
    """Run a jobmon child (it inherits our stdout/stderr: the monitor's log) and wait for it.

    Returns its exit code; None when we stop waiting (a stop request, or `timeout`): the child then
    finishes its work on its own, and its locks keep anyone from doing the same work twice.
    """
    child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, cwd="/")
    deadline = time.monotonic() + timeout
    while True:
        try:
            return child.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            if should_stop() or time.monotonic() > deadline:
                return None


def run_sendmail(argv: Sequence[str], message: bytes, timeout: float) -> Tuple[int, str]:
    """Hand one e-mail to the local sendmail program: (exit code, its stderr); -1 when it timed out."""
    try:
        done = subprocess.run(list(argv), input=message, capture_output=True, timeout=timeout, cwd="/")
    except subprocess.TimeoutExpired:
        return -1, f"no answer within {timeout:g}s"
    return done.returncode, done.stderr.decode("utf-8", "replace")


def run_tool(argv: List[str], timeout: float) -> CommandResult:
    """A system tool's answer (`loginctl show-user ...` for `jobmon doctor`): never raises; a missing
    tool or a timeout is exit code 127 or 124 with the reason as stderr."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        return CommandResult(127, "", f"{argv[0]}: not found")
    except (subprocess.TimeoutExpired, OSError) as exc:
        return CommandResult(124, "", f"{argv[0]}: {exc}")
    return CommandResult(done.returncode, done.stdout, done.stderr)
