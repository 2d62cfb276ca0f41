#!/bin/sh
# Dump the tracking database (pg_dump, custom format) into FILE (root, 0600) before a change the
# data must be protected from: a schema migration, a new MinIO image. The deploy decides when
# (mlflow_stack/steps/upgrades.py); this script decides nothing. Starts the database container
# if it is stopped; nothing when there is no database yet.
# Usage: backup-before-migrate.sh --stack-dir DIR --project NAME --db-role ROLE --database NAME
#        --file FILE --timeout SECONDS --before TEXT
set -eu
while [ $# -gt 0 ]; do
    case $1 in
        --stack-dir) dir=$2 ;; --project) project=$2 ;; --db-role) role=$2 ;; --database) database=$2 ;;
        --file) file=$2 ;; --timeout) timeout=$2 ;; --before) before=$2 ;;
        *) echo "backup-before-migrate.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift 2
done
: "${dir:?--stack-dir missing}" "${project:?--project missing}" "${role:?--db-role missing}"
: "${database:?--database missing}" "${file:?--file missing}" "${timeout:?--timeout missing}"
: "${before:?--before missing}"
if [ ! -s "$dir/data/postgres/PG_VERSION" ]; then
    echo "no database yet: nothing to back up"
    exit 0
fi
cd "$dir"
docker compose --project-name "$project" up -d --no-deps postgres
sh "$dir/wait-healthy.sh" --project "$project" --timeout "$timeout" --service postgres
umask 077
mkdir -p "$(dirname "$file")"
docker compose --project-name "$project" exec -T postgres pg_dump -Fc -U "$role" -d "$database" > "$file.part"
mv "$file.part" "$file"
echo "database backed up to $file before $before"
