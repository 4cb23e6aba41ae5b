#!/usr/bin/env bash
# A one-host SLURM for the tests (tests/test_slurm.py), as root, without systemd. Debian 12.
#
# Installs Debian's slurm-wlm and munge (skipped when already installed), writes a minimal
# /etc/slurm/slurm.conf (+ gres.conf) for this host and starts munged, slurmctld and slurmd,
# each only when it is not already running. No accounting (slurmdbd): sacct fails, so the
# Snakemake executor must be run with `--slurm-status-command squeue --slurm-no-account`.
#
# GPUs: the node declares one fake GPU (GresTypes=gpu, gres.conf `File=` naming a device node
# created here, a copy of /dev/null), so jobs asking for `--gpus=1` / `--gres=gpu:1` are accepted,
# scheduled and run on this GPU-less host, and their GPU request is visible in
# `scontrol show job` (TresPerJob=gres:gpu:1). Code in the job sees CUDA_VISIBLE_DEVICES=0 but
# no CUDA device, and n2sr (device: auto) falls back to the CPU. (Without GresTypes/gres.conf,
# sbatch refuses --gpus=1: "Invalid generic resource (gres) specification".)
#
# Idempotent: a second call with everything running only checks the cluster. The daemons this
# call started are appended to $STATE_DIR/started as they start and printed on the last line as
# `N2SR_SLURM_STARTED=<names>`; slurm-down.sh stops those (and only those), by pid file. On a
# failure, this script stops what it started before exiting.
#
# Exit codes: 0 ready; 2 not root; 3 packages cannot be installed; 4 a daemon failed to start
# or the node is not usable (the daemon logs' tails are printed to stderr).
set -euo pipefail

PARTITION=${N2SR_SLURM_PARTITION:-debug}
STATE_DIR=${N2SR_SLURM_STATE:-/run/n2sr-slurm}
FAKE_GPU=/dev/n2sr-fake-gpu0
CONF=/etc/slurm/slurm.conf
HOST=$(hostname -s)
started=()

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() {  # die <code> <message>: stop what this call started, then exit
  local code=$1; shift
  echo "slurm-up: $*" >&2
  [ ${#started[@]} -gt 0 ] && bash "$HERE/slurm-down.sh" "${started[@]}" >&2
  exit "$code"
}
record() { started+=("$1"); echo "$1" >> "$STATE_DIR/started"; }
log_tails() {
  for f in /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log /var/log/munge/munged.log; do
    [ -f "$f" ] && { echo "--- tail $f" >&2; tail -n 15 "$f" >&2; }
  done
  return 0
}
alive() {  # alive <pidfile> <comm>: the pid file names a live process of that name
  [ -s "$1" ] || return 1
  local pid; pid=$(cat "$1")
  [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ]
}
wait_for() {  # wait_for <seconds> <command...>
  local n=$(( $1 * 4 )); shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  return 1
}

[ "$(id -u)" = 0 ] || die 2 "must run as root (installs packages, starts daemons)"

# --- packages
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
if ! installed slurm-wlm || ! installed munge; then
  command -v apt-get >/dev/null || die 3 "slurm-wlm/munge are not installed and there is no apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -q -o DPkg::Lock::Timeout=300 update >/dev/null || die 3 "apt-get update failed"
  apt-get -q -y -o DPkg::Lock::Timeout=300 install --no-install-recommends slurm-wlm munge >/dev/null 2>&1 \
    || die 3 "apt-get install slurm-wlm munge failed"
fi
for cmd in munged slurmctld slurmd sbatch squeue scontrol; do
  command -v "$cmd" >/dev/null || die 3 "$cmd not found after installing slurm-wlm and munge"
done
install -d -m 0755 "$STATE_DIR"

# --- munge (the Debian postinst creates /etc/munge/munge.key)
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --force
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi
install -d -o munge -g munge -m 0755 /run/munge
if ! alive /run/munge/munged.pid munged; then
  # --force: start despite a stale socket left by a killed munged
  runuser -u munge -- /usr/sbin/munged --force || { log_tails; die 4 "munged failed to start"; }
  record munged
fi
wait_for 10 sh -c 'munge -n | unmunge' || { log_tails; die 4 "munge does not work"; }

# --- configuration (rewritten only when the daemons are not running, so a running cluster
# keeps the configuration it was started with)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
[ -e "$FAKE_GPU" ] || mknod -m 0666 "$FAKE_GPU" c 1 3 2>/dev/null || touch "$FAKE_GPU"
MEM_MB=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
if ! alive /run/slurmctld.pid slurmctld && ! alive /run/slurmd.pid slurmd; then
  cat > "$CONF" <<EOC
# Written by n2sr tests/slurm/slurm-up.sh: a one-host test cluster without accounting.
ClusterName=n2sr-test
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
# Finished jobs stay visible to squeue/scontrol for 15 min: the executor's squeue status
# command needs >= 3x its first status interval, the test reads the jobs back after the run.
MinJobAge=900
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
GresTypes=gpu
# Loopback addresses: works whether or not the host name resolves.
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$MEM_MB Gres=gpu:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOC
  # One fake GPU: without File= the node would be marked invalid.
  echo "NodeName=$HOST Name=gpu File=$FAKE_GPU" > /etc/slurm/gres.conf
fi

# --- daemons
if ! alive /run/slurmctld.pid slurmctld; then
  # -c: forget jobs saved by an earlier test cluster (one killed mid-run would hold the node)
  slurmctld -c || { log_tails; die 4 "slurmctld failed to start"; }
  record slurmctld
fi
wait_for 20 scontrol ping || { log_tails; die 4 "slurmctld does not answer (scontrol ping)"; }
if ! alive /run/slurmd.pid slurmd; then
  slurmd || { log_tails; die 4 "slurmd failed to start"; }
  record slurmd
fi

node_ready() { sinfo -h -p "$PARTITION" -o %T | grep -Eq '^(idle|mixed|allocated)'; }
if ! wait_for 30 node_ready; then
  # a node left down/drained by an earlier run of this cluster
  scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
  wait_for 15 node_ready || { sinfo -N -l >&2; log_tails; die 4 "node $HOST is not usable in partition $PARTITION"; }
fi
scontrol show node "$HOST" | grep -q 'Gres=gpu' \
  || die 4 "the running SLURM declares no GPU gres on $HOST (started with another slurm.conf?); stop it first"

# --- smoke test: a 1-GPU batch job runs on the GPU-less node
out=$(mktemp /tmp/n2sr-slurm-smoke.XXXXXX)
jid=$(sbatch --parsable -p "$PARTITION" --gpus=1 -t 1 -o "$out" --wrap 'echo "$(hostname -s) CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"') \
  || { log_tails; die 4 "sbatch --gpus=1 was refused"; }
job_done() { scontrol show job "$jid" | grep -q 'JobState=COMPLETED'; }
wait_for 30 job_done || { scontrol show job "$jid" >&2; log_tails; die 4 "smoke job $jid did not complete"; }
echo "slurm-up: smoke job $jid (--gpus=1): $(cat "$out")"
rm -f "$out"
sinfo
echo "N2SR_SLURM_STARTED=${started[*]}"
