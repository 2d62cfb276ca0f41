"""Issue 8's host-side pieces run for real: files/host/backup.sh and files/host/restore.sh against
the fake `docker` (tests/unit/fakedocker.py), and files/image/artifacts_archive.py's tar stream
against an in-memory S3 double."""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import shutil
import socket
import subprocess
import sys
import tarfile
from datetime import datetime, timezone

import pytest

from mlflow_stack.facts.host import HELD_RECORDS_QUERY

from .fakedocker import FakeDocker
from .helpers import REPO

REVISION = "dc11669786a5"
HEALTHY = ("postgres running healthy 0 0\nminio running healthy 0 0\nmlflow running healthy 0 0\n"
           "create-bucket exited none 0 0\nmigrate-db exited none 0 0\n")
OBJECTS = {"1/abc/artifacts/model/MLmodel": b"flavors: {}\n", "1/abc/artifacts/model/model.pkl": b"\x80\x04pickle" * 100}


def tar_of(objects: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for key, data in objects.items():
            info = tarfile.TarInfo(key)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture
def docker(tmp_path):
    fake = FakeDocker(tmp_path)
    fake.write("ids", "c-postgres\n")
    fake.statuses(HEALTHY)
    (fake.dir / "run.out").write_bytes(tar_of(OBJECTS))
    # The manifest is written by the image's program, run here with this venv's MLflow.
    fake.run_image_program_here(REPO / "files" / "image" / "backup_manifest.py", sys.executable)
    # pg_restore "in the container": records its arguments and what it read.
    restore = fake.bin / "pg_restore"
    restore.write_text('#!/bin/sh\necho "pg_restore $*" >> "$FAKE_DOCKER_DIR/argv"\n'
                       'cat > "$FAKE_DOCKER_DIR/pg_restore.stdin"\n')
    restore.chmod(0o755)
    return fake


@pytest.fixture
def stack_dir(tmp_path):
    path = tmp_path / "srv-mlflow"
    path.mkdir()
    for script in ("wait-healthy.sh", "backup.sh", "restore.sh"):
        shutil.copy(REPO / "files" / "host" / script, path / script)
    return path


def run_backup(docker, stack_dir, backups, keep=7, name="mlflow-backup-20260102T030000Z"):
    docker.write("psql.out", f"{REVISION}\n")
    args = ["bash", str(stack_dir / "backup.sh"), "--stack-dir", str(stack_dir), "--project", "mlflow",
            "--db-role", "tracker", "--database", "tracking", "--bucket", "lab-bucket", "--prefix", "team/artifacts",
            "--backups", str(backups), "--keep", str(keep), "--name", name]
    return docker.run(args, stdin=""), backups / name


def test_backup_writes_dump_archive_manifest_and_checksums_readable_by_root_only(docker, stack_dir, tmp_path):
    docker.write("pg_dump.out", "PGDMP the tracking database\n")
    proc, backup = run_backup(docker, stack_dir, tmp_path / "backups")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in backup.iterdir()) == ["SHA256SUMS", "artifacts.tar", "database.dump", "manifest.json"]
    assert (backup / "database.dump").read_text() == "PGDMP the tracking database\n"
    assert (backup / "artifacts.tar").read_bytes() == tar_of(OBJECTS)
    assert backup.stat().st_mode & 0o777 == 0o700 and backup.parent.stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in backup.iterdir()} == {0o600}
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["name"] == backup.name and manifest["mlflow_version"] == importlib.metadata.version("mlflow")
    assert manifest["schema_revision"] == REVISION
    assert manifest["source"]["bucket"] == "lab-bucket" and manifest["source"]["prefix"] == "team/artifacts"
    assert manifest["artifacts"]["objects"] == 2
    assert manifest["artifacts"]["object_bytes"] == sum(len(data) for data in OBJECTS.values())
    assert manifest["artifacts"]["sha256"] == hashlib.sha256(tar_of(OBJECTS)).hexdigest()
    assert manifest["database"]["sha256"] == hashlib.sha256(b"PGDMP the tracking database\n").hexdigest()
    assert f"{manifest['database']['sha256']}  database.dump" in (backup / "SHA256SUMS").read_text()
    assert manifest["database"]["bytes"] == (backup / "database.dump").stat().st_size
    assert manifest["artifacts"]["bytes"] == (backup / "artifacts.tar").stat().st_size
    assert manifest["source"]["host"] == socket.gethostname()
    assert not list(backup.parent.glob(".*.part"))


def test_a_manifest_that_cannot_be_written_leaves_no_backup(docker, stack_dir, tmp_path):
    docker.write("python", "/bin/false")  # the one-off writing the manifest fails
    proc, backup = run_backup(docker, stack_dir, tmp_path / "backups")
    assert proc.returncode != 0
    assert not backup.exists() and not list(backup.parent.glob(".*.part"))


def test_the_manifest_program_refuses_a_stream_without_both_files():
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as tar:
        info = tarfile.TarInfo("database.dump")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"PGDMP"))
    proc = subprocess.run([sys.executable, str(REPO / "files" / "image" / "backup_manifest.py"), "--name", "n",
                           "--schema-revision", REVISION, "--host", "h", "--bucket", "b", "--prefix", "p",
                           "--started", "0"], input=stream.getvalue(), capture_output=True)
    assert proc.returncode == 1 and b"artifacts.tar not in the stream" in proc.stderr and proc.stdout == b""


def test_backup_dumps_the_database_before_it_exports_the_objects(docker, stack_dir, tmp_path):
    proc, _ = run_backup(docker, stack_dir, tmp_path / "backups")
    assert proc.returncode == 0, proc.stderr
    calls = [line for line in docker.argv if line.startswith("pg_dump") or " run " in line]
    assert calls[0].startswith("pg_dump -Fc -U tracker -d tracking")
    assert "run --rm --no-deps -T -e ARTIFACT_PREFIX=team/artifacts jobs python " \
           "/opt/mlflow-stack/artifacts_archive.py export" in calls[1]


def test_a_failed_dump_leaves_no_backup(docker, stack_dir, tmp_path):
    docker.write("pg_dump.rc", "1")
    proc, backup = run_backup(docker, stack_dir, tmp_path / "backups")
    assert proc.returncode != 0
    assert [p.name for p in (tmp_path / "backups").iterdir()] == [".lock"]
    assert not any(" run " in line for line in docker.argv)


def test_retention_keeps_the_newest_backups_and_nothing_else_is_touched(docker, stack_dir, tmp_path):
    backups = tmp_path / "backups"
    backups.mkdir()
    for day in range(1, 6):
        (backups / f"mlflow-backup-2025010{day}T030000Z").mkdir()
    (backups / "mlflow-db-20250101T000000Z-schema-b7e2c1a4d9f3.dump").write_text("pre-migration dump")
    proc, backup = run_backup(docker, stack_dir, backups, keep=3)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in backups.iterdir() if not p.name.startswith(".")) == [
        "mlflow-backup-20250104T030000Z", "mlflow-backup-20250105T030000Z", backup.name,
        "mlflow-db-20250101T000000Z-schema-b7e2c1a4d9f3.dump"]


# --- restore.sh ------------------------------------------------------------------------------


@pytest.fixture
def backup(docker, stack_dir, tmp_path):
    proc, path = run_backup(docker, stack_dir, tmp_path / "backups")
    assert proc.returncode == 0, proc.stderr
    (docker.dir / "argv").unlink()
    (docker.dir / "run.stdin").unlink()
    (docker.dir / "run.out").unlink()  # the import prints nothing on stdout
    return path


def run_restore(docker, stack_dir, backup, held="0", overwrite="no"):
    docker.write("psql.out", f"{held}\n")
    args = ["bash", str(stack_dir / "restore.sh"), "--stack-dir", str(stack_dir), "--project", "mlflow",
            "--db-role", "tracker", "--database", "tracking", "--prefix", "other/prefix", "--backup", str(backup),
            "--overwrite", overwrite, "--timeout", "30", "--held-query", HELD_RECORDS_QUERY, "--stop", "mlflow", "--oneshot", "create-bucket", "--oneshot", "migrate-db",
            "--service", "postgres", "--service", "minio", "--service", "mlflow"]
    return docker.run(args, stdin="", timeout=90)


def test_restore_stops_mlflow_restores_database_then_objects_and_starts_the_stack(docker, stack_dir, backup):
    proc = run_restore(docker, stack_dir, backup)
    assert proc.returncode == 0, proc.stderr
    steps = [line for line in docker.argv if any(word in line for word in (" stop ", "pg_restore ", " run ", " up "))
             and not line.startswith("docker compose --project-name mlflow exec")]
    assert steps[0].endswith("compose --project-name mlflow stop mlflow")
    assert steps[1] == "pg_restore --clean --if-exists --no-owner --no-privileges --exit-on-error -U tracker -d tracking"
    assert "run --rm --no-deps -T -e ARTIFACT_PREFIX=other/prefix jobs python " \
           "/opt/mlflow-stack/artifacts_archive.py import" in steps[2]
    assert steps[3].endswith("compose --project-name mlflow up -d")
    assert (docker.dir / "pg_restore.stdin").read_bytes() == (backup / "database.dump").read_bytes()
    assert (docker.dir / "run.stdin").read_bytes() == (backup / "artifacts.tar").read_bytes()


def test_restore_over_runs_is_refused_and_changes_nothing(docker, stack_dir, backup):
    proc = run_restore(docker, stack_dir, backup, held="4")
    assert proc.returncode == 3
    assert "the database holds 4 runs and registered models" in proc.stderr
    assert "Nothing was changed" in proc.stderr
    assert not any(word in line for line in docker.argv for word in (" stop ", "pg_restore", " run ", " up "))


def test_restore_over_runs_goes_ahead_when_told(docker, stack_dir, backup):
    proc = run_restore(docker, stack_dir, backup, held="4", overwrite="yes")
    assert proc.returncode == 0, proc.stderr
    assert any(line.startswith("pg_restore") for line in docker.argv)


def test_a_damaged_backup_is_refused_before_any_docker_call(docker, stack_dir, backup):
    with (backup / "artifacts.tar").open("ab") as handle:
        handle.write(b"x")
    proc = run_restore(docker, stack_dir, backup)
    assert proc.returncode != 0
    assert "artifacts.tar: FAILED" in proc.stdout + proc.stderr
    assert docker.argv == []


def test_restore_counts_what_it_is_told_the_deploy_fact_counts(docker, stack_dir, backup):
    # The query is the deploy's (HeldRecords), handed over: not a copy in the script.
    assert "select" not in (REPO / "files" / "host" / "restore.sh").read_text()
    proc = run_restore(docker, stack_dir, backup, held="3")
    assert proc.returncode == 3
    (asked,) = [line for line in docker.argv if " psql " in line]
    assert asked.endswith(f"-c {HELD_RECORDS_QUERY}"), asked


# --- artifacts_archive.py --------------------------------------------------------------------


class FakeS3:
    """The calls artifacts_archive.py makes, on a dict; bodies are streams, as botocore's."""

    def __init__(self, objects: dict[str, bytes]):
        self.objects = dict(objects)

    def get_paginator(self, _name):
        s3 = self

        class Paginator:
            def paginate(self, Bucket, Prefix):
                keys = sorted(k for k in s3.objects if k.startswith(Prefix))
                yield {"Contents": [{"Key": k, "Size": len(s3.objects[k]),
                                     "LastModified": datetime(2026, 1, 1, tzinfo=timezone.utc)} for k in keys]}

        return Paginator()

    def get_object(self, Bucket, Key):
        return {"Body": io.BytesIO(self.objects[Key])}

    def upload_fileobj(self, fileobj, bucket, key, Config=None):
        self.objects[key] = fileobj.read()

    def delete_object(self, Bucket, Key):
        del self.objects[Key]


@pytest.fixture
def archive(monkeypatch):
    sys.path.insert(0, str(REPO / "files" / "image"))
    try:
        import artifacts_archive
    finally:
        sys.path.pop(0)
    return artifacts_archive


class Stdio:
    def __init__(self, data: bytes = b""):
        self.buffer = io.BytesIO(data)


def test_export_then_import_moves_objects_to_another_prefix_and_removes_the_rest(archive, monkeypatch):
    source = FakeS3({f"artifacts/{k}": v for k, v in OBJECTS.items()} | {"elsewhere/x": b"not exported"})
    out = Stdio()
    monkeypatch.setattr(sys, "stdout", out)
    archive.export(source, "mlflow", "artifacts")
    with tarfile.open(fileobj=io.BytesIO(out.buffer.getvalue())) as tar:
        assert sorted(tar.getnames()) == sorted(OBJECTS)
        assert {m.mode for m in tar.getmembers()} == {0o600}

    target = FakeS3({"lab/restored/stale/file": b"old", "other/kept": b"outside the prefix"})
    monkeypatch.setattr(sys, "stdin", Stdio(out.buffer.getvalue()))
    archive.import_(target, "restored", "lab/restored")
    assert target.objects == {**{f"lab/restored/{k}": v for k, v in OBJECTS.items()}, "other/kept": b"outside the prefix"}


@pytest.mark.parametrize("name", ["../escape", "/abs/key"])
def test_import_refuses_members_outside_the_prefix(archive, monkeypatch, name):
    monkeypatch.setattr(sys, "stdin", Stdio(tar_of({name: b"x"})))
    with pytest.raises(SystemExit, match="refusing archive member"):
        archive.import_(FakeS3({}), "b", "p")


def test_short_reads_from_s3_are_filled(archive):
    class Trickle(io.BytesIO):
        def read(self, size=-1):
            return super().read(min(size, 3) if size and size > 0 else size)

    progress = archive.Progress("exported")
    assert archive.CountingReader(Trickle(b"0123456789"), progress).read(8) == b"01234567"
    assert progress.bytes == 8
