"""README's pip/venv install path works for a non-root account with the system python3."""
from __future__ import annotations

import json
import os


def test_pip_install_into_a_user_venv_gives_a_working_jobmon(jm, base_dir):
    source = os.path.join(jm.work, "jobmon-src")
    copied = jm.run("cp", "-r", jm.app, source)  # a checkout the user owns, as after `git clone`
    assert copied.returncode == 0, copied.stderr
    venv = os.path.join(jm.work, "venv")
    built = jm.run("/usr/bin/python3", "-m", "venv", venv, timeout=120)
    assert built.returncode == 0, built.stderr
    installed = jm.run(os.path.join(venv, "bin", "pip"), "install", "--quiet", "--disable-pip-version-check",
                       source, timeout=300)
    assert installed.returncode == 0, installed.stderr
    jobmon = os.path.join(venv, "bin", "jobmon")
    version = jm.run(jobmon, "--version")
    assert version.returncode == 0 and version.stdout.startswith("jobmon "), version.stderr
    log = os.path.join(jm.work, "train.err")
    with open(log, "w", encoding="utf-8") as handle:
        handle.write("Traceback (most recent call last):\nModuleNotFoundError: No module named 'flash_attn'\n")
    analyzed = jm.run(jobmon, "analyze", "--json", log)
    assert analyzed.returncode == 0, analyzed.stderr
    assert json.loads(analyzed.stdout)["categories"][0] == "import_error"
    done = jm.run(jobmon, "test-discord")
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(jm.receiver.messages()) == 2
