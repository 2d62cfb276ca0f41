"""Upgrades that keep the data: refuse what would break the database, back it up before a
schema migration. The migration itself is the `migrate-db` one-shot of the compose file,
which MLflow waits for."""

from __future__ import annotations

import re
import time

from pyinfra import host
from pyinfra.api import DeployError, deploy
from pyinfra.operations import server

from mlflow_stack.config import StackConfig, config_from_host
from mlflow_stack.facts.host import ComposeServices, DatabaseCluster
from mlflow_stack.config.releases import SCHEMA_REVISIONS, version_key
from mlflow_stack.steps.stack_files import script_command
from mlflow_stack.steps.verify import report


def image_major(image: str) -> str | None:
    """PostgreSQL major of an image reference by its tag ('postgres:17.2-bookworm' -> '17');
    None when the tag does not say (a digest, 'latest')."""
    name = image.split("@", 1)[0]
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
    major = re.match(r"\d+", tag)
    return major.group(0) if major else None


def releases_with(revision: str) -> list[str]:
    return [version for version, known in SCHEMA_REVISIONS.items() if known == revision]


def check_postgres_major(config: StackConfig, data_major: str | None) -> None:
    wanted = image_major(config.postgres_image)
    if data_major and wanted and data_major != wanted:
        raise DeployError(
            f"on {host.name}: postgres_image = {config.postgres_image!r} is PostgreSQL {wanted}, but "
            f"{config.data_dir}/postgres holds a PostgreSQL {data_major} cluster, which {wanted} cannot open. "
            "Nothing was changed. To move to another major: set postgres_image back, back the database up "
            "(pg_dump -Fc), move data/postgres aside, deploy the new major, restore with pg_restore "
            "(docs/upgrades.md)"
        )


def check_schema_revision(config: StackConfig, revision: str | None) -> bool:
    """True when a migration is needed; DeployError when the database is newer than the
    configured MLflow (a downgrade) or made by a release this project does not know."""
    expected = config.mlflow_schema_revision
    if revision is None or revision == expected:
        return False
    made_by = releases_with(revision)
    if not made_by:
        raise DeployError(
            f"on {host.name}: the database has MLflow schema revision {revision}, which no supported MLflow "
            f"release ({', '.join(SCHEMA_REVISIONS)}) knows. Nothing was changed. Back the database up and "
            "migrate it by hand (mlflow db upgrade), or restore a backup")
    newer = [v for v in made_by if version_key(v) > version_key(config.mlflow_version)]
    if newer:
        raise DeployError(
            f"on {host.name}: mlflow_version = {config.mlflow_version!r} expects schema revision {expected}, but the "
            f"database has revision {revision} (MLflow {made_by[0]} to {made_by[-1]}): MLflow cannot downgrade a "
            f"schema. Nothing was changed. Set mlflow_version back (to {made_by[-1]} or later), or restore the "
            f"backup taken before the upgrade (in {config.backups_dir})")
    return True


def minio_image_change(config: StackConfig, services: dict) -> str | None:
    """'the MinIO image changes from A to B' when the running object store was started from
    another image than the configured one: a MinIO release may change its on-disk format, so
    the database (which names every artifact) is backed up first. None otherwise."""
    running = services.get("minio", {}).get("image")
    if running and running != config.minio_image:
        return f"the MinIO image changes from {running} to {config.minio_image}"
    return None


@deploy("Protect the data before an upgrade")
def protect_data(config: StackConfig | None = None):
    """Refuse a PostgreSQL major the data directory cannot open and a schema downgrade, before
    anything changes; back the database up when the schema will be migrated, when the MinIO
    image changes (or when a stopped database cannot be asked, in which case the backup
    script asks it). Returns the backup operation (None when none is planned)."""
    config = config or config_from_host()
    if "postgres" not in config.service_names:
        # No container here can dump it (a cluster's data host backs its own up before a migration): its own backups are the external database's (README).
        host.noop("the external database is backed up by its own administrator; migrate-db still refuses a newer schema")
        return None
    cluster = host.get_fact(DatabaseCluster, stack_dir=config.stack_dir, project=config.compose_project,
                            user=config.postgres_user, database=config.postgres_db)
    check_postgres_major(config, cluster["pg_version"])
    migrate = check_schema_revision(config, cluster["revision"])
    image_change = minio_image_change(config, host.get_fact(ComposeServices, project=config.compose_project))
    if not migrate and not image_change and not (cluster["pg_version"] and not cluster["running"]):
        return None
    current = cluster["revision"] or "unknown"
    backup = (f"{config.backups_dir}/mlflow-db-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
              f"-schema-{current}.dump")
    # Revisions this release can migrate from: those of the supported releases up to it.
    older = ",".join(sorted({revision for version, revision in SCHEMA_REVISIONS.items()
                             if version_key(version) <= version_key(config.mlflow_version)}))
    operation = server.shell(
        name=("Back up the database before the MinIO image changes" if image_change and not migrate else
              f"Back up the database before migrating its schema to {config.mlflow_schema_revision}"),
        commands=[script_command(f"{config.stack_dir}/backup-before-migrate.sh", shell="sh",
                                 stack_dir=config.stack_dir, project=config.compose_project,
                                 db_role=config.postgres_user, database=config.postgres_db,
                                 expected_revision=config.mlflow_schema_revision, file=backup,
                                 timeout=config.mlflow_health_timeout, known_revisions=older, reason=image_change)],
    )
    if migrate:
        report(name="Backup before the migration",
               text=f"schema {current} -> {config.mlflow_schema_revision}: database backed up to {backup} "
                    f"on {host.name} first")
    if image_change:
        report(name="Backup before the new MinIO image",
               text=f"{image_change}: database backed up to {backup} on {host.name} first")
    return operation
