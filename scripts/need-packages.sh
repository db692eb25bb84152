#!/usr/bin/env bash
# need-packages.sh PACKAGE...: install the Debian packages of this list that are not installed yet
# (as root; a quick no-op when all are there). scripts/demo.sh and scripts/test.sh use it for what a
# minimal Debian 12 (or the debian:12 container image) lacks: python3, python3-venv, git, ...
set -euo pipefail

say() { printf 'need-packages: %s\n' "$*" >&2; }

missing=()
for package in "$@"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$package")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
    say "missing Debian packages: ${missing[*]}; install them as root (apt-get install ${missing[*]})"
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt_opts=(-o DPkg::Lock::Timeout=300 -q)
# A fresh machine or container has empty package lists: update them when a package has no candidate.
for package in "${missing[@]}"; do
    if ! apt-cache policy "$package" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        say "apt-get update"
        apt-get "${apt_opts[@]}" update >/dev/null || { say "apt-get update failed"; exit 1; }
        break
    fi
done
say "installing ${missing[*]}"
if ! apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >/tmp/need-packages-apt.log 2>&1; then
    tail -n 20 /tmp/need-packages-apt.log >&2
    say "apt-get install ${missing[*]} failed (full log: /tmp/need-packages-apt.log)"
    exit 1
fi
