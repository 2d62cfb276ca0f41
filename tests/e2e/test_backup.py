"""Backup and restore end to end (issue 8), on container targets over SSH with the real
pyinfra CLI: target A is deployed and a remote client logs runs, metrics and a registered
model; `backup.py` backs A up to the control machine; a refused restore onto A changes
nothing; a fresh target B with another bucket and prefix is deployed and restored by
`restore.py`; a client pointed at B finds everything; a rerun of the deploy on B changes
nothing. On A, the backup timer fires and keeps the newest backups, and the garbage-collection
timer removes the objects of a run deleted longer ago than its setting, not of a recent one.

The tests share target A and run in order.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from pathlib import Path

import pytest

from .support import Deployer, assert_stack_healthy, bucket_keys, read_secrets, run_client, s3_client

pytestmark = pytest.mark.e2e

MODEL = "backup-e2e-model"
BACKUP_FILES = {"manifest.json", "SHA256SUMS", "database.dump", "artifacts.tar"}
# Target B differs in what a restore must not depend on: the bucket and the prefix.
B_STORE = {"minio_bucket": "restored-artifacts", "minio_bucket_prefix": "lab/restored"}


@pytest.fixture(scope="module")
def local_backups(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("control-machine") / "backups"


@pytest.fixture(scope="module")
def source(container_target, settings, local_backups, tmp_path_factory):
    deployer = Deployer(container_target, {**settings, "backup_local_dir": str(local_backups)},
                        workdir=tmp_path_factory.mktemp("deploy-a"))
    deployer.run().check()
    logged = json.loads(run_client("client_backup_data.py", f"http://{container_target.address}:5000",
                                   tmp_path_factory.mktemp("client-a"), MODEL))
    return {"deployer": deployer, **logged}


@pytest.fixture(scope="module")
def backup(container_target, source, local_backups, record) -> Path:
    result = source["deployer"].run(deploy="backup.py").check()
    record("backup_seconds", round(result.seconds, 1))
    made = sorted((local_backups / container_target.address).iterdir())
    assert len(made) == 1, made
    return made[0]


def stack_state(target) -> str:
    """Containers (id, start time), the database's runs and the deploy's files."""
    return target.ssh("docker ps -aq --no-trunc | sort | xargs docker inspect --format '{{.Id}} {{.State.StartedAt}}'; "
                      "docker compose --project-name mlflow exec -T postgres psql -X -At -U mlflow -d mlflow "
                      "-c 'select run_uuid, lifecycle_stage from runs order by 1'; "
                      "sha256sum /srv/mlflow/compose.yaml /srv/mlflow/.env; ls -la /srv/mlflow/backups").stdout


def test_backup_lands_on_the_host_and_the_control_machine(container_target, source, backup, record):
    assert {p.name for p in backup.iterdir()} == BACKUP_FILES
    assert stat.S_IMODE(backup.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in backup.iterdir()} == {0o600}
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["name"] == backup.name
    assert manifest["mlflow_version"] == "3.17.2" and manifest["schema_revision"] == "dc11669786a5"
    assert manifest["source"] == {"host": manifest["source"]["host"], "bucket": "mlflow", "prefix": "artifacts"}
    # Every object under the prefix, as the S3 API lists it, is in the archive.
    s3 = s3_client(f"http://{container_target.address}:9000", read_secrets(container_target))
    listed = s3.list_objects_v2(Bucket="mlflow", Prefix="artifacts/")["Contents"]
    assert manifest["artifacts"]["objects"] == len(listed) > 0
    assert manifest["artifacts"]["object_bytes"] == sum(obj["Size"] for obj in listed)
    sums = dict(line.split()[::-1] for line in (backup / "SHA256SUMS").read_text().splitlines())
    assert sums["database.dump"] == manifest["database"]["sha256"]
    # The same files stay on the host, root-only.
    on_host = container_target.ssh(f"stat -c '%U %a %n' /srv/mlflow/backups/{backup.name} "
                                   f"/srv/mlflow/backups/{backup.name}/*").stdout.split("\n")
    assert on_host[0] == f"root 700 /srv/mlflow/backups/{backup.name}"
    assert all(line.startswith("root 600 ") for line in on_host[1:] if line), on_host
    # No password in any file of the backup.
    for value in read_secrets(container_target).values():
        assert all(value.encode() not in p.read_bytes() for p in backup.iterdir())
    record("backup_bytes", sum(p.stat().st_size for p in backup.iterdir()))
    record("backup_objects", manifest["artifacts"]["objects"])


def test_restore_onto_a_server_with_runs_is_refused_and_changes_nothing(container_target, source, backup):
    before = stack_state(container_target)
    result = source["deployer"].run(deploy="restore.py", overrides={"restore_from": str(backup)})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "already holds 3 runs and registered models" in output, output[-3000:]
    assert "Set restore_overwrite = True" in output and "Traceback" not in output
    assert result.changed == []
    assert stack_state(container_target) == before


def test_round_trip_onto_a_fresh_server_with_another_bucket(source, backup, settings, container_target_factory,
                                                            tmp_path, record):
    target = container_target_factory()
    (tmp_path / "deploy-b").mkdir()
    deployer = Deployer(target, {**settings, **B_STORE}, workdir=tmp_path / "deploy-b")
    restored = deployer.run(deploy="restore.py", overrides={"restore_from": str(backup)}).check()
    record("restore_with_first_deploy_seconds", round(restored.seconds, 1))
    assert "Restore a backup | Restore " + backup.name + " (MLflow stopped meanwhile)" in restored.changed
    assert_stack_healthy(target)

    found = json.loads(run_client("client_read_restored.py", f"http://{target.address}:5000", tmp_path / "client-b",
                                  MODEL, source["model_run"]))
    assert found["runs"] == sorted(source["runs"])
    assert {run: params["alpha"] for run, params in found["params"].items()} == dict(zip(source["runs"], ("0.1", "0.2")))
    assert found["loss"][source["runs"][0]] == pytest.approx([0.1 / (s + 1) for s in range(5)])
    assert found["predict_by_name"] == pytest.approx(31.0) and found["predict_by_run"] == pytest.approx(31.0)

    # The objects live in B's own bucket and prefix; B keeps its own passwords.
    secrets = read_secrets(target)
    keys = [o["Key"] for o in s3_client(f"http://{target.address}:9000", secrets)
            .list_objects_v2(Bucket="restored-artifacts", Prefix="lab/restored/")["Contents"]]
    assert any(key.endswith("/MLmodel") for key in keys), keys
    assert secrets != read_secrets(source["deployer"].target)

    rerun = deployer.run().check()
    assert rerun.changed == [], rerun.changed

    # A second restore onto B (now holding the runs) needs the explicit setting, and then works.
    again = deployer.run(deploy="restore.py", overrides={"restore_from": str(backup), "restore_overwrite": True}).check()
    record("restore_seconds", round(again.seconds, 1))
    assert "Restore a backup | Restore " + backup.name + " (MLflow stopped meanwhile)" in again.changed


def test_a_one_off_container_running_beside_the_stack_is_not_the_service(container_target, source):
    """A one-off of a service the stack runs (`docker compose run create-bucket`, as backups ran
    their export before the jobs service, and as an admin may): while it runs, `ps --all` lists
    it as create-bucket. The deploy's fact and wait-healthy.sh must not take it for the bucket
    init (a deploy rerun would restart the stack)."""
    target, deployer = container_target, source["deployer"]
    compose = "cd /srv/mlflow && docker compose --project-name mlflow"
    oneoff = target.ssh(f"{compose} run -d --no-deps --name backup-e2e-oneoff create-bucket "
                        "python -c 'import time; time.sleep(600)'").stdout.strip()
    try:
        listed = target.ssh(f"{compose} ps --all --format json").stdout.strip()
        # one JSON object per line, or one array, by compose version (as the fact reads it)
        rows = json.loads(listed) if listed.startswith("[") else [json.loads(line) for line in listed.splitlines()]
        running = [row for row in rows if row["Service"] == "create-bucket" and row["State"] == "running"]
        assert len(running) == 1 and oneoff.startswith(running[0]["ID"]), rows
        assert "com.docker.compose.oneoff=True" in running[0].get("Labels", ""), running[0]
        waited = target.ssh("sh /srv/mlflow/wait-healthy.sh --project mlflow --timeout 20 --oneshot create-bucket "
                            "--oneshot migrate-db --service postgres --service minio --service mlflow", check=False)
        assert waited.returncode == 0, waited.stderr
        assert waited.stdout.strip() == "healthy: postgres minio mlflow (done: create-bucket migrate-db)"
        assert deployer.run().check().changed == []
        assert target.ssh(f"docker inspect -f '{{{{.State.Running}}}}' {oneoff}").stdout.strip() == "true"
    finally:
        target.ssh(f"docker rm -f {oneoff}")


def test_the_backup_timer_fires_and_keeps_the_newest(container_target, source, backup):
    """The schedule shortened to every 20 s, retention to 2; then set back to the default."""
    deployer, target = source["deployer"], container_target
    short = {"backup_schedule": "*:*:0/20", "backup_keep": 2}
    result = deployer.run(overrides=short).check()
    assert "Schedule backups | Restart mlflow-backup.timer (schedule changed)" in result.changed
    assert deployer.run(overrides=short).check().changed == []

    journal = "journalctl -u mlflow-backup.service -o cat --no-pager"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        done = [line for line in target.ssh(journal).stdout.splitlines() if line.startswith("backup /srv/mlflow/backups/")]
        if len(done) >= 3:
            break
        time.sleep(5)
    assert len(done) >= 3, target.ssh(journal).stdout[-3000:]
    # Back to the default schedule; let a backup still running finish before looking.
    assert "Schedule backups | Restart mlflow-backup.timer (schedule changed)" in deployer.run().check().changed
    target.ssh("while systemctl is-active --quiet mlflow-backup.service; do sleep 1; done")

    kept = sorted(target.ssh("ls -1 /srv/mlflow/backups | grep '^mlflow-backup-'").stdout.split())
    removed = re.findall(r"removed /srv/mlflow/backups/(mlflow-backup-\S+) ", target.ssh(journal).stdout)
    assert len(kept) == 2, kept
    assert backup.name in removed and backup.name not in kept  # the on-demand one was the oldest
    assert all(old < min(kept) for old in removed)
    # The last result is where an admin looks for it.
    # (`systemctl status` exits 3 for a unit that is not active: a oneshot service between runs)
    status = target.ssh("systemctl status --no-pager mlflow-backup.service", check=False).stdout
    assert "status=0/SUCCESS" in status and "backup /srv/mlflow/backups/mlflow-backup-" in status, status
    assert target.ssh("systemctl show -p Result --value mlflow-backup.service").stdout.strip() == "success"
    assert deployer.run().check().changed == []


def test_the_gc_timer_removes_runs_deleted_longer_ago_than_the_setting(container_target, source, tmp_path, record):
    """Two runs with an artifact each, both deleted; one's deletion backdated by two days. With
    gc_keep_deleted_runs = "1d" and the gc timer shortened to every 20 s, the timer fires: the
    old run's objects leave the bucket, the recent one's stay. Then the setting is switched
    off again: the timer is removed."""
    target, deployer = container_target, source["deployer"]
    logged = json.loads(run_client("client_deleted_runs.py", f"http://{target.address}:5000", tmp_path / "client"))
    old, recent = logged["runs"]
    psql = "cd /srv/mlflow && docker compose --project-name mlflow exec -T postgres psql -X -At -U mlflow -d mlflow -c"
    target.ssh(f"{psql} \"update runs set deleted_time = deleted_time - 2 * 86400000 where run_uuid = '{old}'\"")
    secrets = read_secrets(target)
    prefix = f"artifacts/{logged['experiment']}"
    assert {key.split("/")[2] for key in bucket_keys(target, secrets, prefix)} == {old, recent}

    gc_on = {"gc_keep_deleted_runs": "1d", "gc_schedule": "*:*:0/20"}
    result = deployer.run(overrides=gc_on).check()
    assert "Schedule garbage collection | Enable and start mlflow-gc.timer" in result.changed, result.changed
    assert deployer.run(overrides=gc_on).check().changed == []

    journal = "journalctl -u mlflow-gc.service -o cat --no-pager"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not re.search(r"^gc: removed [1-9]", target.ssh(journal).stdout, re.M):
        time.sleep(5)
    # The timer fires every 20 s: stopped here, so the checks below see the last run, not a new one
    # (on a loaded machine a run and these checks together take longer than 20 s).
    target.ssh("systemctl stop mlflow-gc.timer; while systemctl is-active --quiet mlflow-gc.service; do sleep 1; done")
    output = target.ssh(journal).stdout
    assert f"Run with ID {old} has been permanently deleted." in output, output[-3000:]
    assert recent not in output
    record("gc_script_seconds", [int(s) for s in re.findall(r"^gc: removed \d+ runs.* in (\d+) s$", output, re.M)])
    times = dict(line.split("=", 1) for line in target.ssh(
        "systemctl show -p ExecMainStartTimestampMonotonic -p ExecMainExitTimestampMonotonic mlflow-gc.service"
    ).stdout.split())
    record("gc_service_last_run_seconds", round((int(times["ExecMainExitTimestampMonotonic"])
                                                 - int(times["ExecMainStartTimestampMonotonic"])) / 1e6, 2))

    # The old run's objects are gone from the bucket, the recent one's are still there.
    assert {key.split("/")[2] for key in bucket_keys(target, secrets, prefix)} == {recent}
    # The result is where an admin looks for it (a oneshot between runs: `status` exits 3).
    assert target.ssh("systemctl show -p Result --value mlflow-gc.service").stdout.strip() == "success"
    status = target.ssh("systemctl status --no-pager mlflow-gc.service", check=False).stdout
    assert "status=0/SUCCESS" in status and "gc: removed " in status, status
    # The unit's command line holds no secret.
    unit = target.ssh("systemctl cat mlflow-gc.service mlflow-gc.timer").stdout
    assert all(value not in unit for value in secrets.values())

    # Off again (the default): the timer and its units are removed.
    off = deployer.run().check()
    assert "Schedule garbage collection | Stop and disable mlflow-gc.timer (no schedule set)" in off.changed
    assert target.ssh("ls /etc/systemd/system/mlflow-gc.service /etc/systemd/system/mlflow-gc.timer",
                      check=False).returncode != 0
    assert target.ssh("systemctl is-active mlflow-gc.timer", check=False).stdout.strip() == "inactive"


def test_a_large_artifact_is_backed_up_and_restored_streaming(container_target, source, local_backups, tmp_path,
                                                              record):
    """Measures throughput for one 512 MiB object: `backup.py` (dump, export, pull) and
    `restore.py` over the same server (upload, import), whole pyinfra runs."""
    target, deployer = container_target, source["deployer"]
    size = 512 * 1024 * 1024
    blob = tmp_path / "blob.bin"
    with blob.open("wb") as handle:
        chunk = os.urandom(1024 * 1024)
        for _ in range(size // len(chunk)):
            handle.write(chunk)
    s3 = s3_client(f"http://{target.address}:9000", read_secrets(target))
    s3.upload_file(str(blob), "mlflow", "artifacts/large/blob.bin")

    backed_up = deployer.run(deploy="backup.py").check()
    newest = sorted((local_backups / target.address).iterdir())[-1]
    manifest = json.loads((newest / "manifest.json").read_text())
    assert manifest["artifacts"]["object_bytes"] >= size
    assert (newest / "artifacts.tar").stat().st_size >= size
    record("large_backup_run_seconds", round(backed_up.seconds, 1))
    record("large_backup_host_seconds", manifest["seconds"])
    record("large_backup_run_mb_per_s", round(size / 1e6 / backed_up.seconds, 1))

    s3.delete_object(Bucket="mlflow", Key="artifacts/large/blob.bin")
    restored = deployer.run(deploy="restore.py",
                            overrides={"restore_from": str(newest), "restore_overwrite": True}).check()
    record("large_restore_run_seconds", round(restored.seconds, 1))
    record("large_restore_run_mb_per_s", round(size / 1e6 / restored.seconds, 1))
    assert s3.head_object(Bucket="mlflow", Key="artifacts/large/blob.bin")["ContentLength"] == size
