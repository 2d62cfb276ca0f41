#!/bin/sh
# Back the tracking database up (pg_dump, custom format) before MLflow's schema is migrated;
# nothing when there is no database yet or its schema already is the expected revision.
# Run by the deploy only when it planned a migration (or could not ask a stopped database).
# Usage: backup-before-migrate.sh STACK_DIR PROJECT ROLE DATABASE EXPECTED_REVISION FILE TIMEOUT
set -eu
dir=$1 project=$2 role=$3 database=$4 expected=$5 file=$6 timeout=$7
if [ ! -s "$dir/data/postgres/PG_VERSION" ]; then
    echo "no database yet: nothing to back up"
    exit 0
fi
cd "$dir"
docker compose --project-name "$project" up -d --no-deps postgres
sh "$dir/wait-healthy.sh" "$project" "$timeout" postgres
current=$(docker compose --project-name "$project" exec -T postgres \
    psql -X -w -At -U "$role" -d "$database" -c 'select version_num from alembic_version' 2>/dev/null || true)
if [ -z "$current" ] || [ "$current" = "$expected" ]; then
    echo "schema revision ${current:-none}: nothing to migrate, no backup needed"
    exit 0
fi
umask 077
mkdir -p "$(dirname "$file")"
docker compose --project-name "$project" exec -T postgres pg_dump -Fc -U "$role" -d "$database" > "$file.part"
mv "$file.part" "$file"
echo "database (schema revision $current) backed up to $file before migrating to $expected"
