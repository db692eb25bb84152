"""`jobmon doctor` on this machine's real Slurm, as the non-root test user."""
from __future__ import annotations

import os
import socket


def lines_of(output: str) -> dict:
    """The report's lines by check name: {name: (level, line)}."""
    found = {}
    for line in output.splitlines():
        level = line[:4].strip()
        if level in ("OK", "WARN", "FAIL"):
            name = line[6:].split("  ", 1)[0].strip()
            found[name] = (level, line)
    return found


def test_doctor_reports_every_check_and_passes_here(jm):
    done = jm.jobmon("doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    checks = lines_of(done.stdout)
    for name in ("Slurm commands", "squeue", "sacct", "JOBMON_HOME", "JOBMON_HOME filesystem", "config",
                 "config private", "webhook success", "webhook error", "Python", "requests", "filelock",
                 "survives logout", "process limit", "memory limit"):
        assert checks[name][0] == "OK", f"{name}: {checks[name][1]}\n{done.stdout}"
    assert "slurm-wlm" in checks["Slurm commands"][1] or "slurm " in checks["Slurm commands"][1]
    assert "flock works" in checks["JOBMON_HOME filesystem"][1]
    assert "no systemd-logind" in checks["survives logout"][1]  # this machine: systemd is not PID 1
    assert jm.app in checks["Python"][1] or "/.local/share/jobmon/venv/" in checks["Python"][1]
    assert jm.receiver.messages() == []  # reachability only: nothing sent


def test_doctor_send_posts_one_test_message_per_webhook(jm):
    done = jm.jobmon("doctor", "--send")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "test message delivered" in lines_of(done.stdout)["webhook success"][1]
    assert len(jm.receiver.messages()) == 2


def test_doctor_fails_on_a_dead_webhook_and_warns_on_a_readable_config(jm):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # nothing listens there once closed
    jm.write_config({"error_webhook": f"http://127.0.0.1:{port}/api/webhooks/1/x"})
    os.chmod(os.path.join(jm.home, "config.json"), 0o644)
    done = jm.jobmon("doctor")
    assert done.returncode == 1, done.stdout + done.stderr
    checks = lines_of(done.stdout)
    assert checks["webhook error"][0] == "FAIL" and "cannot connect" in checks["webhook error"][1]
    assert checks["webhook success"][0] == "OK"
    assert checks["config private"][0] == "WARN" and "chmod 600" in done.stdout


def test_doctor_without_config_names_jobmon_init(jm):
    os.unlink(os.path.join(jm.home, "config.json"))
    done = jm.jobmon("doctor")
    assert done.returncode == 1
    assert lines_of(done.stdout)["config"][0] == "FAIL" and "jobmon init" in done.stdout
