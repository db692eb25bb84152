"""`jobmon doctor`'s verdicts, as pure functions of what was seen: command output, /proc/mounts,
logind.conf, limits. No files, processes or clocks here: tests feed captured text (tests/fixtures/doctor)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from core.doctor.model import Check, Level

#: What one idle monitor costs (README "Performance": 15-16 MiB RSS); a running job's parsers add a little.
MONITOR_RSS = 16 * 1024 * 1024
#: Fewer monitors than this fit under a limit: say so.
FEW_MONITORS = 20
#: The commands jobmon runs; the first two are needed for anything at all.
SLURM_COMMANDS = ("sbatch", "squeue", "sacct", "scontrol", "scancel")
NEEDED_COMMANDS = ("sbatch", "squeue")
NETWORK_FILESYSTEMS = {"nfs": "NFS", "nfs4": "NFS", "lustre": "Lustre", "gpfs": "GPFS", "cifs": "CIFS/SMB",
                       "smb3": "CIFS/SMB", "ceph": "CephFS", "beegfs": "BeeGFS", "fuse.sshfs": "sshfs"}
SYSTEMD_RUN_HINT = "systemd-run --user --scope jobmon submit ..."


# -- key=value output (loginctl show-user / show-session) and logind.conf ------------------------
def parse_properties(text: str) -> Dict[str, str]:
    """`loginctl show-* -p A -p B` output: one `Key=value` a line."""
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            found[key.strip()] = value.strip()
    return found


@dataclass(frozen=True)
class LogindConf:
    """logind.conf's [Login] settings; `defaults` are the commented-out lines, which show the compiled-in
    values (Debian ships `#KillUserProcesses=no`)."""

    settings: Mapping[str, str]
    defaults: Mapping[str, str]

    def get(self, key: str) -> Optional[str]:
        return self.settings.get(key, self.defaults.get(key))


def parse_logind_conf(texts: Sequence[str]) -> LogindConf:
    """logind.conf then its drop-ins (logind.conf.d/*.conf) in order: later settings win."""
    settings: Dict[str, str] = {}
    defaults: Dict[str, str] = {}
    for text in texts:
        section = ""
        for raw in text.splitlines():
            line = raw.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                continue
            if section != "Login":
                continue
            target = settings
            if line.startswith(("#", ";")):
                line, target = line[1:].strip(), defaults
            key, sep, value = line.partition("=")
            if sep and re.fullmatch(r"[A-Za-z]+", key.strip()):
                target[key.strip()] = value.strip()
    return LogindConf(settings, defaults)


def _yes(value: Optional[str]) -> Optional[bool]:
    if value is None:
        return None
    return value.strip().lower() in ("yes", "true", "1", "on")


def _listed(user: str, value: Optional[str]) -> bool:
    return user in (value or "").split()


#: loginctl's words when no systemd-logind runs (captured on this project's test machine).
_NO_LOGIND = ("not been booted with systemd", "failed to connect to bus", "no such file", "not found")


def logout_check(user: str, manager: Optional[Mapping[str, str]], linger: Optional[str], conf: LogindConf,
                 loginctl_error: str) -> Check:
    """Will a monitor started from an SSH session survive the end of that session?

    `manager`: `loginctl show-session -p KillUserProcesses -p KillOnlyUsers -p KillExcludeUsers` (logind's
    own view), None when loginctl could not answer (then `loginctl_error` says why and logind.conf is read).
    `linger`: `loginctl show-user USER -p Linger`'s value, None when unknown.
    jobmon's monitor ignores SIGHUP and has its own session, but it stays in the login session's cgroup:
    with KillUserProcesses=yes logind kills that whole scope at logout.
    """
    name = "survives logout"
    if manager is None and any(words in loginctl_error.lower() for words in _NO_LOGIND):
        return Check(name, Level.OK, "no systemd-logind runs here, so nothing kills a session's processes at "
                                     "logout; the monitor ignores the SSH hang-up")
    source = "logind" if manager is not None else "logind.conf"
    settings = manager if manager is not None else conf
    kill = _yes(settings.get("KillUserProcesses"))
    if kill is None:
        return Check(name, Level.WARN,
                     f"could not tell whether logout kills processes ({loginctl_error or 'no answer'})",
                     "run `loginctl show-session -p KillUserProcesses`; if it says yes, start jobmon with "
                     f"`{SYSTEMD_RUN_HINT}` after `loginctl enable-linger`")
    excluded = _listed(user, settings.get("KillExcludeUsers"))
    only = (settings.get("KillOnlyUsers") or "").split()
    if not kill or excluded or (only and user not in only):
        why = "KillUserProcesses=no" if not kill else f"{user} is exempt (KillExcludeUsers/KillOnlyUsers)"
        lingering = {"yes": "; lingering is on", "no": ""}.get(linger or "", "")
        return Check(name, Level.OK, f"{why} ({source}): monitors keep running after you log out{lingering}")
    if linger == "yes":
        return Check(name, Level.FAIL,
                     f"KillUserProcesses=yes ({source}): logind kills your session's processes at logout, "
                     "monitors started from it included; lingering is on, so your user manager stays",
                     f"start jobmon outside the session: `{SYSTEMD_RUN_HINT}` (and `jobmon recover` the same way); "
                     "monitors killed so far: `jobmon recover`")
    return Check(name, Level.FAIL,
                 f"KillUserProcesses=yes ({source}) and no lingering: every monitor dies when you log out",
                 f"run `loginctl enable-linger {user}` (if your site allows it), then start jobmon with "
                 f"`{SYSTEMD_RUN_HINT}`; or ask your admins to exempt you (KillExcludeUsers); "
                 "meanwhile `jobmon recover` after each login restarts the dead monitors")


# -- /proc/mounts and the JOBMON_HOME filesystem --------------------------------------------------
@dataclass(frozen=True)
class Mount:
    device: str
    mountpoint: str
    fstype: str
    options: Tuple[str, ...]


def _unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal escapes (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mounts(text: str) -> List[Mount]:
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            mounts.append(Mount(_unescape(fields[0]), _unescape(fields[1]), fields[2], tuple(fields[3].split(","))))
    return mounts


def mount_of(path: str, mounts: Sequence[Mount]) -> Optional[Mount]:
    """The mount a (resolved, absolute) path lives on: the longest mount point above it, the later one of
    two at the same point (it hides the earlier)."""
    best: Optional[Mount] = None
    for mount in mounts:
        point = mount.mountpoint.rstrip("/") or "/"
        if path == point or path.startswith(point if point.endswith("/") else point + "/"):
            if best is None or len(point) >= len(best.mountpoint.rstrip("/") or "/"):
                best = mount
    return best


def _option(mount: Mount, name: str) -> Optional[str]:
    for option in mount.options:
        key, sep, value = option.partition("=")
        if key == name:
            return value if sep else ""
    return None


def filesystem_check(home: str, mount: Optional[Mount], flock_error: str) -> Check:
    """JOBMON_HOME's filesystem and whether flock works on it (jobmon's locks are flocks, core/locking.py)."""
    name = "JOBMON_HOME filesystem"
    if mount is None:
        kind, fstype = "unknown filesystem", "?"
    else:
        fstype = mount.fstype
        kind = NETWORK_FILESYSTEMS.get(fstype, "")
        kind = f"{kind} ({fstype}, network)" if kind else f"{fstype} (local)"
    where = f"{home} is on {kind}" + (f" mounted at {mount.mountpoint}" if mount else "")
    lustre_flock = None
    if mount is not None and fstype == "lustre":
        lustre_flock = "flock" if "flock" in mount.options else "localflock" if "localflock" in mount.options else ""
    if flock_error:
        if lustre_flock == "" or "function not implemented" in flock_error.lower():
            return Check(name, Level.WARN, f"{where}; flock is not supported there ({flock_error})",
                         "jobmon falls back to lock files that a killed process leaves behind: ask your admins for "
                         "`-o flock`, or set JOBMON_HOME to a local folder (then status and recover see only this "
                         "host's jobs)")
        return Check(name, Level.FAIL, f"{where}; flock failed: {flock_error}",
                     "set JOBMON_HOME to a folder on a filesystem with working locks (e.g. under /home or /tmp)")
    if lustre_flock == "localflock":
        return Check(name, Level.WARN, f"{where}; flock works, but `localflock` keeps locks on this host",
                     "run jobmon's commands for a job from one login node (recover on another host relies on "
                     "heartbeats only)")
    if mount is not None and fstype.startswith("nfs"):
        local = _option(mount, "local_lock")
        if local in ("flock", "all"):
            return Check(name, Level.WARN, f"{where}; flock works, but local_lock={local} keeps locks on this host",
                         "run jobmon's commands for a job from one login node; other hosts rely on heartbeats")
        return Check(name, Level.OK, f"{where}; flock works (NFS forwards it to the server as a lock)")
    return Check(name, Level.OK, f"{where}; flock works")


# -- Slurm ------------------------------------------------------------------------------------
def slurm_commands_check(found: Mapping[str, Optional[str]], version: str) -> Check:
    """`found`: each of SLURM_COMMANDS and its path on PATH (None if absent); `version`: `squeue --version`."""
    name = "Slurm commands"
    missing = [command for command in SLURM_COMMANDS if not found.get(command)]
    needed = [command for command in missing if command in NEEDED_COMMANDS]
    shown = version.strip().splitlines()[0] if version.strip() else "version unknown"
    if needed:
        return Check(name, Level.FAIL, f"not on PATH: {', '.join(missing)}",
                     "load your cluster's Slurm module (`module load slurm`) or add Slurm's bin folder to PATH")
    if missing:
        return Check(name, Level.WARN, f"{shown}; not on PATH: {', '.join(missing)}",
                     "jobmon needs all of " + ", ".join(SLURM_COMMANDS) + ": add Slurm's bin folder to PATH")
    folder = (found.get("squeue") or "").rsplit("/", 1)[0]
    return Check(name, Level.OK, f"{shown} in {folder}")


def squeue_check(error: str, jobs: int) -> Check:
    if error:
        return Check("squeue", Level.FAIL, error,
                     "is the controller up (`scontrol ping`)? jobmon waits through outages, but cannot start "
                     "without an answer")
    return Check("squeue", Level.OK, f"answers ({jobs} job{'s' if jobs != 1 else ''} of yours listed)")


def sacct_check(returncode: int, stdout: str, stderr: str) -> Check:
    """`sacct -X -n` for the last few minutes: accounting enabled, slurmdbd reachable? (Some releases print
    "accounting storage is disabled" on stdout with exit code 0.)"""
    text = (stdout + "\n" + stderr).lower()
    wait = ("without sacct each message waits poll.accounting_wait (600 s) and then goes out marked incomplete "
            "(no exit code detail, no peak memory)")
    if "accounting storage is disabled" in text:
        return Check("sacct", Level.WARN, "accounting is disabled on this cluster",
                     f"{wait}: set poll.accounting_wait to e.g. 30 in config.json")
    if returncode == 0:
        return Check("sacct", Level.OK, "answers (accounting is enabled and slurmdbd reachable)")
    if "connection refused" in text or "persistent connection" in text or "talking to the database" in text:
        return Check("sacct", Level.WARN, f"slurmdbd is not reachable ({_last_line(stderr)})",
                     f"{wait}; tell your admins if it lasts")
    return Check("sacct", Level.WARN, f"sacct failed: {_last_line(stderr) or f'exit code {returncode}'}", wait)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# -- Python, limits -------------------------------------------------------------------------------
def python_check(version: Tuple[int, int, int], executable: str) -> Check:
    shown = ".".join(map(str, version))
    if version[:2] < (3, 9):
        return Check("Python", Level.FAIL, f"{shown} at {executable}", "jobmon needs Python 3.9 or newer: "
                     "set JOBMON_PYTHON to a newer python3")
    return Check("Python", Level.OK, f"{shown} at {executable}")


def dependency_check(name: str, version: str, error: str, executable: str) -> Check:
    if error:
        return Check(name, Level.FAIL, f"cannot be imported by {executable}: {error}",
                     f"`{executable} -m pip install {name}`, or delete ~/.local/share/jobmon/venv and run jobmon "
                     "again to rebuild it")
    return Check(name, Level.OK, version)


def process_limit_check(soft: int, hard: int, running: int) -> Check:
    """RLIMIT_NPROC (-1: unlimited) against the processes the user runs now: each monitor is one process."""
    name = "process limit"
    if soft < 0:
        return Check(name, Level.OK, f"no per-user process limit (you run {running})")
    room = max(0, soft - running)
    detail = (f"RLIMIT_NPROC {soft} (hard {'unlimited' if hard < 0 else hard}); you run {running}: "
              f"room for about {room} monitors")
    if room < FEW_MONITORS:
        return Check(name, Level.WARN, detail, "each monitor is one process: `ulimit -u` (up to the hard limit), "
                     "or ask your admins")
    return Check(name, Level.OK, detail)


def memory_limit_check(limit: Optional[int], where: str) -> Check:
    """A cgroup memory limit over the user's processes (None: none found or unreadable)."""
    name = "memory limit"
    if limit is None:
        return Check(name, Level.OK, f"no per-user memory limit found ({where})")
    room = limit // MONITOR_RSS
    detail = f"{limit / 2**20:.0f} MiB for all your processes ({where}): room for about {room} monitors at ~16 MiB"
    if room < FEW_MONITORS:
        return Check(name, Level.WARN, detail, "watch fewer jobs at once, or ask your admins for a larger limit")
    return Check(name, Level.OK, detail)


def parse_memory_limit(text: str) -> Optional[int]:
    """cgroup v2 memory.max (`max` = none) or v1 memory.limit_in_bytes (a huge number = none)."""
    value = text.strip()
    if not value or value == "max" or not value.isdigit():
        return None
    number = int(value)
    return None if number >= 2**62 else number


def cgroup_memory_files(proc_self_cgroup: str, uid: int) -> List[str]:
    """Where a memory limit over this user's processes can sit, most specific first: the user slice
    (cgroup v2 `user.slice/user-UID.slice/memory.max`, v1 under memory/), then our own cgroup."""
    files = [f"/sys/fs/cgroup/user.slice/user-{uid}.slice/memory.max",
             f"/sys/fs/cgroup/memory/user.slice/user-{uid}.slice/memory.limit_in_bytes"]
    for line in proc_self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        path = parts[2].strip().rstrip("/")
        if parts[0] == "0" and parts[1] == "":
            files.append(f"/sys/fs/cgroup{path}/memory.max")
        elif "memory" in parts[1].split(","):
            files.append(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
    return files
