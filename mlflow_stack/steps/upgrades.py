"""Upgrades that keep the data: refuse what would break the database, back it up before a
schema migration. The migration itself is the `migrate-db` one-shot of the compose file,
which MLflow waits for."""

from __future__ import annotations

import logging
import re
import time

from pyinfra import host
from pyinfra.api import DeployError, QuoteString, StringCommand, deploy
from pyinfra.operations import python, server

from mlflow_stack.config import StackConfig, config_from_host
from mlflow_stack.facts.host import ComposeServices, DatabaseCluster
from mlflow_stack.config.releases import SCHEMA_REVISIONS, version_key
from mlflow_stack.steps.stack_files import script_command
from mlflow_stack.steps.verify import report, run_as_the_deploy

logger = logging.getLogger("pyinfra")


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


def check_schema_revision(config: StackConfig, revision: str | None, host_name: str | None = None) -> bool:
    """True when a migration is needed; DeployError when the database is newer than the
    configured MLflow (a downgrade) or made by a release this project does not know. The one
    place this is decided: while planning, or when the backup step runs if the database was
    stopped then (MLflow's own migrate-db refuses an unknown schema too, in the image)."""
    expected = config.mlflow_schema_revision
    where = host_name or host.name
    if revision is None or revision == expected:
        return False
    made_by = releases_with(revision)
    if not made_by:
        raise DeployError(
            f"on {where}: the database has MLflow schema revision {revision}, which no supported MLflow "
            f"release ({', '.join(SCHEMA_REVISIONS)}) knows. Nothing was changed. Back the database up and "
            "migrate it by hand (mlflow db upgrade), or restore a backup")
    newer = [v for v in made_by if version_key(v) > version_key(config.mlflow_version)]
    if newer:
        raise DeployError(
            f"on {where}: mlflow_version = {config.mlflow_version!r} expects schema revision {expected}, but the "
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


def backup_file(config: StackConfig, revision: str | None) -> str:
    return (f"{config.backups_dir}/mlflow-db-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
            f"-schema-{revision or 'unknown'}.dump")


def backup_reasons(config: StackConfig, revision: str | None, migrate: bool, image_change: str | None) -> str:
    """Why the database is dumped, as the backup's message ends: 'before ...'."""
    reasons = ([f"migrating its schema from {revision} to {config.mlflow_schema_revision}"] if migrate else []) \
        + ([image_change] if image_change else [])
    return " and ".join(reasons)


def backup_command(config: StackConfig, file: str, before: str) -> StringCommand:
    """files/host/backup-before-migrate.sh: starts the database container if needed and dumps it
    into `file`; it decides nothing."""
    return script_command(f"{config.stack_dir}/backup-before-migrate.sh", shell="sh", stack_dir=config.stack_dir,
                          project=config.compose_project, db_role=config.postgres_user, database=config.postgres_db,
                          file=file, timeout=config.mlflow_health_timeout, before=before)


def start_database_command(config: StackConfig) -> StringCommand:
    return StringCommand("cd", QuoteString(config.stack_dir), "&&", "docker", "compose", "--project-name",
                         QuoteString(config.compose_project), "up", "-d", "--no-deps", "postgres", ">/dev/null", "2>&1",
                         "&&", script_command(f"{config.stack_dir}/wait-healthy.sh", shell="sh",
                                              project=config.compose_project, timeout=config.mlflow_health_timeout,
                                              interval=config.mlflow_health_start_interval, service="postgres"))


def _back_up_a_stopped_database(state, host, config: StackConfig, image_change: str | None) -> bool:
    """pyinfra callback, for a database that was stopped (or did not answer) while planning:
    start it, ask it its schema revision, decide as planning would have (check_schema_revision)
    and dump it when a migration or a new MinIO image needs it. False (the operation fails,
    nothing changed but the database container's start) on a refusal or a failed command."""
    try:
        ok, output = run_as_the_deploy(state, host, start_database_command(config))
        if not ok:
            raise DeployError(f"on {host.name}: the database did not come up: {output.stdout or output.stderr}")
        fact = DatabaseCluster()
        ok, output = run_as_the_deploy(state, host, fact.command(stack_dir=config.stack_dir,
                                                                 project=config.compose_project,
                                                                 user=config.postgres_user,
                                                                 database=config.postgres_db))
        cluster = fact.process(output.stdout_lines) if ok else {"unreadable": output.stderr or "the query failed"}
        if cluster["unreadable"]:
            raise DeployError(f"on {host.name}: cannot read the database's schema revision ({cluster['unreadable']}). "
                              "Nothing was backed up or migrated; the deploy stops here")
        revision = cluster["revision"]
        migrate = check_schema_revision(config, revision, host_name=host.name)
        if not migrate and not image_change:
            logger.info(f"{host.print_prefix}schema revision {revision or 'none'}: nothing to migrate, "
                        "no backup needed")
            return True
        ok, output = run_as_the_deploy(state, host, backup_command(
            config, backup_file(config, revision), backup_reasons(config, revision, migrate, image_change)))
        if not ok:
            raise DeployError(f"the database backup failed: {output.stderr}")
        for line in output.stdout_lines:
            logger.info(f"{host.print_prefix}{line}")
        return True
    except DeployError as error:
        host.log_styled(str(error), fg="red", log_func=logger.error)
        return False


@deploy("Protect the data before an upgrade")
def protect_data(config: StackConfig | None = None):
    """Refuse a PostgreSQL major the data directory cannot open and a schema downgrade, before
    anything changes; back the database up when the schema will be migrated or the MinIO
    image changes. A stopped database (or one that could not answer yet) is started and asked
    when the step runs, and decided by the same rules. Returns the backup operation (None when
    none is planned)."""
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
    if cluster["pg_version"] and (not cluster["running"] or cluster.get("unreadable")):
        return python.call(name="Back up the database if a migration or a new MinIO image needs it "
                                "(it was stopped: asked now)",
                           function=_back_up_a_stopped_database, config=config, image_change=image_change)
    if not migrate and not image_change:
        return None
    backup = backup_file(config, cluster["revision"])
    operation = server.shell(
        name=("Back up the database before the MinIO image changes" if image_change and not migrate else
              f"Back up the database before migrating its schema to {config.mlflow_schema_revision}"),
        commands=[backup_command(config, backup, backup_reasons(config, cluster["revision"], migrate, image_change))],
    )
    if migrate:
        report(name="Backup before the migration",
               text=f"schema {cluster['revision']} -> {config.mlflow_schema_revision}: database backed up to {backup} "
                    f"on {host.name} first")
    if image_change:
        report(name="Backup before the new MinIO image",
               text=f"{image_change}: database backed up to {backup} on {host.name} first")
    return operation
