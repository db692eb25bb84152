"""`jobmon serve` on the real Slurm, as the non-root test user: a running job seen through /healthz, /jobs,
/jobs/<id> and /metrics (parsed as Prometheus text), and the dashboard rendered by a real headless Chromium
(its DOM after the script ran, and a screenshot kept under tests/integration/artefacts/)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from typing import Dict, List, Tuple

import pytest
from conftest import wait_job_state

ARTEFACTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artefacts")

#: 40 steps of 1 s, printed as `step i/40`: progress the monitor understands. The name has markup in it:
#: the page must show it as text.
PROGRESS_JOB = r"""#!/bin/bash
#SBATCH -J serve<b>demo</b>
#SBATCH -o serve-%j.out
for i in $(seq 1 40); do echo "step $i/40 loss=0.5"; sleep 1; done
"""


def get(url: str) -> Tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, answer.headers.get("Content-Type", ""), answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read().decode()


def parse_prometheus(text: str) -> Dict[str, List[Tuple[Dict[str, str], float]]]:
    """Sample lines by metric name; every sample's family must have a TYPE line first."""
    typed = set()
    found: Dict[str, List[Tuple[Dict[str, str], float]]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)', line)
        assert match, f"not a Prometheus sample line: {line!r}"
        name, labels, value = match.groups()
        assert name in typed, f"{name} has no TYPE line"
        pairs = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels or ""))
        found.setdefault(name, []).append((pairs, float(value)))
    return found


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.geteuid() == 0:
            pytest.fail("chromium is missing although scripts/test.sh installs it (scripts/need-packages.sh chromium)")
        pytest.skip("no chromium: run scripts/test.sh as root (it installs Debian's chromium)")
    return path


def browse(url: str, *extra: str) -> subprocess.CompletedProcess:
    """Headless Chromium: the page loaded and its script run for 8 s of virtual time."""
    profile = tempfile.mkdtemp(prefix="jobmon-chromium-")
    try:
        return subprocess.run([chromium(), "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={profile}",
                               "--virtual-time-budget=8000", *extra, url],
                              capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_serve_shows_a_running_job_to_the_endpoints_and_in_a_real_browser(jm):
    job_id = jm.submit(jm.write_script("progress.sbatch", PROGRESS_JOB))
    wait_job_state(job_id, ("RUNNING",), 60)
    deadline = time.monotonic() + 60
    while not jm.status_row(job_id)["progress"] and time.monotonic() < deadline:
        time.sleep(1)
    assert jm.status_row(job_id)["progress"], "the monitor never read the job's progress"

    started = jm.jobmon("serve", "--port", "0", "--detach")
    assert started.returncode == 0, started.stdout + started.stderr
    base = re.search(r"serving (http://127\.0\.0\.1:\d+)/", started.stdout).group(1)
    try:
        status = jm.jobmon("status")
        assert re.search(r"serve: ALIVE pid \d+ .*" + re.escape(base), status.stdout), status.stdout

        code, _, body = get(base + "/healthz")
        health = json.loads(body)
        assert (code, health["status"]) == (200, "ok"), health
        assert health["scheduler_reachable"] is True and health["dead_monitors"] == []

        code, _, body = get(base + "/jobs")
        jobs = json.loads(body)
        assert code == 200 and jobs["count"] == len(jobs["jobs"]) >= 1
        row = [r for r in jobs["jobs"] if r["job_id"] == job_id][0]
        assert row["state"] == "RUNNING" and row["monitor"] == "ALIVE" and row["name"] == "serve<b>demo</b>"
        assert row["progress"]["total"] == 40

        code, _, body = get(f"{base}/jobs/{job_id}")
        detail = json.loads(body)
        assert code == 200 and detail["record"]["job_id"] == job_id
        assert any("step" in line for log in detail["logs"] for line in log["lines"])

        code, content_type, body = get(base + "/metrics")
        assert code == 200 and content_type.startswith("text/plain; version=0.0.4")
        metrics = parse_prometheus(body)
        assert ({"state": "RUNNING"}, 1.0) in metrics["jobmon_jobs"]
        assert ({"health": "ALIVE"}, 1.0) in metrics["jobmon_monitors"]
        squeue_calls = [value for labels, value in metrics["jobmon_scheduler_calls_total"]
                        if labels == {"command": "squeue"}]
        assert squeue_calls and squeue_calls[0] >= 1

        dom = browse(f"{base}/#job={job_id}", "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        html = dom.stdout
        assert f'data-job-id="{job_id}"' in html and 'data-state="RUNNING"' in html, html[-3000:]
        assert 'class="state RUNNING">RUNNING<' in html
        assert "serve&lt;b&gt;demo&lt;/b&gt;" in html and "<b>demo</b>" not in html, "the job name was parsed as HTML"
        assert 'role="progressbar"' in html and f"Job {job_id}" in html and "step " in html

        os.makedirs(ARTEFACTS, exist_ok=True)
        shot = os.path.join(ARTEFACTS, "serve-dashboard.png")
        if os.path.exists(shot):
            os.unlink(shot)
        taken = browse(f"{base}/#job={job_id}", f"--screenshot={shot}", "--window-size=412,1200")
        assert taken.returncode == 0 and os.path.getsize(shot) > 10_000, taken.stderr[-2000:]
        print(f"\ndashboard screenshot: {shot}")
    finally:
        stopped = jm.jobmon("serve", "--stop")
    assert stopped.returncode == 0 and "stopped the server" in stopped.stdout, stopped.stdout + stopped.stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + "/healthz", timeout=2)
        except (urllib.error.URLError, ConnectionError):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the server still answers after `jobmon serve --stop`")
    assert "serve:" not in jm.jobmon("status").stdout
    subprocess.run(["scancel", job_id], check=False)
