"""Facts in, commands out for issue 8: backup.back_up and the restore steps, and the settings
they read."""

from __future__ import annotations

import json
import re
import shlex

import pytest
from pyinfra.api import DeployError

from mlflow_stack.facts.host import HELD_RECORDS_QUERY

from mlflow_stack.verbs import backup
from mlflow_stack.verbs import restore
from mlflow_stack.config import ConfigError

from .helpers import NON_DEFAULT, make_config
from .plan import plan
from .test_plan import running_services

STAMP = r"\d{8}T\d{6}Z"


def healthy(config) -> dict:
    return {"ComposeServices": {config.compose_project: running_services(config)}}


# --- backup ----------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [{}, NON_DEFAULT], ids=["default", "non_default"])
def test_backup_runs_the_host_script_then_downloads_every_file(extra, tmp_path):
    config = make_config(**extra, backup_local_dir=str(tmp_path / "local"))
    result = plan(backup.back_up, config, healthy(config))
    name = re.search(rf"mlflow-backup-{STAMP}", result.text())[0]
    remote = f"{config.backups_dir}/{name}"
    assert result.ops[0].name == f"Back up the stack | Back up the database, then the artifacts, to {remote}"
    assert result.ops[0].commands == [
        f"bash {config.stack_dir}/backup.sh --stack-dir {config.stack_dir} --project {config.compose_project} "
        f"--db-role {config.postgres_user} --database {config.postgres_db} --bucket {config.minio_bucket} "
        f"--prefix {config.minio_bucket_prefix} --backups {config.backups_dir} --keep 7 --name {name}"]
    downloads = [op for op in result.ops if op.name.startswith("Back up the stack | Download ")]
    local = tmp_path / "local" / config.inventory_name / name
    assert [op.raw[0].src for op in downloads] == [f"{remote}/{f}" for f in backup.BACKUP_FILES]
    assert [op.raw[0].dest for op in downloads] == [str(local / f) for f in backup.BACKUP_FILES]


def test_backup_left_on_the_host_downloads_nothing():
    config = make_config(backup_local_dir=None)
    result = plan(backup.back_up, config, healthy(config))
    assert not [op for op in result.ops if "Download" in op.name]
    assert result.ops[0].commands[0].startswith("bash /srv/mlflow/backup.sh ")


def test_backup_of_a_stack_that_is_not_running_is_refused_before_anything_runs():
    config = make_config()
    services = running_services(config)
    services["mlflow"] = {"state": "exited", "health": "", "exit_code": 1}
    with pytest.raises(DeployError, match="not running and healthy.*Nothing was changed"):
        plan(backup.back_up, config, {"ComposeServices": {config.compose_project: services}})


def test_private_local_copy(tmp_path):
    target = tmp_path / "b"
    backup._make_private(str(target), create=True)
    (target / "database.dump").write_text("x")
    (target / "database.dump").chmod(0o644)
    backup._make_private(str(target), create=False)
    assert target.stat().st_mode & 0o777 == 0o700
    assert (target / "database.dump").stat().st_mode & 0o777 == 0o600


def test_backup_names_sort_by_time():
    assert backup.backup_name(0) == "mlflow-backup-19700101T000000Z"
    assert backup.backup_name(86400) > backup.backup_name(3600)


# --- restore ---------------------------------------------------------------------------------


@pytest.fixture
def local_backup(tmp_path):
    path = tmp_path / "mlflow-backup-20260102T030000Z"
    path.mkdir()
    (path / "manifest.json").write_text(json.dumps({"name": path.name, "mlflow_version": "3.17.2",
                                                    "schema_revision": "dc11669786a5", "artifacts": {"objects": 3}}))
    for name in ("SHA256SUMS", "database.dump", "artifacts.tar"):
        (path / name).write_text(name)
    return path


@pytest.mark.parametrize("held", [0])
def test_refusal_check_lets_an_empty_server_through(local_backup, held):
    config = make_config(restore_from=str(local_backup))
    assert plan(restore.refuse_to_overwrite, config, {"HeldRecords": held}).ops == []


@pytest.mark.parametrize("held, message", [
    (2, "already holds 2 runs and registered models.*Nothing was changed. Set restore_overwrite = True"),
    (None, "not running, so whether it holds runs cannot be checked. Nothing was changed"),
])
def test_restore_over_a_server_with_runs_is_refused_while_planning(local_backup, held, message):
    config = make_config(restore_from=str(local_backup))
    with pytest.raises(DeployError, match=message):
        plan(restore.refuse_to_overwrite, config, {"HeldRecords": held})


def test_restore_overwrite_lets_it_through(local_backup):
    config = make_config(restore_from=str(local_backup), restore_overwrite=True)
    assert plan(restore.refuse_to_overwrite, config, {"HeldRecords": 5}).ops == []


def test_restore_without_a_source_is_a_config_error():
    with pytest.raises(ConfigError, match="restore_from is not set"):
        plan(restore.refuse_to_overwrite, make_config(), {"HeldRecords": 0})


@pytest.mark.parametrize("extra", [{}, NON_DEFAULT], ids=["default", "non_default"])
def test_restore_from_the_control_machine_uploads_then_restores_then_smoke_tests(local_backup, extra):
    config = make_config(**extra, restore_from=str(local_backup))
    if config.mlflow_version != "3.17.2":
        config = make_config(**{**extra, "mlflow_version": "3.17.2"}, restore_from=str(local_backup))
    result = plan(restore.restore_backup, config, {})
    remote = f"{config.backups_dir}/{local_backup.name}"
    uploads = {dest: data for dest, data in result.uploads.items()}
    assert uploads == {f"{remote}/{name}": (local_backup / name).read_bytes() for name in backup.BACKUP_FILES}
    assert f"chmod 600 {remote}/database.dump" in result.commands
    assert f"chmod 700 {remote}" in result.commands
    step = result.op(f"Restore a backup | Restore {local_backup.name} (MLflow stopped meanwhile)")
    assert step.commands == [
        f"bash {config.stack_dir}/restore.sh --stack-dir {config.stack_dir} --project {config.compose_project} "
        f"--db-role {config.postgres_user} --database {config.postgres_db} --prefix {config.minio_bucket_prefix} "
        f"--backup {remote} --overwrite no --timeout {config.mlflow_health_timeout} "
        f"--held-query {shlex.quote(HELD_RECORDS_QUERY)} --stop mlflow"
        f"{' --stop mlflow-api' if config.tls != 'off' else ''} "
        f"--oneshot create-bucket --oneshot migrate-db --service postgres --service minio --service mlflow"
        f"{' --service mlflow-api --service proxy' if config.tls != 'off' else ''}"]
    names = [op.name for op in result.ops]
    assert names.index(step.name) < names.index(f"Restore a backup | Smoke-test MLflow at {config.tracking_uri}")


def test_restore_from_the_host_reads_its_manifest_there():
    config = make_config(restore_from="host:/var/backups/mlflow-backup-1", restore_overwrite=True)
    manifest = {"name": "mlflow-backup-1", "schema_revision": "dc11669786a5"}
    facts = {"FileContents": {"/var/backups/mlflow-backup-1/manifest.json": json.dumps(manifest).splitlines()}}
    result = plan(restore.restore_backup, config, facts)
    assert result.uploads == {}
    step = result.op("Restore a backup | Restore mlflow-backup-1 (MLflow stopped meanwhile)")
    assert "--backup /var/backups/mlflow-backup-1 --overwrite yes --timeout 300 " in step.commands[0]


def test_restore_of_a_missing_host_backup_is_refused():
    config = make_config(restore_from="host:/var/backups/nothing")
    with pytest.raises(DeployError, match="no backup in /var/backups/nothing"):
        plan(restore.restore_backup, config, {})


def test_a_backup_newer_than_the_configured_mlflow_is_refused(local_backup):
    config = make_config(restore_from=str(local_backup), mlflow_version="3.16.1")
    with pytest.raises(DeployError, match="cannot open it \\(MLflow has no downgrade\\). Nothing was changed"):
        plan(restore.restore_backup, config, {})


def test_an_older_backup_is_restored_and_migrated(local_backup):
    manifest = json.loads((local_backup / "manifest.json").read_text())
    (local_backup / "manifest.json").write_text(json.dumps({**manifest, "schema_revision": "b7e2c1a4d9f3"}))
    result = plan(restore.restore_backup, make_config(restore_from=str(local_backup)), {})
    assert result.op(f"Restore a backup | Restore {local_backup.name} (MLflow stopped meanwhile)").commands


# --- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize("key, value, message", [
    ("backup_schedule", "daily; rm -rf /", "a systemd OnCalendar expression"),
    ("backup_schedule", "", "a systemd OnCalendar expression"),
    ("backup_keep", 0, "an integer from 1 to 1000"),
    ("backup_dir", "/etc", "an absolute path below a dedicated directory"),
    ("restore_from", "/no/such/backup", "a local backup directory holding manifest.json"),
    ("restore_from", "host:relative/path", "or 'host:/absolute/path'"),
    ("restore_overwrite", "yes", "True or False"),
])
def test_bad_backup_settings_are_refused(key, value, message):
    with pytest.raises(ConfigError, match=re.escape(f"{key} = {value!r}: must be ") + ".*" + re.escape(message)):
        make_config(**{key: value})


def test_backup_dir_defaults_below_the_stack_dir_and_can_move():
    assert make_config(stack_dir="/opt/stack").backups_dir == "/opt/stack/backups"
    assert make_config(backup_dir="/var/backups/mlflow").backups_dir == "/var/backups/mlflow"


def test_a_running_backup_container_does_not_count_as_the_service():
    from mlflow_stack.facts.host import ComposeServices

    rows = [
        {"Service": "create-bucket", "State": "exited", "ExitCode": 0, "Labels": "com.docker.compose.oneoff=False"},
        {"Service": "create-bucket", "State": "running", "ExitCode": 0,
         "Labels": "com.docker.compose.oneoff=True,com.docker.compose.service=create-bucket"},
    ]
    found = ComposeServices().process([json.dumps(row) for row in rows])
    assert found["create-bucket"]["state"] == "exited"


@pytest.mark.parametrize("auth", [True, False], ids=["auth on", "auth off"])
def test_restore_gives_the_restored_user_store_this_server_s_admin_before_the_smoke_test(local_backup, auth):
    # The user store is in the restored database: it holds the source server's admin password.
    from mlflow_stack.steps.auth import sync_command

    config = make_config(restore_from=str(local_backup), mlflow_auth=auth)
    result = plan(restore.restore_backup, config, {})
    names = [op.name for op in result.ops]
    sync = "Restore a backup | Give the restored user store this server's admin and users"
    if not auth:
        assert sync not in names
        return
    assert result.op(sync).commands == [sync_command(config, "apply")]
    restored = names.index(f"Restore a backup | Restore {local_backup.name} (MLflow stopped meanwhile)")
    assert restored < names.index(sync) < names.index(f"Restore a backup | Smoke-test MLflow at {config.tracking_uri}")
