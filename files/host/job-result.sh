#!/bin/bash
# A scheduled job's last result as Prometheus metrics: run by its unit when it stops
# (ExecStopPost, after a success or a failure), where systemd gives SERVICE_RESULT. Writes
# DIR/JOB.prom whole (a temporary file renamed), which the node exporter's textfile collector
# serves with metrics_networks (/metrics/host); status.py asks systemd itself.
# Usage: job-result.sh --job NAME --dir DIR
set -euo pipefail
while [ $# -gt 0 ]; do
    case $1 in
        --job) job=$2 ;; --dir) dir=$2 ;;
        *) echo "job-result.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift 2
done
: "${job:?--job missing}" "${dir:?--dir missing}"
success=0
[ "${SERVICE_RESULT:-}" = success ] && success=1
mkdir -p "$dir"
chmod 755 "$dir"
tmp=$(mktemp "$dir/.$job.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cat > "$tmp" <<METRICS
# HELP mlflow_stack_job_last_run_success 1 if the scheduled job's last run succeeded, else 0.
# TYPE mlflow_stack_job_last_run_success gauge
mlflow_stack_job_last_run_success{job="$job"} $success
# HELP mlflow_stack_job_last_run_end_seconds When the scheduled job's last run ended (Unix time).
# TYPE mlflow_stack_job_last_run_end_seconds gauge
mlflow_stack_job_last_run_end_seconds{job="$job"} $(date +%s)
METRICS
chmod 644 "$tmp"
mv -f "$tmp" "$dir/$job.prom"
