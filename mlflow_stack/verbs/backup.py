"""Back a deployed stack up on demand: the host writes the backup (files/host/backup.sh), then
pyinfra pulls it to the control machine.

    pyinfra inventory.py backup.py
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pyinfra import host
from pyinfra.api import DeployError, StringCommand, deploy
from pyinfra.operations import files, python, server

from mlflow_stack.config import StackConfig, config_from_host
from mlflow_stack.facts.host import ComposeServices
from mlflow_stack.services import stack_is_healthy
from mlflow_stack.steps.stack_files import script_command
from mlflow_stack.steps.verify import report

# What a backup directory holds (files/host/backup.sh writes them; restore.sh reads them).
BACKUP_FILES = ("manifest.json", "SHA256SUMS", "database.dump", "artifacts.tar")
BACKUP_PREFIX = "mlflow-backup-"


def backup_name(now: float | None = None) -> str:
    """Names sort by time, which the retention relies on."""
    return BACKUP_PREFIX + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def backup_command(config: StackConfig, name: str | None = None) -> StringCommand:
    """The host-side backup; without a name (the timer's) the script stamps its own."""
    return script_command(f"{config.stack_dir}/backup.sh", stack_dir=config.stack_dir, project=config.compose_project,
                          db_role=config.postgres_user, database=config.postgres_db, bucket=config.minio_bucket,
                          prefix=config.minio_bucket_prefix, backups=config.backups_dir, keep=config.backup_keep,
                          name=name)


def local_backup_dir(config: StackConfig, name: str) -> Path:
    return Path(config.backup_local_dir).resolve() / config.inventory_name / name


def require_bundled_backends(config: StackConfig, action: str) -> None:
    """Backups dump the database through its container and read the bucket through MinIO's
    bucket-init service: with an external backend neither exists here."""
    if config.role in ("tracking", "balancer"):
        data_host = config.cluster.data_host.name if config.cluster.data_host else "the data host"
        raise DeployError(f"on {host.name}: {action} backs a cluster up on its data host: run it with "
                          f"--limit {data_host}. Nothing was changed.")
    external = [name for name, on in (("postgres_external_host", config.external_database),
                                      ("s3_endpoint_url", config.external_s3)) if on]
    if external:
        raise DeployError(f"on {host.name}: {action} covers the bundled PostgreSQL and MinIO only, and "
                          f"{' and '.join(external)} {'is' if len(external) == 1 else 'are'} set: back the external "
                          "database / bucket up with their own tools (pg_dump, bucket versioning or replication). "
                          "Nothing was changed.")


def require_running_stack(config: StackConfig) -> None:
    services = host.get_fact(ComposeServices, project=config.compose_project)
    if not stack_is_healthy(services, config.services):
        raise DeployError(f"on {host.name}: the MLflow stack is not running and healthy, so there is nothing "
                          "consistent to back up; run `pyinfra inventory.py deploy.py` first. Nothing was changed.")


def _make_private(path: str, create: bool) -> None:
    """Backups hold the whole tracking database: only their owner may read them."""
    if create:
        os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    for entry in Path(path).iterdir():
        entry.chmod(0o600)


@deploy("Back up the stack")
def back_up(config: StackConfig | None = None):
    config = config or config_from_host()
    require_bundled_backends(config, "backup.py")
    require_running_stack(config)
    name = backup_name()
    remote = f"{config.backups_dir}/{name}"
    server.shell(name=f"Back up the database, then the artifacts, to {remote}", commands=[backup_command(config, name)])
    where = f"{remote} on {host.name}"
    if config.backup_local_dir:
        local = local_backup_dir(config, name)
        python.call(name=f"Create {local} (0700)", function=_make_private, path=str(local), create=True)
        for filename in BACKUP_FILES:
            files.get(name=f"Download {filename}", src=f"{remote}/{filename}", dest=str(local / filename))
        python.call(name=f"Make {local} private (0700/0600)", function=_make_private, path=str(local), create=False)
        where += f" and {local} here"
    report(name="Backup", text=f"backup {name}: {where} | restore it with: pyinfra INVENTORY restore.py "
                               f"--data restore_from={local_backup_dir(config, name) if config.backup_local_dir else 'host:' + remote}")
