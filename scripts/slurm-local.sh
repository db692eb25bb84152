#!/usr/bin/env bash
# slurm-local.sh - install, configure and run a single-node Slurm cluster
# (slurmctld + slurmd + slurmdbd + munge + MariaDB) on a Debian machine
# without systemd. Meant for jobmon's integration tests and local use.
#
# Usage: slurm-local.sh [COMMAND]
#
#   setup        (default) install packages, write configs, start everything
#                and wait until the cluster is usable. Idempotent: when all is
#                already up and the configs are unchanged it is a quick no-op.
#   start        start every daemon that is not running, then wait until ready
#   stop         stop slurmd, slurmctld, slurmdbd, munged, mariadbd (SIGTERM)
#   restart      stop, then start
#   status       one line per daemon; exit 0 only when all of them run
#   stop-ctld    stop slurmctld only (simulates a controller outage)
#   start-ctld   start slurmctld only and wait until `scontrol ping` says UP
#   stop-dbd     stop slurmdbd only
#   start-dbd    start slurmdbd only and wait until it accepts connections
#   ctld-start-time
#                print slurmctld's start time as a Unix epoch float
#
# Environment:
#   SLURM_CGROUP   auto (default) | v1 | none
#                  auto: cgroup v1 plugins when a writable cgroup v1 memory
#                  controller exists, otherwise the `none` fallback
#                  (proctrack/linuxproc, task/none, jobacct_gather/linux).
#   SLURM_DB_PASS  password of the MariaDB user `slurm` (test-only default).
#   SLURM_LOCAL_TIMEOUT  seconds to wait for each daemon (default 60).

set -euo pipefail

readonly PROG=slurm-local
SCRIPT_PATH=$(readlink -f "${BASH_SOURCE[0]}")
readonly SCRIPT_PATH
# procps (pgrep) and iproute2 (ss, to name what holds a port) are missing from a minimal Debian 12.
readonly PACKAGES=(slurmctld slurmd slurmdbd slurm-client munge mariadb-server procps iproute2)
readonly DAEMONS_START_ORDER=(mariadbd munged slurmdbd slurmctld slurmd)
readonly DAEMONS_STOP_ORDER=(slurmd slurmctld slurmdbd munged mariadbd)

readonly SLURM_ETC=/etc/slurm
readonly SLURM_CONF=$SLURM_ETC/slurm.conf
readonly CGROUP_CONF=$SLURM_ETC/cgroup.conf
readonly SLURMDBD_CONF=$SLURM_ETC/slurmdbd.conf
readonly MARIADB_SNIPPET=/etc/mysql/mariadb.conf.d/60-slurm.cnf
readonly SLURM_RUN=/run/slurm
readonly SLURM_LOG=/var/log/slurm
readonly SLURM_STATE=/var/lib/slurm/slurmctld
readonly SLURMD_SPOOL=/var/lib/slurm/slurmd
readonly MARIADB_LOG=/var/log/mysql/mariadbd-slurm-local.log
readonly CLUSTER_NAME=localcluster
readonly DB_NAME=slurm_acct_db
readonly DBD_PORT=6819

SLURM_CGROUP=${SLURM_CGROUP:-auto}
SLURM_DB_PASS=${SLURM_DB_PASS:-slurmdbpass}
WAIT_TIMEOUT=${SLURM_LOCAL_TIMEOUT:-60}

# ----------------------------------------------------------------- helpers --

say() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

require_root() {
    [[ $(id -u) -eq 0 ]] || die "'$1' must be run as root (try: sudo $SCRIPT_PATH $1)"
}

require_debian() {
    if [[ ! -r /etc/debian_version ]] || ! command -v apt-get >/dev/null 2>&1 ||
        ! command -v dpkg-query >/dev/null 2>&1; then
        die "this script supports only Debian-like systems with apt-get/dpkg"
    fi
}

require_installed() {
    if ! command -v slurmctld >/dev/null 2>&1 || [[ ! -f $SLURM_CONF ]]; then
        die "Slurm is not installed/configured here; run '$SCRIPT_PATH setup' first"
    fi
}

now_ms() {
    local s=${EPOCHREALTIME/[.,]/}
    printf '%s' "${s:0:-3}"
}

elapsed_since() { # $1 = start in ms -> "1.23s"
    local d=$(($(now_ms) - $1))
    printf '%d.%02ds' $((d / 1000)) $((d % 1000 / 10))
}

# wait_for TIMEOUT_SECONDS COMMAND...: run COMMAND every 0.1 s until it
# succeeds (return 0) or the timeout passes (return 1).
wait_for() {
    local timeout=$1
    shift
    local deadline=$(($(now_ms) + timeout * 1000))
    until "$@"; do
        if (($(now_ms) > deadline)); then
            return 1
        fi
        sleep 0.1
    done
    return 0
}

# ------------------------------------------------------- daemon bookkeeping --

pidfile_of() {
    case $1 in
    mariadbd) echo /run/mysqld/mysqld.pid ;;
    munged) echo /run/munge/munged.pid ;;
    slurmdbd) echo "$SLURM_RUN/slurmdbd.pid" ;;
    slurmctld) echo "$SLURM_RUN/slurmctld.pid" ;;
    slurmd) echo "$SLURM_RUN/slurmd.pid" ;;
    *) die "unknown daemon '$1'" ;;
    esac
}

# True when PID is alive (not a zombie) and its comm is NAME.
pid_is() {
    local pid=$1 name=$2 comm stat rest
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $comm == "$name" ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    rest=${stat##*) }
    [[ ${rest:0:1} != Z ]]
}

# Print the PID of the running daemon NAME, or fail. Uses the pidfile and
# falls back to a process-table lookup (a pidfile may be stale or missing).
daemon_pid() {
    local name=$1 pidfile pid
    pidfile=$(pidfile_of "$name")
    if [[ -r $pidfile ]]; then
        read -r pid <"$pidfile" 2>/dev/null || pid=
        if pid_is "${pid:-}" "$name"; then
            echo "$pid"
            return 0
        fi
    fi
    for pid in $(pgrep -x "$name" 2>/dev/null || true); do
        if pid_is "$pid" "$name"; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}

is_running() { daemon_pid "$1" >/dev/null; }

# ------------------------------------------------------------ readiness ----

mariadb_ready() { mariadb-admin --connect-timeout=1 ping >/dev/null 2>&1; }
munge_ready() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
dbd_ready() { (exec 3<>"/dev/tcp/127.0.0.1/$DBD_PORT") 2>/dev/null; }
ctld_ready() {
    local out
    out=$(scontrol ping 2>/dev/null) || return 1
    [[ $out == *" is UP"* ]]
}
node_state() {
    local out
    out=$(sinfo -h -n "$(hostname -s)" -o %T 2>/dev/null) || true
    printf '%s\n' "${out%%$'\n'*}"
}
node_ready() {
    case $(node_state) in
    idle | mixed | allocated | completing) return 0 ;;
    *) return 1 ;;
    esac
}
sacct_ready() { sacct -n -X -j 1 -o JobID >/dev/null 2>&1; }

ready_check_of() {
    case $1 in
    mariadbd) echo mariadb_ready ;;
    munged) echo munge_ready ;;
    slurmdbd) echo dbd_ready ;;
    slurmctld) echo ctld_ready ;;
    slurmd) echo node_ready ;;
    esac
}

log_of() {
    case $1 in
    mariadbd) echo "$MARIADB_LOG" ;;
    munged) echo /var/log/munge/munged.log ;;
    *) echo "$SLURM_LOG/$1.log" ;;
    esac
}

port_of() {
    case $1 in
    mariadbd) echo 3306 ;;
    slurmdbd) echo "$DBD_PORT" ;;
    slurmctld) echo 6817 ;;
    slurmd) echo 6818 ;;
    esac
}

# Where a daemon's own stderr goes while it starts (before it opens its log file).
start_err_of() { echo "$SLURM_LOG/$1.start.err"; }

# Every daemon here is configured with localhost.
localhost_resolves() { getent hosts localhost >/dev/null 2>&1; }

# After NAME failed to start: the end of its log, and the causes this script can detect itself.
diagnose() {
    local name=$1 file port holder usage
    for file in "$(log_of "$name")" "$(start_err_of "$name")"; do
        if [[ -s $file ]]; then
            say "last lines of $file:"
            tail -n 15 "$file" | sed 's/^/    /' >&2
        fi
    done
    if ! localhost_resolves; then
        say "likely cause: 'localhost' does not resolve (no /etc/hosts, or no '127.0.0.1 localhost' line in it);" \
            "slurmdbd, slurmctld and MariaDB are configured with localhost"
    fi
    port=$(port_of "$name")
    if [[ -n $port ]] && ! is_running "$name"; then
        if command -v ss >/dev/null 2>&1; then
            holder=$(ss -Hltnp "sport = :$port" 2>/dev/null | sed -n 's/.*users:((\(.*\)))/\1/p' | head -n 1)
            [[ -z $holder ]] && holder=$(ss -Hltn "sport = :$port" 2>/dev/null | head -n 1)
            [[ -n $holder ]] && say "likely cause: TCP port $port, which $name needs, is in use by: $holder"
        elif (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            say "likely cause: TCP port $port, which $name needs, is in use by another process"
        fi
    fi
    case $name in
    slurmdbd | slurmctld | slurmd)
        is_running munged || say "likely cause: munged is not running (slurm-local.sh start starts it first)"
        ;;
    esac
    if [[ $name == slurmd ]] && ! grep -qs ' /sys/fs/cgroup ' /proc/mounts; then
        say "likely cause: no cgroup filesystem on /sys/fs/cgroup, which Slurm 22.05's slurmd needs even" \
            "without cgroup plugins (a chroot? mount it: mount --rbind /sys /sys)"
    fi
    if [[ $name == slurmdbd ]] && ! mariadb_ready; then
        say "likely cause: MariaDB does not answer (see $MARIADB_LOG)"
    fi
    usage=$(df -P "$SLURM_LOG" /var/lib 2>/dev/null | awk 'NR > 1 && $5 == "100%" { print $6 }' | sort -u)
    [[ -n $usage ]] && say "likely cause: no space left on $(echo $usage)"
    return 0
}

# ------------------------------------------------------------ start / stop --

launch() {
    local name=$1
    case $name in
    mariadbd)
        install -d -o mysql -g mysql -m 755 /run/mysqld
        install -d -o mysql -g adm -m 2750 /var/log/mysql
        if [[ ! -d /var/lib/mysql/mysql ]]; then
            say "initialising /var/lib/mysql"
            mariadb-install-db --user=mysql >/dev/null 2>&1 ||
                die "mariadb-install-db failed"
        fi
        setsid /usr/sbin/mariadbd --user=mysql \
            --pid-file=/run/mysqld/mysqld.pid \
            </dev/null >>"$MARIADB_LOG" 2>&1 &
        ;;
    munged)
        install -d -o munge -g munge -m 755 /run/munge
        if [[ ! -s /etc/munge/munge.key ]]; then
            say "creating /etc/munge/munge.key"
            runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
        fi
        runuser -u munge -- /usr/sbin/munged --force </dev/null >/dev/null 2>&1
        ;;
    slurmdbd | slurmctld | slurmd)
        prepare_slurm_dirs
        "/usr/sbin/$name" </dev/null >/dev/null 2>"$(start_err_of "$name")"
        ;;
    esac
}

# After slurmd is up: a node left DOWN/DRAINED by an unclean stop is resumed.
resume_node_if_needed() {
    local st
    st=$(node_state)
    case $st in
    down* | drain* | fail*)
        say "node is '$st', resuming it"
        scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true
        ;;
    esac
}

start_one() {
    local name=$1 t0 check
    check=$(ready_check_of "$name")
    if is_running "$name"; then
        if [[ $name == slurmd ]]; then
            "$check" || resume_node_if_needed
        fi
        wait_for "$WAIT_TIMEOUT" "$check" ||
            die "$name runs but is not ready after ${WAIT_TIMEOUT}s (see $(log_of "$name"))"
        return 0
    fi
    t0=$(now_ms)
    if ! launch "$name"; then
        diagnose "$name"
        die "$name failed to start (see $(log_of "$name"))"
    fi
    if [[ $name == slurmd ]]; then
        if ! wait_for 5 "$check"; then
            resume_node_if_needed
        fi
    fi
    if ! wait_for "$WAIT_TIMEOUT" ready_or_gone "$check" "$name" || ! "$check"; then
        diagnose "$name"
        is_running "$name" || die "$name exited right after start (see $(log_of "$name"))"
        die "$name not ready after ${WAIT_TIMEOUT}s (see $(log_of "$name"))"
    fi
    say "started $name (pid $(daemon_pid "$name" || echo '?'), $(elapsed_since "$t0"))"
}

# Ready, or no longer running (looked at twice, 1 s apart: a daemon may still be forking). Lets
# start_one say at once that a daemon died at start instead of waiting for the timeout.
ready_or_gone() {
    local check=$1 name=$2
    "$check" && return 0
    is_running "$name" && return 1
    sleep 1
    ! is_running "$name"
}

stop_one() {
    local name=$1 pid
    pid=$(daemon_pid "$name") || return 0
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for 30 not_running_pid "$pid" "$name"; then
        say "$name (pid $pid) ignored SIGTERM for 30s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_for 5 not_running_pid "$pid" "$name" ||
            die "could not stop $name (pid $pid)"
    fi
    say "stopped $name (pid $pid)"
}

not_running_pid() { ! pid_is "$1" "$2"; }

start_all() {
    local d
    for d in "${DAEMONS_START_ORDER[@]}"; do
        start_one "$d"
        if [[ $d == mariadbd ]]; then
            ensure_database
        fi
    done
    wait_for "$WAIT_TIMEOUT" sacct_ready ||
        die "sacct does not work after ${WAIT_TIMEOUT}s (see $SLURM_LOG/slurmdbd.log)"
}

stop_all() {
    local d
    for d in "${DAEMONS_STOP_ORDER[@]}"; do
        stop_one "$d"
    done
}

# ----------------------------------------------------------- installation --

all_installed() {
    local p st
    for p in "${PACKAGES[@]}"; do
        st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) || return 1
        [[ $st == installed ]] || return 1
    done
}

apt_has_candidates() {
    local p out
    for p in "${PACKAGES[@]}"; do
        out=$(apt-cache policy "$p" 2>/dev/null) || return 1
        [[ $out == *"Candidate: "[0-9]* ]] || return 1
    done
}

install_packages() {
    all_installed && return 0
    local t0 updated=0 made_policy=0 rc=0
    t0=$(now_ms)
    local -a apt_opts=(-o DPkg::Lock::Timeout=300 -q)
    export DEBIAN_FRONTEND=noninteractive
    if ! apt_has_candidates; then
        say "apt-get update"
        apt-get "${apt_opts[@]}" update >/dev/null || die "apt-get update failed"
        updated=1
    fi
    # Keep the maintainer scripts from starting daemons: this script starts
    # them itself. An existing policy-rc.d is left as it is.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\n# temporary, created by %s\nexit 101\n' "$PROG" >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    say "installing ${PACKAGES[*]}"
    local -a install_cmd=(apt-get "${apt_opts[@]}" install -y --no-install-recommends
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold
        "${PACKAGES[@]}")
    "${install_cmd[@]}" >/tmp/slurm-local-apt.log 2>&1 || rc=$?
    if ((rc != 0 && updated == 0)); then
        say "install failed; retrying after apt-get update"
        apt-get "${apt_opts[@]}" update >/dev/null || die "apt-get update failed"
        rc=0
        "${install_cmd[@]}" >/tmp/slurm-local-apt.log 2>&1 || rc=$?
    fi
    if ((made_policy)); then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
    ((rc == 0)) || die "apt-get install failed (see /tmp/slurm-local-apt.log)"
    say "packages installed ($(elapsed_since "$t0"))"
}

# ---------------------------------------------------------------- configs --

# Decide the cgroup mode: prints v1 or none.
cgroup_mode() {
    case $SLURM_CGROUP in
    v1 | none)
        echo "$SLURM_CGROUP"
        return 0
        ;;
    auto) ;;
    *) die "SLURM_CGROUP must be auto, v1 or none (got '$SLURM_CGROUP')" ;;
    esac
    local probe=/sys/fs/cgroup/memory/.slurm-local-probe.$$
    if awk '$2 == "/sys/fs/cgroup/memory" && $3 == "cgroup" { f = 1 } END { exit !f }' /proc/mounts &&
        mkdir "$probe" 2>/dev/null; then
        rmdir "$probe" 2>/dev/null || true
        echo v1
    else
        echo none
    fi
}

# The node line from `slurmd -C`, with NodeAddr and RealMemory minus 1024.
node_line() {
    local host=$1 line mem
    line=$(slurmd -C 2>/dev/null | grep -m1 '^NodeName=') ||
        die "slurmd -C printed no NodeName line"
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$line")
    [[ $mem =~ ^[0-9]+$ ]] || die "slurmd -C printed no RealMemory: $line"
    mem=$((mem > 2048 ? mem - 1024 : mem / 2))
    line=$(sed -E "s/^NodeName=[^ ]+/NodeName=$host NodeAddr=127.0.0.1/; s/RealMemory=[0-9]+/RealMemory=$mem/" <<<"$line")
    printf '%s State=UNKNOWN\n' "$line"
}

render_slurm_conf() {
    local host=$1 mode=$2
    cat <<EOF
# Written by scripts/slurm-local.sh ($PROG) - changes are overwritten.
ClusterName=$CLUSTER_NAME
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$SLURM_STATE
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldPidFile=$SLURM_RUN/slurmctld.pid
SlurmdPidFile=$SLURM_RUN/slurmd.pid
SlurmctldLogFile=$SLURM_LOG/slurmctld.log
SlurmdLogFile=$SLURM_LOG/slurmd.log
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MessageTimeout=3
MinJobAge=5
KillWait=2
OverTimeLimit=0

SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,sched_min_interval=0,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024

EOF
    if [[ $mode == v1 ]]; then
        cat <<EOF
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
JobAcctGatherType=jobacct_gather/cgroup
EOF
    else
        cat <<EOF
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherParams=OverMemoryKill
EOF
    fi
    cat <<EOF
JobAcctGatherFrequency=task=1

AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
JobCompType=jobcomp/none

$(node_line "$host")
PartitionName=debug Nodes=$host Default=YES OverSubscribe=FORCE:4 MaxTime=INFINITE State=UP
EOF
}

render_cgroup_conf() {
    local mode=$1
    echo "# Written by scripts/slurm-local.sh ($PROG) - changes are overwritten."
    if [[ $mode == v1 ]]; then
        echo "CgroupPlugin=cgroup/v1"
        echo "ConstrainRAMSpace=yes"
        if [[ -e /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes ]]; then
            echo "ConstrainSwapSpace=yes"
            echo "AllowedSwapSpace=0"
        fi
    else
        echo "# SLURM_CGROUP=none: no cgroup plugin is used (see slurm.conf)."
        echo "ConstrainRAMSpace=no"
    fi
}

render_slurmdbd_conf() {
    cat <<EOF
# Written by scripts/slurm-local.sh ($PROG) - changes are overwritten.
AuthType=auth/munge
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=slurm
LogFile=$SLURM_LOG/slurmdbd.log
PidFile=$SLURM_RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=slurm
StoragePass=$SLURM_DB_PASS
StorageLoc=$DB_NAME
EOF
}

render_mariadb_snippet() {
    cat <<EOF
# Written by scripts/slurm-local.sh ($PROG) for slurmdbd.
[mysqld]
bind-address=127.0.0.1
innodb_buffer_pool_size=1024M
innodb_lock_wait_timeout=900
EOF
}

# write_if_changed PATH MODE OWNER CONTENT: returns 0 when the file was
# (re)written, 1 when it already had this content, mode and owner.
write_if_changed() {
    local path=$1 mode=$2 owner=$3 content=$4 tmp
    if [[ -f $path ]] && [[ $(<"$path") == "$content" ]] &&
        [[ $(stat -c '%a %U:%G' "$path") == "$mode $owner" ]]; then
        return 1
    fi
    install -d -m 755 "$(dirname "$path")"
    tmp=$(mktemp "$path.XXXXXX")
    printf '%s\n' "$content" >"$tmp"
    chmod "$mode" "$tmp"
    chown "$owner" "$tmp"
    mv -f "$tmp" "$path"
    say "wrote $path"
    return 0
}

prepare_slurm_dirs() {
    install -d -o slurm -g slurm -m 755 "$SLURM_RUN" "$SLURM_LOG" "$SLURM_STATE"
    install -d -o root -g root -m 755 "$SLURMD_SPOOL"
}

# Writes all config files; sets CHANGED to the daemons whose config changed.
CHANGED=()
write_configs() {
    local host mode
    local -a changed=()
    host=$(hostname -s)
    mode=$(cgroup_mode)
    prepare_slurm_dirs
    if write_if_changed "$MARIADB_SNIPPET" 644 root:root "$(render_mariadb_snippet)"; then
        changed+=(mariadbd slurmdbd)
    fi
    if write_if_changed "$SLURMDBD_CONF" 600 slurm:slurm "$(render_slurmdbd_conf)"; then
        changed+=(slurmdbd)
    fi
    if write_if_changed "$CGROUP_CONF" 644 root:root "$(render_cgroup_conf "$mode")"; then
        changed+=(slurmctld slurmd)
    fi
    if write_if_changed "$SLURM_CONF" 644 root:root "$(render_slurm_conf "$host" "$mode")"; then
        changed+=(slurmctld slurmd)
    fi
    CHANGED=("${changed[@]}")
}

sql_quote() { # escape for a single-quoted SQL string
    local s=${1//\\/\\\\}
    printf '%s' "${s//\'/\'\'}"
}

ensure_database() {
    local pass
    pass=$(sql_quote "$SLURM_DB_PASS")
    mariadb --connect-timeout=5 <<EOF || die "could not create the database/user in MariaDB"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pass';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$pass';
GRANT ALL ON $DB_NAME.* TO 'slurm'@'localhost';
EOF
}

# --------------------------------------------------------------- commands --

# A debootstrapped root (or a container without one) has no /etc/hosts: every daemon here is configured
# with localhost, so make it resolve, and say so.
ensure_localhost() {
    localhost_resolves && return 0
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >>/etc/hosts
    say "'localhost' did not resolve: added it to /etc/hosts"
}

cmd_setup() {
    require_root setup
    require_debian
    local t0 d
    t0=$(now_ms)
    ensure_localhost
    install_packages
    write_configs
    # Restart (in stop order) the running daemons whose config changed.
    for d in "${DAEMONS_STOP_ORDER[@]}"; do
        if [[ " ${CHANGED[*]} " == *" $d "* ]] && is_running "$d"; then
            say "config changed: restarting $d"
            stop_one "$d"
        fi
    done
    start_all
    say "cluster ready: $(hostname -s) is $(node_state), partition debug ($(elapsed_since "$t0"))"
}

cmd_start() {
    require_root start
    require_installed
    local t0
    t0=$(now_ms)
    start_all
    say "cluster ready ($(elapsed_since "$t0"))"
}

cmd_stop() {
    require_root stop
    stop_all
}

cmd_restart() {
    require_root restart
    require_installed
    local t0
    t0=$(now_ms)
    stop_all
    start_all
    say "cluster restarted ($(elapsed_since "$t0"))"
}

cmd_status() {
    local d pid rc=0
    for d in "${DAEMONS_START_ORDER[@]}"; do
        if pid=$(daemon_pid "$d"); then
            printf '%-10s running pid %s\n' "$d" "$pid"
        else
            printf '%-10s stopped\n' "$d"
            rc=1
        fi
    done
    return "$rc"
}

cmd_ctld_start_time() {
    local pid stat rest hz btime starttime up now
    pid=$(daemon_pid slurmctld) || die "slurmctld is not running"
    stat=$(<"/proc/$pid/stat")
    rest=${stat##*) }
    # shellcheck disable=SC2086 # deliberate word splitting of the fields
    set -- $rest
    # field 22 (starttime) is the 20th field after "pid (comm)".
    starttime=${20}
    hz=$(getconf CLK_TCK)
    btime=$(awk '$1 == "btime" { print $2 }' /proc/stat)
    read -r up _ </proc/uptime
    now=$EPOCHREALTIME
    # btime has whole-second resolution; use now - uptime instead when it
    # agrees with btime to within a second (it has sub-second resolution).
    awk -v b="$btime" -v n="${now/,/.}" -v u="$up" -v s="$starttime" -v hz="$hz" 'BEGIN {
        boot = n - u
        if (boot - b < -1 || boot - b > 1) boot = b
        printf "%.3f\n", boot + s / hz
    }'
}

usage() {
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$SCRIPT_PATH" >&2
}

main() {
    cd /
    local cmd=${1:-setup}
    case $cmd in
    setup) cmd_setup ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_restart ;;
    status) cmd_status ;;
    stop-ctld)
        require_root "$cmd"
        stop_one slurmctld
        ;;
    start-ctld)
        require_root "$cmd"
        require_installed
        start_one slurmctld
        ;;
    stop-dbd)
        require_root "$cmd"
        stop_one slurmdbd
        ;;
    start-dbd)
        require_root "$cmd"
        require_installed
        start_one slurmdbd
        ;;
    ctld-start-time) cmd_ctld_start_time ;;
    -h | --help | help) usage ;;
    *)
        usage
        die "unknown command '$cmd'"
        ;;
    esac
}

main "$@"
