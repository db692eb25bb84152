#!/usr/bin/env bash
# Run jobmon's whole test suite: unit tests, lint (ruff) and type checks (mypy), and integration tests
# on a real local Slurm.
# As root on a fresh Debian 12 machine this first installs and starts the single-node Slurm
# (scripts/slurm-local.sh), creates the non-root user the integration tests run jobmon as, and
# builds a test virtualenv in .venv. Extra arguments go to pytest (e.g. -k monitor, -m "not integration").
# Tests run in parallel (pytest-xdist): JOBMON_TEST_WORKERS processes (default 4: the Slurm tests mostly
# wait for their jobs), or give -n yourself (-n 0: one process). Tests that stop a Slurm daemon run
# alone (tests/integration/test_outages.py, see tests/integration/conftest.py).
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

TEST_USER=${JOBMON_TEST_USER:-jobmon-it}
say() { printf 'test.sh: %s\n' "$*" >&2; }

if [ "$(id -u)" = 0 ]; then
    # What a minimal Debian 12 lacks: python3 and its venv module (for .venv, and for the non-root user's
    # first run, which builds jobmon's private venv), git (the upgrade tests read the previous version
    # from this clone's history), CA certificates (pip over https).
    # chromium: tests/integration/test_serve_on_slurm.py renders the dashboard in a real headless browser;
    # tmux: tests/integration/test_live.py drives `status --watch` in a real terminal (found missing by
    # scripts/fresh-debian.sh).
    bash scripts/need-packages.sh python3 python3-venv git ca-certificates chromium tmux
    bash scripts/slurm-local.sh setup
    if ! id "$TEST_USER" >/dev/null 2>&1; then
        say "creating the non-root test user $TEST_USER"
        useradd --create-home --shell /bin/bash "$TEST_USER"
    fi
    export JOBMON_TEST_USER="$TEST_USER"
else
    say "not root: integration tests run as $(id -un) and need Slurm already running (scripts/slurm-local.sh setup as root)"
fi

if ! command -v python3 >/dev/null 2>&1; then
    say "python3 not found: install python3 and python3-venv (as root this script does it)"
    exit 1
fi
# pytest < 9.2: pytest-xdist's `--dist loadgroup` (3.8) silently stops grouping on pytest 9.2 (xdist issue
# #1386), and the tests that stop Slurm daemons are one group.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import pytest, xdist, hypothesis, requests, filelock, ruff, mypy, tqdm
assert tuple(int(n) for n in pytest.__version__.split(".")[:2]) < (9, 2)' >/dev/null 2>&1; then
    say "building the test virtualenv in .venv"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check "pytest>=7,<9.2" "pytest-xdist>=3" "hypothesis>=6" \
        "ruff>=0.5" "mypy>=1.8" "requests>=2.25" "filelock>=3.4" "tqdm>=4.60"
fi

# jobmon's bytecode, as pip writes it at install: the daemons the tests start as a non-root user cannot
# write it into this checkout, and one that compiles jobmon itself keeps ~1 MB more (README, "Memory").
python3 -m compileall -q core >/dev/null

exec .venv/bin/python -m pytest -n "${JOBMON_TEST_WORKERS:-4}" --dist loadgroup "$@"
