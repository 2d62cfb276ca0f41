#!/bin/bash
# Back the stack up into BACKUPS/NAME (root, 0700; files 0600):
#   database.dump  the tracking database (pg_dump -Fc, through the database container)
#   artifacts.tar  every object under the artifact prefix, exported through the S3 API
#   manifest.json  MLflow version, schema revision, object count and bytes, checksums, time
#   SHA256SUMS     checksums of the two data files (restore.sh checks them first)
# The database is dumped FIRST: every artifact a dumped run refers to was written before the
# dump, so it is in the tar (objects logged meanwhile are extra, and harmless).
# Then only the KEEP newest mlflow-backup-* directories in BACKUPS are kept. No password is
# written anywhere: .env is not part of a backup. Run by `pyinfra inventory.py backup.py` and
# by the mlflow-backup timer.
# The MLflow version is the one of the image the jobs service runs (the stack's own), so the
# timer's unit does not change with every upgrade.
# Usage: backup.sh --stack-dir DIR --project NAME --db-role ROLE --database NAME --bucket NAME
#                  --prefix PREFIX --backups DIR --keep N [--name NAME]
set -euo pipefail
name=mlflow-backup-$(date -u +%Y%m%dT%H%M%SZ)
while [ $# -gt 0 ]; do
    case $1 in
        --stack-dir) dir=$2 ;; --project) project=$2 ;; --db-role) role=$2 ;; --database) database=$2 ;;
        --bucket) bucket=$2 ;; --prefix) prefix=$2 ;; --backups) backups=$2 ;; --keep) keep=$2 ;;
        --name) name=$2 ;;
        *) echo "backup.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift 2
done
: "${dir:?--stack-dir missing}" "${project:?--project missing}" "${role:?--db-role missing}"
: "${database:?--database missing}" "${bucket:?--bucket missing}" "${prefix:?--prefix missing}"
: "${backups:?--backups missing}" "${keep:?--keep missing}"
umask 077
mkdir -p "$backups"
chmod 700 "$backups"
# One backup, restore or garbage collection at a time.
exec 9>"$backups/.lock"
flock -w 3600 9
cd "$dir"
started=$(date +%s)
part="$backups/.$name.part"
rm -rf "$part"
mkdir "$part"
trap 'rm -rf "$part"' EXIT

revision=$(docker compose --project-name "$project" exec -T postgres \
    psql -X -w -At -U "$role" -d "$database" -c 'select version_num from alembic_version')
docker compose --project-name "$project" exec -T postgres pg_dump -Fc -U "$role" -d "$database" \
    > "$part/database.dump"
echo "database (schema revision $revision) dumped: $(stat -c %s "$part/database.dump") bytes" >&2
docker compose --project-name "$project" run --rm --no-deps -T -e ARTIFACT_PREFIX="$prefix" jobs \
    python /opt/mlflow-stack/artifacts_archive.py export > "$part/artifacts.tar"
(cd "$part" && sha256sum database.dump artifacts.tar > SHA256SUMS)
# The manifest (sizes, checksums, objects in the archive, the image's MLflow version), written in
# Python from the two files themselves, streamed to a one-off of the jobs service.
tar -C "$part" -c database.dump artifacts.tar | docker compose --project-name "$project" run --rm --no-deps -T \
    jobs python /opt/mlflow-stack/backup_manifest.py --name "$name" --schema-revision "$revision" \
    --host "$(hostname)" --bucket "$bucket" --prefix "$prefix" --started "$started" > "$part/manifest.json"
cd "$backups"
mv "$part" "$name"
trap - EXIT

# Retention: the names sort by time.
ls -1d mlflow-backup-* | sort | head -n "-$keep" | while read -r old; do
    rm -rf -- "$old"
    echo "removed $backups/$old (keeping the $keep newest)" >&2
done
echo "backup $backups/$name: database $(stat -c %s "$name/database.dump") bytes, artifacts $(stat -c %s "$name/artifacts.tar") bytes, $(( $(date +%s) - started )) s"
