#!/usr/bin/env bash
# README's acceptance test: build a minimal Debian 12 root (debootstrap --variant=minbase, no python3,
# no Slurm), copy a clean clone of this repository's HEAD into it, and run README's two commands there
# as root, in order, timing each:
#     ./scripts/demo.sh        (sets up a local Slurm and runs the demo end to end)
#     ./scripts/test.sh        (runs the whole suite)
# The root runs in its own PID and mount namespaces (everything it started dies with it) but on this
# machine's network, for apt and pip. Its Slurm uses the same ports as this machine's local Slurm
# (scripts/slurm-local.sh), which is therefore stopped for the run and started again afterwards if it
# was running. Needs root and Debian's mirror; installs debootstrap if missing.
#
# Usage: scripts/fresh-debian.sh [FOLDER]    (default /var/tmp/jobmon-fresh-debian, made anew each run)
# Prints one line per command with its time and exit code, and exits non-zero if either failed.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
repo=$(pwd)
root=${1:-/var/tmp/jobmon-fresh-debian}
say() { printf '\n== fresh-debian: %s\n' "$*"; }

[ "$(id -u)" -eq 0 ] || { echo "fresh-debian: run as root (debootstrap and chroot need it)" >&2; exit 2; }
command -v debootstrap >/dev/null || bash scripts/need-packages.sh debootstrap
mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
mirror=${mirror:-http://deb.debian.org/debian}

say "minimal Debian 12 in $root from $mirror"
rm -rf "$root"
start=$SECONDS
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.debootstrap.log" 2>&1 ||
    { tail -20 "$root.debootstrap.log"; echo "fresh-debian: debootstrap failed (log: $root.debootstrap.log)" >&2; exit 1; }
echo "debootstrap: $((SECONDS - start)) s"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# Where this machine reaches the internet through a TLS-inspecting proxy, the root needs its CA
# certificates (ca-certificates, installed by the commands, picks them up) and pip's setting for them.
mkdir -p "$root/usr/local/share/ca-certificates"
cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$root/etc/pip.conf"
mkdir -p "$root/work"
git clone --quiet "$repo" "$root/work/jobmon"
[ -d ../shared ] && cp -r ../shared "$root/work/shared"   # beside the clone, as in CI

host_slurm=0
if [[ $(bash scripts/slurm-local.sh status 2>/dev/null || true) == *running* ]]; then
    host_slurm=1
    say "stopping this machine's local Slurm for the run (same ports)"
    bash scripts/slurm-local.sh stop
fi
restore() {
    if [ "$host_slurm" -eq 1 ]; then
        say "starting this machine's local Slurm again"
        bash "$repo/scripts/slurm-local.sh" start || bash "$repo/scripts/slurm-local.sh" setup
    fi
}
trap restore EXIT

# In the new namespaces: mount what a booted system has (this machine's /sys with its cgroup tree, /dev,
# a /proc of the new PID namespace, empty /run and /tmp), then the two commands in the root, each timed.
outer='
set -eu
mount -t proc proc "$ROOT/proc" && mount --rbind /sys "$ROOT/sys" && mount --rbind /dev "$ROOT/dev"
mount -t tmpfs tmpfs "$ROOT/run" && mount -t tmpfs tmpfs "$ROOT/tmp" && mount -t tmpfs tmpfs "$ROOT/dev/shm"
exec chroot "$ROOT" /bin/bash -c "$INNER"
'
inner='
set -u
export HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
cd /work/jobmon
failed=0
for command in ./scripts/demo.sh ./scripts/test.sh; do
    start=$(date +%s)
    "$command" >"/work/$(basename "$command" .sh).log" 2>&1
    code=$?
    echo "fresh-debian: $command: exit $code after $(( $(date +%s) - start )) s (log: '"$root"'/work/$(basename "$command" .sh).log)"
    [ "$code" -eq 0 ] || { failed=1; tail -30 "/work/$(basename "$command" .sh).log"; }
done
exit $failed
'
say "README's two commands in the fresh root"
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin ROOT="$root" INNER="$inner" \
    unshare --pid --fork --kill-child --mount --propagation private /bin/bash -c "$outer"
