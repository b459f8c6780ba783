#!/usr/bin/env bash
# Stop the daemons scripts/ci/slurm_up.sh started, by their pid files, newest first.
RUN=/run/slurm-ci
for daemon in slurmd slurmctld munged; do
  file=$RUN/$daemon.pid
  [ -s "$file" ] || continue
  pid=$(cat "$file")
  kill "$pid" 2>/dev/null && echo "stopped $daemon ($pid)"
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  rm -f "$file"
done
