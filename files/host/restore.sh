#!/bin/bash
# Restore a backup made by backup.sh (BACKUP: its directory on this host) into the running
# stack: checksums verified, MLflow stopped, the database restored (pg_restore --clean
# --if-exists --no-owner --no-privileges: the tables become this server's role's; sequences
# come with the dump), the prefix made to hold exactly the backup's objects (through the S3
# API, into this server's bucket and prefix), then the stack started and awaited.
# Refuses (exit 3, nothing changed) when the database holds runs or registered models (the
# deploy's own smoke-test experiments aside), unless OVERWRITE is "yes".
# This server's passwords (.env) are kept: a backup holds none.
# Usage: restore.sh --stack-dir DIR --project NAME --db-role ROLE --database NAME --prefix PREFIX
#                   --backup DIR --overwrite yes|no --timeout SECONDS --held-query SQL
#                   (SQL: what counts as held runs and models, the deploy's HeldRecords fact's query)
#                   [--stop NAME]...     (what to stop meanwhile: MLflow, where it runs here)
#                   [--oneshot NAME]... --service NAME...   (what to wait for once it is up again)
set -euo pipefail
wait_for=() stop=()
while [ $# -gt 0 ]; do
    case $1 in
        --stop) stop+=("$2") ;;
        --oneshot) wait_for+=(--oneshot "$2") ;; --service) wait_for+=(--service "$2") ;;
        --stack-dir) dir=$2 ;; --project) project=$2 ;; --db-role) role=$2 ;; --database) database=$2 ;;
        --prefix) prefix=$2 ;; --backup) backup=$2 ;; --overwrite) overwrite=$2 ;; --timeout) timeout=$2 ;;
        --held-query) held_query=$2 ;;
        *) echo "restore.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift 2
done
: "${dir:?--stack-dir missing}" "${project:?--project missing}" "${role:?--db-role missing}"
: "${database:?--database missing}" "${prefix:?--prefix missing}" "${backup:?--backup missing}"
: "${overwrite:?--overwrite missing}" "${timeout:?--timeout missing}" "${held_query:?--held-query missing}"
[ ${#wait_for[@]} -gt 0 ] || { echo "restore.sh: no --service to wait for" >&2; exit 2; }
cd "$backup"
sha256sum --quiet --check SHA256SUMS
exec 9>"$(dirname "$backup")/.lock"
flock -w 3600 9
cd "$dir"
compose() { docker compose --project-name "$project" "$@"; }

held=$(compose exec -T postgres psql -X -w -At -U "$role" -d "$database" -c "$held_query")
if [ "$held" != 0 ] && [ "$overwrite" != yes ]; then
    echo "refusing to restore: the database holds $held runs and registered models; set restore_overwrite = True" \
         "to replace them. Nothing was changed." >&2
    exit 3
fi
started=$(date +%s)
[ ${#stop[@]} -eq 0 ] || compose stop "${stop[@]}"
compose exec -T postgres pg_restore --clean --if-exists --no-owner --no-privileges --exit-on-error \
    -U "$role" -d "$database" < "$backup/database.dump"
echo "database restored from $backup/database.dump" >&2
compose run --rm --no-deps -T -e ARTIFACT_PREFIX="$prefix" jobs \
    python /opt/mlflow-stack/artifacts_archive.py import < "$backup/artifacts.tar"
# migrate-db runs again: a backup of an older schema is brought to this MLflow's.
compose up -d
sh "$dir/wait-healthy.sh" --project "$project" --timeout "$timeout" "${wait_for[@]}"
echo "restored $backup in $(( $(date +%s) - started )) s"
