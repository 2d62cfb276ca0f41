#!/bin/sh
# Back the tracking database up (pg_dump, custom format) before MLflow's schema is migrated;
# nothing when there is no database yet or its schema already is the expected revision,
# unless REASON is given (another change the data must be protected from, e.g. a new MinIO
# image): then the backup is taken anyway.
# Run by the deploy only when it planned one of these (or could not ask a stopped database).
# Refuses (exit 1, nothing changed) a revision this MLflow cannot migrate from (a downgrade).
# Usage: backup-before-migrate.sh --stack-dir DIR --project NAME --db-role ROLE --database NAME
#        --expected-revision REV --file FILE --timeout SECONDS --known-revisions REV,REV,... [--reason TEXT]
set -eu
reason=
while [ $# -gt 0 ]; do
    case $1 in
        --stack-dir) dir=$2 ;; --project) project=$2 ;; --db-role) role=$2 ;; --database) database=$2 ;;
        --expected-revision) expected=$2 ;; --file) file=$2 ;; --timeout) timeout=$2 ;;
        --known-revisions) known=$2 ;; --reason) reason=$2 ;;
        *) echo "backup-before-migrate.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift 2
done
: "${dir:?--stack-dir missing}" "${project:?--project missing}" "${role:?--db-role missing}"
: "${database:?--database missing}" "${expected:?--expected-revision missing}" "${file:?--file missing}"
: "${timeout:?--timeout missing}" "${known:?--known-revisions missing}"
if [ ! -s "$dir/data/postgres/PG_VERSION" ]; then
    echo "no database yet: nothing to back up"
    exit 0
fi
cd "$dir"
docker compose --project-name "$project" up -d --no-deps postgres
sh "$dir/wait-healthy.sh" --project "$project" --timeout "$timeout" --service postgres
if answer=$(docker compose --project-name "$project" exec -T postgres \
        psql -X -w -At -U "$role" -d "$database" -c 'select version_num from alembic_version' 2>&1); then
    current=$answer
else
    case "$answer" in
        *'"alembic_version" does not exist'*) current= ;;  # no MLflow tables yet
        *) echo "cannot read the schema revision: $answer" >&2; exit 1 ;;
    esac
fi
if [ -z "$reason" ] && { [ -z "$current" ] || [ "$current" = "$expected" ]; }; then
    echo "schema revision ${current:-none}: nothing to migrate, no backup needed"
    exit 0
fi
if [ -n "$current" ] && [ "$current" != "$expected" ]; then
    case ",$known," in
        *",$current,"*) ;;
        *) echo "refusing: the database has schema revision $current, which this MLflow (revision $expected)" \
                "cannot migrate from (a newer release made it, or an unknown one). Nothing was changed." >&2
           exit 1 ;;
    esac
fi
umask 077
mkdir -p "$(dirname "$file")"
docker compose --project-name "$project" exec -T postgres pg_dump -Fc -U "$role" -d "$database" > "$file.part"
mv "$file.part" "$file"
if [ -n "$reason" ]; then
    echo "database (schema revision ${current:-none}) backed up to $file before $reason"
else
    echo "database (schema revision $current) backed up to $file before migrating to $expected"
fi
