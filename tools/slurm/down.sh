#!/usr/bin/env bash
# Stops the daemons tools/slurm/up.sh started (and only those: the pids it recorded). Idempotent.
# Leaves the generated /etc/slurm/slurm.conf and $LDAE_SLURM_STATE (logs, jobcomp.log) in place.
set -uo pipefail

STATE=${LDAE_SLURM_STATE:-/var/lib/ldae-slurm}

stop() {
    local name=$1 pidfile=$STATE/$1.pid pid
    [[ -s $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        echo "[slurm-down] stopped $name (pid $pid)"
    fi
    rm -f "$pidfile"
}

# slurmd before slurmctld before munged (both slurm daemons authenticate through munge)
stop slurmd
stop slurmctld
stop munged
