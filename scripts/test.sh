#!/usr/bin/env bash
# Run jobmon's whole test suite: unit tests, lint (ruff) and type checks (mypy), and integration tests
# on a real local Slurm.
# As root on a fresh Debian 12 machine this first installs and starts the single-node Slurm
# (scripts/slurm-local.sh), creates the non-root user the integration tests run jobmon as, and
# builds a test virtualenv in .venv. Extra arguments go to pytest (e.g. -k monitor, -m "not integration").
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

TEST_USER=${JOBMON_TEST_USER:-jobmon-it}
say() { printf 'test.sh: %s\n' "$*" >&2; }

if [ "$(id -u)" = 0 ]; then
    bash scripts/slurm-local.sh setup
    # The non-root account's system python3 must be able to build jobmon's private venv.
    if ! /usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        say "installing python3-venv for the non-root user's first run"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv >/dev/null
    fi
    if ! id "$TEST_USER" >/dev/null 2>&1; then
        say "creating the non-root test user $TEST_USER"
        useradd --create-home --shell /bin/bash "$TEST_USER"
    fi
    export JOBMON_TEST_USER="$TEST_USER"
else
    say "not root: integration tests run as $(id -un) and need Slurm already running (scripts/slurm-local.sh setup as root)"
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import pytest, hypothesis, requests, filelock, ruff, mypy, tqdm' >/dev/null 2>&1; then
    say "building the test virtualenv in .venv"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check "pytest>=7" "hypothesis>=6" "ruff>=0.5" "mypy>=1.8" \
        "requests>=2.25" "filelock>=3.4" "tqdm>=4.60"
fi

exec .venv/bin/python -m pytest "$@"
