#!/bin/bash
# Garbage collection: `mlflow gc --older-than KEEP` removes for good the runs (and experiments
# and logged models) deleted longer ago than KEEP, their artifacts included; what was deleted
# more recently stays restorable. Prints each removal and a summary line; fails (and so does
# the mlflow-gc service) when gc fails.
# gc runs inside the running MLflow container: proxied artifacts are deleted THROUGH the
# server, so gc calls it (as the admin; the password comes from the container's environment,
# never from a command line), and it reaches the database with a URI that holds no password
# (libpq reads PGPASSWORD from the same environment).
# Takes the backups' lock: never while a backup or a restore runs.
# Run by the mlflow-gc timer.
# Usage: gc.sh --stack-dir DIR --project NAME --database-uri URI --keep AGE --admin-user NAME
#              --backups DIR   (the URI holds no password)
set -euo pipefail
while [ $# -gt 0 ]; do
    case $1 in
        --stack-dir) dir=$2 ;; --project) project=$2 ;; --database-uri) uri=$2 ;; --keep) keep=$2 ;;
        --admin-user) admin=$2 ;; --backups) backups=$2 ;;
        *) echo "gc.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift 2
done
: "${dir:?--stack-dir missing}" "${project:?--project missing}" "${uri:?--database-uri missing}"
: "${keep:?--keep missing}" "${admin:?--admin-user missing}" "${backups:?--backups missing}"
umask 077
mkdir -p "$backups"
chmod 700 "$backups"
exec 9>"$backups/.lock"
flock -w 3600 9
cd "$dir"
started=$(date +%s)
out=$(mktemp)
trap 'rm -f "$out"' EXIT

docker compose --project-name "$project" exec -T mlflow sh -c '
    export MLFLOW_TRACKING_URI=http://127.0.0.1:5000 MLFLOW_TRACKING_USERNAME="$1"
    export MLFLOW_TRACKING_PASSWORD="$MLFLOW_AUTH_ADMIN_PASSWORD"
    exec mlflow gc --older-than "$2" --backend-store-uri "$3"' \
    gc "$admin" "$keep" "$uri" < /dev/null | tee "$out"

count() { grep -c "^$1 with ID .* has been permanently deleted" "$out" || true; }
echo "gc: removed $(count Run) runs, $(count Experiment) experiments and $(count 'Logged model') logged models" \
     "deleted longer ago than $keep, with their artifacts, in $(( $(date +%s) - started )) s"
