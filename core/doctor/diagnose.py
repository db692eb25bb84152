"""`jobmon doctor`: look at this machine and account, and say what will and will not work, check by check.

Gathering lives here (files under /proc and /etc, one squeue, one sacct, loginctl); the verdicts are the
pure functions of core/doctor/rules.py. Slurm is asked through core/slurm/client.py only.
"""
from __future__ import annotations

import errno
import fcntl
import glob
import os
import resource
import shutil
import sys
import tempfile
from typing import Callable, List, Optional, Sequence

from core.config import Paths, load_config, other_home_hint
from core.daemon.process import run_tool
from core.doctor import rules
from core.doctor.model import Check, Level
from core.doctor.sinks import SinkReport, check_reachable, send_test_messages
from core.errors import JobmonError, SlurmError
from core.slurm.client import Slurm, current_user
from core.slurm.model import CommandResult

ToolRunner = Callable[[List[str], float], CommandResult]
TOOL_TIMEOUT = 10.0


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def slurm_checks(slurm: Slurm) -> List[Check]:
    found = {command: shutil.which(command) for command in rules.SLURM_COMMANDS}
    version = ""
    if found.get("squeue"):
        try:
            version = slurm.version()
        except SlurmError:
            version = ""
    checks = [rules.slurm_commands_check(found, version)]
    if not found.get("squeue"):
        return checks
    try:
        jobs, error = len(slurm.query_user_queue()), ""
    except SlurmError as exc:
        jobs, error = 0, str(exc)
    checks.append(rules.squeue_check(error, jobs))
    if found.get("sacct"):
        try:
            answer = slurm.probe_accounting()
        except SlurmError as exc:
            answer = CommandResult(1, "", str(exc))
        checks.append(rules.sacct_check(answer.returncode, answer.stdout, answer.stderr))
    return checks


def try_flock(folder: str) -> str:
    """Take and drop a flock on a scratch file in `folder`: "" when it works, else the error."""
    try:
        fd, path = tempfile.mkstemp(prefix=".doctor-", suffix=".lock", dir=folder)
    except OSError as exc:
        return f"cannot create a file there: {exc.strerror or exc}"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError as exc:
        return f"{errno.errorcode.get(exc.errno or 0, 'error')}: {exc.strerror or exc}"
    finally:
        os.close(fd)
        os.unlink(path)
    return ""


def home_checks(paths: Paths, mounts_text: str) -> List[Check]:
    try:
        paths.ensure()
    except JobmonError as exc:
        return [Check("JOBMON_HOME", Level.FAIL, str(exc), "set JOBMON_HOME to a folder you can write")]
    source = "JOBMON_HOME" if os.environ.get("JOBMON_HOME") else "default"
    checks = [Check("JOBMON_HOME", Level.OK, f"{paths.home} ({source}) is writable")]
    mount = rules.mount_of(os.path.realpath(paths.home), rules.parse_mounts(mounts_text))
    checks.append(rules.filesystem_check(paths.home, mount, try_flock(paths.state)))
    return checks


def config_checks(paths: Paths) -> List[Check]:
    if not os.path.exists(paths.config):
        elsewhere = other_home_hint(paths, "config.json")
        return [Check("config", Level.FAIL, f"no config at {paths.config}",
                      elsewhere or "run `jobmon init --success-webhook URL --error-webhook URL`")]
    try:
        config = load_config(paths, require_webhook=True)
    except JobmonError as exc:
        return [Check("config", Level.FAIL, str(exc), "fix it (compare with config.json.example) or rewrite it "
                      "with `jobmon init --force ...`")]
    checks = [Check("config", Level.OK, f"{paths.config} is valid ({len(config.sinks)} webhook(s))")]
    mode = os.stat(paths.config).st_mode & 0o777
    if mode & 0o077:
        checks.append(Check("config private", Level.WARN, f"mode {mode:04o}: others can read your webhook URLs",
                            f"chmod 600 {paths.config}"))
    else:
        checks.append(Check("config private", Level.OK, f"mode {mode:04o}"))
    return checks


def sink_checks(paths: Paths, send: bool) -> List[Check]:
    try:
        config = load_config(paths, require_webhook=True)
    except JobmonError:
        return []  # said by config_checks
    cafile: Optional[str] = None
    if not send:
        try:
            from core.notify.http import transport_info

            cafile = transport_info()[1]
        except ImportError:
            cafile = None
    reports: Sequence[SinkReport] = send_test_messages(config) if send else check_reachable(config, cafile)
    verb = "test message delivered" if send else "reachable (nothing sent; --send posts a test message)"
    return [Check(f"webhook {r.label}", Level.FAIL if r.error else Level.OK,
                  f"{r.described}: {r.error or verb}",
                  "check the URL in config.json, and that this host may reach it (proxy, firewall)" if r.error else "")
            for r in reports]


def python_checks() -> List[Check]:
    executable = sys.executable or "python3"
    version = (sys.version_info[0], sys.version_info[1], sys.version_info[2])
    checks = [rules.python_check(version, executable)]
    for name in ("requests", "filelock"):
        try:
            if name == "requests":
                from core.notify.http import transport_info

                found = transport_info()[0]
            else:
                from core.locking import filelock_version

                found = filelock_version()
            checks.append(rules.dependency_check(name, found, "", executable))
        except ImportError as exc:
            checks.append(rules.dependency_check(name, "", str(exc), executable))
    return checks


def logout_check(run: ToolRunner) -> Check:
    user = current_user()
    manager = run(["loginctl", "show-session", "-p", "KillUserProcesses", "-p", "KillOnlyUsers",
                   "-p", "KillExcludeUsers"], TOOL_TIMEOUT)
    linger = run(["loginctl", "show-user", user, "-p", "Linger"], TOOL_TIMEOUT)
    drop_ins = sorted(glob.glob("/etc/systemd/logind.conf.d/*.conf"))
    conf_texts = [_read(path) for path in ["/etc/systemd/logind.conf", *drop_ins]]
    properties = rules.parse_properties(manager.stdout) if manager.returncode == 0 else None
    linger_value = rules.parse_properties(linger.stdout).get("Linger") if linger.returncode == 0 else None
    return rules.logout_check(user, properties, linger_value, rules.parse_logind_conf(conf_texts),
                              (manager.stderr or manager.stdout).strip())


def logout_warning(run: ToolRunner = run_tool) -> str:
    """What `submit` and `watch` say after starting a monitor that will die at logout (doctor's FAIL), or ""."""
    check = logout_check(run)
    return f"jobmon: warning: {check.detail}. To keep it: {check.advice}" if check.level is Level.FAIL else ""


def count_processes(uid: int) -> int:
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                count += os.stat(f"/proc/{name}").st_uid == uid
            except OSError:
                pass
    return count


def limit_checks() -> List[Check]:
    uid = os.getuid()
    soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    unlimited = resource.RLIM_INFINITY
    checks = [rules.process_limit_check(-1 if soft == unlimited else soft, -1 if hard == unlimited else hard,
                                        count_processes(uid))]
    limit, where = None, "no readable cgroup memory file"
    for path in rules.cgroup_memory_files(_read("/proc/self/cgroup"), uid):
        text = _read(path)
        if text:
            limit, where = rules.parse_memory_limit(text), f"none in {path}"
            if limit is not None:
                where = path
                break
    checks.append(rules.memory_limit_check(limit, where))
    return checks


def run_doctor(paths: Paths, slurm: Slurm, *, send: bool, run: ToolRunner = run_tool) -> List[Check]:
    """Every check, in the order a new user meets them."""
    checks = slurm_checks(slurm)
    checks += home_checks(paths, _read("/proc/mounts"))
    checks += config_checks(paths)
    checks += sink_checks(paths, send)
    checks += python_checks()
    checks.append(logout_check(run))
    checks += limit_checks()
    return checks


