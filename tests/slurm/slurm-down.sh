#!/usr/bin/env bash
# Stops the SLURM/munge daemons that tests/slurm/slurm-up.sh started, by their pid files.
#   slurm-down.sh                 every daemon recorded in $STATE_DIR/started (by any up call)
#   slurm-down.sh slurmd munged   only these (the fixture passes what its own up call started)
# A daemon that up did not start (already running before) is never stopped.
set -uo pipefail
STATE_DIR=${N2SR_SLURM_STATE:-/run/n2sr-slurm}
LIST="$STATE_DIR/started"

declare -A PIDFILE=([slurmd]=/run/slurmd.pid [slurmctld]=/run/slurmctld.pid [munged]=/run/munge/munged.pid)

if [ $# -gt 0 ]; then
  wanted=("$@")
else
  mapfile -t wanted < <([ -f "$LIST" ] && sort -u "$LIST")
fi

stop() {  # stop <name>: TERM, wait up to 10 s, then KILL; only if the pid file names that daemon
  local name=$1 f=${PIDFILE[$1]:-} pid
  [ -n "$f" ] || { echo "slurm-down: unknown daemon '$name'" >&2; return; }
  [ -f "$LIST" ] && grep -qx "$name" "$LIST" || { echo "slurm-down: $name was not started by slurm-up.sh; left alone"; return; }
  if [ -s "$f" ] && pid=$(cat "$f") && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then
    kill "$pid"
    for _ in $(seq 40); do [ -d "/proc/$pid" ] || break; sleep 0.25; done
    [ -d "/proc/$pid" ] && kill -9 "$pid"
    echo "slurm-down: stopped $name ($pid)"
  else
    echo "slurm-down: $name is not running"
  fi
  sed -i "/^$name\$/d" "$LIST"
}

# Jobs still queued or running on a controller we are about to stop (e.g. a test interrupted
# mid-run) are cancelled first: slurmstepd outlives slurmd and would keep running them.
for w in "${wanted[@]}"; do
  if [ "$w" = slurmctld ] && [ -f "$LIST" ] && grep -qx slurmctld "$LIST" \
     && ids=$(squeue -h -o %i 2>/dev/null) && [ -n "$ids" ]; then
    echo "slurm-down: cancelling jobs $(echo $ids)"
    scancel $ids 2>/dev/null
    for _ in $(seq 60); do [ -z "$(squeue -h -t RUNNING,COMPLETING,PENDING -o %i 2>/dev/null)" ] && break; sleep 0.25; done
  fi
done

# slurmd before slurmctld before munged (both SLURM daemons authenticate through munge)
for name in slurmd slurmctld munged; do
  for w in "${wanted[@]}"; do [ "$w" = "$name" ] && stop "$name"; done
done
exit 0
