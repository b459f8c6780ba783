#!/usr/bin/env bash
# A single-node SLURM cluster on loopback for the tests (Debian/Ubuntu, run as root; no systemd needed).
# Installs slurmctld, slurmd and munge with apt when missing, writes /etc/slurm/slurm.conf, starts the
# daemons and waits until the node is idle. Stop them with scripts/ci/slurm_down.sh.
#   SLURM_CI_CPUS  CPUs the node advertises (default: max(nproc, 4); may exceed nproc)
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "slurm_up.sh: needs root (it installs packages and starts daemons); skipping" >&2
  exit 0
fi
if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)$'; then
  echo "slurm_up.sh: a cluster is already up"; exit 0
fi

export DEBIAN_FRONTEND=noninteractive
PACKAGES="slurmctld slurmd slurm-client munge"
missing=$(for p in $PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  apt-get update -q
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $missing
fi

NODE=$(hostname -s)
CPUS=${SLURM_CI_CPUS:-$(( $(nproc) > 4 ? $(nproc) : 4 ))}
# Without RealMemory every --mem request (submitit's mem_gb) is refused.
MEMORY=$(( $(free -m | awk '/^Mem:/{print $2}') - 1024 ))
STATE=/var/spool/slurm-ci
LOGS=/var/log/slurm-ci
RUN=/run/slurm-ci
mkdir -p "$STATE/ctld" "$STATE/d" "$LOGS" "$RUN" /run/munge /etc/slurm
chown munge:munge /run/munge

if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --force 2>/dev/null || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi

# cred_expire: how long a requeued job waits before it may start again (default 120 s).
# sched_interval/bf_interval: schedule every second, so requeued jobs restart within seconds.
# linuxproc + task/none: no cgroups. SlurmdParameters=config_overrides: CPUs may exceed the real count.
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=ci
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=5
CredType=cred/munge
MpiDefault=none
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
ReturnToService=2
MailProg=/bin/true
JobRequeue=1
KillWait=10
MinJobAge=300
OverTimeLimit=0
InactiveLimit=0
Waittime=0
SlurmctldPidFile=${RUN}/slurmctld.pid
SlurmdPidFile=${RUN}/slurmd.pid
StateSaveLocation=${STATE}/ctld
SlurmdSpoolDir=${STATE}/d
SlurmctldLogFile=${LOGS}/slurmctld.log
SlurmdLogFile=${LOGS}/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEMORY} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
CONF

runuser -u munge -- /usr/sbin/munged
cp /run/munge/munged.pid "$RUN/munged.pid"
/usr/sbin/slurmctld
/usr/sbin/slurmd
for _ in $(seq 1 60); do
  sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)$' && break
  sleep 0.5
done
sinfo
