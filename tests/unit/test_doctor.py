"""`jobmon doctor`'s verdicts on captured outputs (tests/fixtures/doctor/README.md says where each comes from)."""
from __future__ import annotations

import os

import pytest

from core.doctor import rules
from core.doctor.model import Check, Level, worst
from core.slurm.model import CommandResult

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")


def fixture(name: str, folder: str = "doctor") -> str:
    with open(os.path.join(FIXTURES, folder, name), encoding="utf-8") as handle:
        return handle.read()


NO_CONF = rules.parse_logind_conf([])


# -- logout ---------------------------------------------------------------------------------
def test_no_logind_here_means_monitors_survive_logout():
    check = rules.logout_check("alice", None, None, rules.parse_logind_conf([fixture("logind.conf.debian12")]),
                               fixture("loginctl_show_session_no_systemd.stderr"))
    assert check.level is Level.OK and "no systemd-logind" in check.detail


def test_logind_with_kill_no_is_ok_and_mentions_lingering():
    manager = rules.parse_properties(fixture("loginctl_manager_kill_no.txt"))
    assert manager["KillUserProcesses"] == "no"
    check = rules.logout_check("alice", manager, "yes", NO_CONF, "")
    assert check.level is Level.OK and "KillUserProcesses=no" in check.detail and "lingering is on" in check.detail


def test_kill_yes_without_linger_fails_and_says_how_to_avoid_it():
    manager = rules.parse_properties(fixture("loginctl_manager_kill_yes.txt"))
    linger = rules.parse_properties(fixture("loginctl_show_user_linger_no.txt"))["Linger"]
    check = rules.logout_check("alice", manager, linger, NO_CONF, "")
    assert check.level is Level.FAIL
    assert "dies when you log out" in check.detail
    assert "loginctl enable-linger alice" in check.advice and "systemd-run --user --scope" in check.advice


def test_kill_yes_with_linger_still_kills_the_session_scope():
    manager = rules.parse_properties(fixture("loginctl_manager_kill_yes.txt"))
    check = rules.logout_check("alice", manager, "yes", NO_CONF, "")
    assert check.level is Level.FAIL and "systemd-run --user --scope" in check.advice
    assert "enable-linger" not in check.advice


def test_an_excluded_user_is_not_killed():
    manager = rules.parse_properties(fixture("loginctl_manager_kill_yes.txt"))  # KillExcludeUsers=root
    assert rules.logout_check("root", manager, "no", NO_CONF, "").level is Level.OK
    only_bob = dict(manager, KillOnlyUsers="bob")
    assert rules.logout_check("alice", only_bob, "no", NO_CONF, "").level is Level.OK
    assert rules.logout_check("bob", only_bob, "no", NO_CONF, "").level is Level.FAIL


def test_logind_conf_is_read_when_loginctl_cannot_answer_for_another_reason():
    debian = fixture("logind.conf.debian12")
    conf = rules.parse_logind_conf([debian, fixture("logind.conf.kill_yes_dropin")])
    assert conf.get("KillUserProcesses") == "yes"  # the drop-in's setting beats the commented default
    assert rules.logout_check("alice", None, None, conf, "Access denied").level is Level.FAIL
    default_only = rules.parse_logind_conf([debian])
    assert default_only.get("KillUserProcesses") == "no"
    assert rules.logout_check("alice", None, None, default_only, "Access denied").level is Level.OK
    assert rules.logout_check("alice", None, None, NO_CONF, "Access denied").level is Level.WARN


# -- filesystems ----------------------------------------------------------------------------
CLUSTER = rules.parse_mounts(fixture("proc_mounts_cluster.txt")) + rules.parse_mounts(
    fixture("proc_mounts_test_machine.txt"))


def test_mount_of_picks_the_longest_mount_point():
    assert rules.mount_of("/mnt/netapp2/Home_FT2/alice/jobmon", CLUSTER).fstype == "nfs"
    assert rules.mount_of("/home/alice", CLUSTER).mountpoint == "/"
    assert rules.mount_of("/data disk/jobmon", CLUSTER).fstype == "ext4"  # \040 unescaped
    assert rules.mount_of("/lustre/flockx", CLUSTER).mountpoint == "/"  # a prefix of a name is no parent


@pytest.mark.parametrize("home,error,level,words", [
    ("/mnt/netapp2/Home_FT2/a", "", Level.OK, "NFS (nfs, network)"),
    ("/mnt/netapp2/Store_uni/a", "", Level.WARN, "local_lock=flock"),
    ("/lustre/flock/a", "", Level.OK, "Lustre"),
    ("/lustre/local/a", "", Level.WARN, "localflock"),
    ("/lustre/none/a", "ENOSYS: Function not implemented", Level.WARN, "not supported"),
    ("/gpfs/home/a", "", Level.OK, "GPFS"),
    ("/home/a", "", Level.OK, "ext4 (local)"),
    ("/home/a", "ENOLCK: No locks available", Level.FAIL, "flock failed"),
])
def test_filesystem_verdicts(home, error, level, words):
    check = rules.filesystem_check(home, rules.mount_of(home, CLUSTER), error)
    assert check.level is level and words in check.detail, check


# -- Slurm ----------------------------------------------------------------------------------
def test_slurm_commands_missing_or_found():
    everything = {command: f"/usr/bin/{command}" for command in rules.SLURM_COMMANDS}
    ok = rules.slurm_commands_check(everything, "slurm-wlm 22.05.8\n")
    assert ok.level is Level.OK and ok.detail == "slurm-wlm 22.05.8 in /usr/bin"
    assert rules.slurm_commands_check({**everything, "scancel": None}, "slurm 23.02").level is Level.WARN
    failed = rules.slurm_commands_check({}, "")
    assert failed.level is Level.FAIL and "module load" in failed.advice


def test_sacct_verdicts_on_captured_errors():
    assert rules.sacct_check(0, "", "").level is Level.OK
    down = rules.sacct_check(1, "", fixture("sacct_dbd_down.stderr", "slurm"))
    assert down.level is Level.WARN and "slurmdbd is not reachable" in down.detail
    for stdout, stderr, code in (("", "Slurm accounting storage is disabled\n", 1),
                                 ("SLURM accounting storage is disabled\n", "", 0)):
        disabled = rules.sacct_check(code, stdout, stderr)
        assert disabled.level is Level.WARN and "disabled" in disabled.detail
        assert "accounting_wait" in disabled.advice


def test_squeue_verdicts():
    assert rules.squeue_check("", 1).detail == "answers (1 job of yours listed)"
    assert rules.squeue_check("squeue failed: Unable to contact slurm controller", 0).level is Level.FAIL


# -- Python and limits ----------------------------------------------------------------------
def test_python_and_dependencies():
    assert rules.python_check((3, 8, 10), "/usr/bin/python3").level is Level.FAIL
    assert rules.python_check((3, 9, 0), "/usr/bin/python3").level is Level.OK
    missing = rules.dependency_check("filelock", "", "No module named 'filelock'", "/usr/bin/python3")
    assert missing.level is Level.FAIL and "pip install filelock" in missing.advice


def test_limits_count_monitors():
    assert rules.process_limit_check(-1, -1, 50).level is Level.OK
    tight = rules.process_limit_check(64, 128, 60)
    assert tight.level is Level.WARN and "room for about 4 monitors" in tight.detail
    assert rules.memory_limit_check(None, "none").level is Level.OK
    assert rules.memory_limit_check(256 * 2**20, "memory.max").level is Level.WARN  # 16 monitors
    assert rules.memory_limit_check(8 * 2**30, "memory.max").level is Level.OK
    assert rules.parse_memory_limit("max\n") is None
    assert rules.parse_memory_limit("9223372036854771712\n") is None  # cgroup v1 "no limit" (this machine)
    assert rules.parse_memory_limit("4294967296\n") == 4 * 2**30


def test_cgroup_memory_files_for_v1_and_v2():
    v1 = rules.cgroup_memory_files("4:memory:/user.slice/user-1000.slice/session-3.scope\n0::/\n", 1000)
    assert "/sys/fs/cgroup/memory/user.slice/user-1000.slice/session-3.scope/memory.limit_in_bytes" in v1
    v2 = rules.cgroup_memory_files("0::/user.slice/user-1000.slice/session-3.scope\n", 1000)
    assert v2[0] == "/sys/fs/cgroup/user.slice/user-1000.slice/memory.max"
    assert "/sys/fs/cgroup/user.slice/user-1000.slice/session-3.scope/memory.max" in v2


def test_worst_level_decides_the_exit():
    assert worst([Check("a", Level.OK, ""), Check("b", Level.WARN, "")]) is Level.WARN
    assert worst([Check("a", Level.FAIL, ""), Check("b", Level.WARN, "")]) is Level.FAIL


def test_logout_check_reads_loginctl_through_the_runner(monkeypatch):
    from core.doctor import diagnose

    calls = []

    def runner(argv, timeout):
        calls.append(argv)
        if argv[1] == "show-session":
            return CommandResult(0, fixture("loginctl_manager_kill_yes.txt"), "")
        return CommandResult(0, fixture("loginctl_show_user_linger_no.txt"), "")

    monkeypatch.setattr(diagnose, "current_user", lambda: "alice")
    check = diagnose.logout_check(runner)
    assert check.level is Level.FAIL and "enable-linger alice" in check.advice
    assert calls[1] == ["loginctl", "show-user", "alice", "-p", "Linger"]


def test_submit_and_watch_warn_in_one_line_only_where_logout_kills_the_monitor(monkeypatch):
    from core.doctor import diagnose

    def answering(session_file):
        def runner(argv, timeout):
            if argv[1] == "show-session":
                return CommandResult(0, fixture(session_file), "")
            return CommandResult(0, fixture("loginctl_show_user_linger_no.txt"), "")
        return runner

    monkeypatch.setattr(diagnose, "current_user", lambda: "alice")
    warning = diagnose.logout_warning(answering("loginctl_manager_kill_yes.txt"))
    assert warning.startswith("jobmon: warning: KillUserProcesses=yes") and "\n" not in warning
    assert "dies when you log out" in warning and "loginctl enable-linger alice" in warning
    assert diagnose.logout_warning(answering("loginctl_manager_kill_no.txt")) == ""
    no_logind = CommandResult(1, "", fixture("loginctl_show_session_no_systemd.stderr"))
    assert diagnose.logout_warning(lambda argv, timeout: no_logind) == ""
