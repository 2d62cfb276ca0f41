"""Restore a backup made by backup.py onto this server (the same one or a fresh one, whatever
its name, bucket or prefix): refuse first if the database holds runs, then (restore.py) the
stack is deployed, and the backup is uploaded if it is on the control machine and restored
by files/host/restore.sh; the smoke test runs at the end.

A cluster is restored as a whole: every tracking server stops MLflow, the data host restores
its database and bucket, then the first tracking server starts (it migrates an older schema),
then the others; the balancer's health check ends it.

    pyinfra inventory.py restore.py --data restore_from=backups/<host>/<backup>
"""

from __future__ import annotations

import json
from pathlib import Path

from pyinfra import host, state
from pyinfra.api import DeployError, StringCommand, deploy
from pyinfra.facts.files import FileContents
from pyinfra.operations import files, server

from mlflow_stack.steps.auth import sync_command
from mlflow_stack.verbs.backup import BACKUP_FILES, require_bundled_backends
from mlflow_stack.config import ConfigError, StackConfig, config_from_host
from mlflow_stack.facts.host import HELD_RECORDS_QUERY, HeldRecords
from mlflow_stack.config.releases import version_key
from mlflow_stack.steps.upgrades import releases_with
from mlflow_stack.steps.stack import wait_command
from mlflow_stack.steps.stack_files import script_command
from mlflow_stack.steps.verify import report, run_smoke_test

HOST_SOURCE = "host:"


def check_restore_allowed(config: StackConfig, held: int | None) -> None:
    """DeployError, while planning (so nothing changes), unless the restore may go ahead."""
    if config.restore_from is None:
        raise ConfigError("restore_from is not set: pass the backup to restore, e.g. "
                          "--data restore_from=backups/<inventory name>/mlflow-backup-<time>")
    if config.role != "standalone":
        require_whole_cluster(config)
    if config.role in ("tracking", "balancer"):
        return  # they hold no data: they stop and start around the data host's restore
    require_bundled_backends(config, "restore.py")
    if config.restore_overwrite:
        return
    if held is None:
        raise DeployError(f"on {host.name}: {config.data_dir}/postgres holds a database that is not running, so "
                          "whether it holds runs cannot be checked. Nothing was changed. Deploy first (it starts "
                          "it), or set restore_overwrite = True to replace whatever it holds")
    if held:
        raise DeployError(f"on {host.name}: the tracking database already holds {held} runs and registered models; "
                          "a restore would replace them. Nothing was changed. Set restore_overwrite = True "
                          "(e.g. --data restore_overwrite=True) to replace them")


def require_whole_cluster(config: StackConfig) -> None:
    """A cluster's tracking servers must stop while its data host restores: all of them (and
    the data host) are in this run, or nothing happens."""
    members = [member.name for member in (config.cluster.data_host, *config.cluster.tracking_servers) if member]
    in_run = {member.name for member in state.inventory if state.is_host_in_limit(member)}
    missing = [name for name in members if name not in in_run]
    if missing:
        raise DeployError(f"on {host.name}: restore.py restores a cluster as a whole (its tracking servers stop "
                          f"while the data host restores), and {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                          "not in this run: run it without --limit, or limit it to the cluster's groups "
                          "(--limit mlflow_data_hosts --limit mlflow_tracking_servers --limit mlflow_balancers). "
                          "Nothing was changed.")


def check_manifest(config: StackConfig, manifest: dict) -> None:
    """The backup's schema must be one this MLflow can open or migrate to."""
    revision = manifest.get("schema_revision")
    releases = releases_with(revision)
    if not releases:
        raise DeployError(f"on {host.name}: backup {manifest.get('name')} has schema revision {revision!r}, which no "
                          "supported MLflow release knows. Nothing was changed.")
    if version_key(releases[0]) > version_key(config.mlflow_version):
        raise DeployError(f"on {host.name}: backup {manifest.get('name')} was made by MLflow {manifest.get('mlflow_version')} "
                          f"(schema revision {revision}); mlflow_version = {config.mlflow_version!r} cannot open it "
                          f"(MLflow has no downgrade). Nothing was changed. Set mlflow_version to {releases[-1]} "
                          "or later")


def restore_command(config: StackConfig, remote: str) -> StringCommand:
    return script_command(f"{config.stack_dir}/restore.sh", stack_dir=config.stack_dir, project=config.compose_project,
                          db_role=config.postgres_user, database=config.postgres_db, prefix=config.minio_bucket_prefix,
                          backup=remote, overwrite="yes" if config.restore_overwrite else "no",
                          timeout=config.mlflow_health_timeout,
                          # Checked again when it runs (the fact asked while planning): the same query.
                          held_query=HELD_RECORDS_QUERY,
                          # MLflow runs here on a server of its own; a data host's tracking servers stop it.
                          stop=config.mlflow_servers,
                          # What to wait for once the stack is up again: this host's services.
                          oneshot=config.started_oneshots, service=config.started_long_running)


@deploy("Check that the restore may replace this server's data")
def refuse_to_overwrite(config: StackConfig | None = None):
    """Plans no operation: raises while planning when the restore must not happen."""
    config = config or config_from_host()
    # Only a host with the database holds runs (a cluster's tracking servers and balancer do not).
    held = host.get_fact(HeldRecords, stack_dir=config.stack_dir, project=config.compose_project,
                         user=config.postgres_user, database=config.postgres_db) \
        if "postgres" in config.service_names else 0
    check_restore_allowed(config, held)


@deploy("Restore a backup")
def restore_backup(config: StackConfig | None = None):
    config = config or config_from_host()
    check_restore_allowed(config, 0)  # restore_from is set; the held records were checked before the deploy
    cluster = config.role != "standalone"
    tracking, holds_data = config.role == "tracking", config.role in ("standalone", "data")
    compose = f"docker compose --project-directory {config.stack_dir} --project-name {config.compose_project}"
    start = [f"{compose} up -d", wait_command(config, *config.mlflow_servers, oneshots=("migrate-db",))]
    # In a cluster the turns run in this order on every host: tracking servers stop, the data
    # host restores, the first tracking server starts (it brings an older restored schema to
    # this MLflow's), then the others, then the user store gets this cluster's passwords.
    _turn(cluster, tracking, "the tracking servers' stop", "Stop MLflow while the data host restores",
          [f"{compose} stop {' '.join(config.mlflow_servers)}"])
    restored = upload_backup(config) if holds_data else None
    _turn(cluster, holds_data, "the data host's restore",
          f"Restore {restored[1]['name']} (MLflow stopped meanwhile)" if restored else "Restore the backup",
          [restore_command(config, restored[0])] if restored else [])
    _turn(cluster, tracking and config.keeps_cluster_state, "the first tracking server's start",
          "Start MLflow on the first tracking server", start)
    _turn(cluster, tracking and not config.keeps_cluster_state, "the other tracking servers' start",
          "Start MLflow on the other tracking servers", start)
    # MLflow's user store lives in the restored database: it holds the source server's admin
    # password. This server keeps its own secrets, so they go back into the store.
    _turn(cluster, config.mlflow_auth and config.keeps_cluster_state, "the user store's sync",
          "Give the restored user store this server's admin and users",
          [sync_command(config, "apply")] if config.keeps_cluster_state else [])
    if restored:
        artifacts = restored[1].get("artifacts", {})
        report(name="Restored", text=f"restored {restored[1]['name']} (MLflow {restored[1].get('mlflow_version')}, "
                                     f"made {restored[1].get('created')}: {artifacts.get('objects')} objects) into "
                                     f"{config.artifacts_destination} on {host.name}")
    if config.role != "data":  # a data host runs no MLflow; the balancer checks the tracking servers' health
        run_smoke_test(config)


def _turn(cluster: bool, mine: bool, turn: str, name: str, commands: list) -> None:
    """An operation run on the hosts whose turn it is. In a cluster every member plans it (skipped
    where it is not theirs): pyinfra orders operations across hosts by each host's own sequence."""
    if mine:
        server.shell(name=name, commands=commands)
    elif cluster:
        server.shell(name=f"{name} [{turn}]", commands=commands or ["true"], _if=lambda: False)


def upload_backup(config: StackConfig) -> tuple[str, dict]:
    """The backup's directory on the host (uploaded unless it is there already) and its manifest."""
    source = config.restore_from
    if source.startswith(HOST_SOURCE):
        remote = source[len(HOST_SOURCE):]
        text = host.get_fact(FileContents, path=f"{remote}/manifest.json")
        if not text:
            raise DeployError(f"on {host.name}: no backup in {remote} (manifest.json missing). Nothing was changed.")
        manifest = json.loads("\n".join(text))
    else:
        local = Path(source)
        manifest = json.loads((local / "manifest.json").read_text())
        remote = f"{config.backups_dir}/{manifest['name']}"
        files.directory(name=f"Ensure {config.backups_dir} exists", path=config.backups_dir,
                        user="root", group="root", mode="700")
        files.directory(name=f"Ensure {remote} exists", path=remote, user="root", group="root", mode="700")
        for filename in BACKUP_FILES:
            files.put(name=f"Upload {filename}", src=str(local / filename), dest=f"{remote}/{filename}",
                      user="root", group="root", mode="600")
    check_manifest(config, manifest)
    return remote, manifest
