"""Issue 7's host-side pieces, run for real: files/host/backup-before-migrate.sh and the
DatabaseCluster fact's command against the fake `docker` (tests/unit/fakedocker.py), and
files/image/migrate_db.py against a SQLite tracking store with the MLflow of the test venv."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys

import pytest

from mlflow_stack.config.releases import SCHEMA_REVISIONS
from mlflow_stack.facts.host import DatabaseCluster

from .fakedocker import FakeDocker
from .helpers import REPO

OLD_REVISION, NEW_REVISION = SCHEMA_REVISIONS["3.16.1"], SCHEMA_REVISIONS["3.17.2"]
HEALTHY_POSTGRES = "postgres running healthy 0 0\n"
MIGRATE_DB = REPO / "files" / "image" / "migrate_db.py"


@pytest.fixture
def docker(tmp_path):
    fake = FakeDocker(tmp_path)
    fake.write("ids", "c-postgres\n")
    fake.statuses(HEALTHY_POSTGRES)
    return fake


@pytest.fixture
def stack_dir(tmp_path):
    """A deployed stack directory: the helper scripts and an initialised database cluster."""
    path = tmp_path / "srv-mlflow"
    (path / "data" / "postgres").mkdir(parents=True)
    (path / "data" / "postgres" / "PG_VERSION").write_text("17\n")
    for script in ("wait-healthy.sh", "backup-before-migrate.sh"):
        shutil.copy(REPO / "files" / "host" / script, path / script)
    return path


def backup(docker: FakeDocker, stack_dir, expected=NEW_REVISION, timeout=30, file=None,
           known=f"{OLD_REVISION},{NEW_REVISION}", reason=None):
    file = file or stack_dir / "backups" / f"mlflow-db-20260101T000000Z-schema-{OLD_REVISION}.dump"
    args = ["sh", str(stack_dir / "backup-before-migrate.sh"), "--stack-dir", str(stack_dir), "--project", "mlflow",
            "--db-role", "tracker", "--database", "tracking", "--expected-revision", expected, "--file", str(file),
            "--timeout", str(timeout), "--known-revisions", known] + (["--reason", reason] if reason else [])
    proc = docker.run(args, timeout=timeout + 30, stdin="")
    return proc, file


# --- backup-before-migrate.sh ----------------------------------------------------------------


@pytest.mark.parametrize("pg_version", [None, ""], ids=["absent", "empty"])
def test_no_cluster_exits_0_without_docker(docker, stack_dir, pg_version):
    marker = stack_dir / "data" / "postgres" / "PG_VERSION"
    if pg_version is None:
        marker.unlink()
    else:
        marker.write_text(pg_version)
    proc, file = backup(docker, stack_dir)
    assert proc.returncode == 0, proc.stderr
    assert "no database yet: nothing to back up" in proc.stdout
    assert docker.argv == []
    assert not file.exists() and not (stack_dir / "backups").exists()


def test_current_revision_takes_no_backup(docker, stack_dir):
    docker.write("psql.out", f"{NEW_REVISION}\n")
    proc, file = backup(docker, stack_dir)
    assert proc.returncode == 0, proc.stderr
    assert f"schema revision {NEW_REVISION}: nothing to migrate, no backup needed" in proc.stdout
    assert not any(line.startswith("pg_dump") for line in docker.argv)
    assert not file.exists()


def test_no_mlflow_tables_take_no_backup(docker, stack_dir):
    docker.write("psql.rc", "1")
    docker.write("psql.out", 'ERROR:  relation "alembic_version" does not exist\n')
    proc, file = backup(docker, stack_dir)
    assert proc.returncode == 0, proc.stderr
    assert "schema revision none: nothing to migrate" in proc.stdout
    assert not any(line.startswith("pg_dump") for line in docker.argv)
    assert not file.exists()


def test_older_revision_is_dumped_to_the_file_readable_by_root_only(docker, stack_dir):
    docker.write("psql.out", f"{OLD_REVISION}\n")
    docker.write("pg_dump.out", "PGDMP the tracking database\n")
    proc, file = backup(docker, stack_dir)
    assert proc.returncode == 0, proc.stderr
    assert file.read_text() == "PGDMP the tracking database\n"
    assert file.stat().st_mode & 0o777 == 0o600
    assert (stack_dir / "backups").stat().st_mode & 0o077 == 0  # the folder too
    assert not file.with_name(file.name + ".part").exists()
    assert proc.stdout.splitlines()[-1] == (
        f"database (schema revision {OLD_REVISION}) backed up to {file} before migrating to {NEW_REVISION}")


@pytest.mark.parametrize("current", [NEW_REVISION, OLD_REVISION, None], ids=["current", "older", "no tables"])
def test_a_reason_takes_the_backup_without_a_migration_too(docker, stack_dir, current):
    # e.g. before a new MinIO image: the database is dumped whatever its revision.
    if current is None:
        docker.write("psql.rc", "1")
        docker.write("psql.out", 'ERROR:  relation "alembic_version" does not exist\n')
    else:
        docker.write("psql.out", f"{current}\n")
    docker.write("pg_dump.out", "PGDMP the tracking database\n")
    proc, file = backup(docker, stack_dir, reason="the MinIO image changes")
    assert proc.returncode == 0, proc.stderr
    assert file.read_text() == "PGDMP the tracking database\n"
    assert file.stat().st_mode & 0o777 == 0o600
    assert proc.stdout.splitlines()[-1] == (
        f"database (schema revision {current or 'none'}) backed up to {file} before the MinIO image changes")


def test_a_reason_does_not_lift_the_refusal_of_a_newer_revision(docker, stack_dir):
    docker.write("psql.out", "ffffffffffff\n")
    proc, file = backup(docker, stack_dir, reason="the MinIO image changes")
    assert proc.returncode == 1 and "refusing" in proc.stderr
    assert not any(line.startswith("pg_dump") for line in docker.argv)
    assert not file.exists()


def test_other_psql_failure_fails_without_a_backup(docker, stack_dir):
    docker.write("psql.rc", "2")
    docker.write("psql.out", "psql: error: connection to server failed\n")
    proc, file = backup(docker, stack_dir)
    assert proc.returncode == 1
    assert "cannot read the schema revision: psql: error: connection to server failed" in proc.stderr
    assert not any(line.startswith("pg_dump") for line in docker.argv)
    assert not file.exists()


def test_revision_it_cannot_migrate_from_is_refused_without_a_backup(docker, stack_dir):
    docker.write("psql.out", "ffffffffffff\n")  # made by a newer release
    proc, file = backup(docker, stack_dir)
    assert proc.returncode == 1
    assert "refusing: the database has schema revision ffffffffffff" in proc.stderr
    assert "Nothing was changed" in proc.stderr
    assert not any(line.startswith("pg_dump") for line in docker.argv)
    assert not file.exists()


def test_backup_starts_the_database_alone_waits_then_asks_and_dumps(docker, stack_dir):
    docker.write("psql.out", f"{OLD_REVISION}\n")
    proc, _ = backup(docker, stack_dir)
    assert proc.returncode == 0, proc.stderr
    argv = docker.argv
    up = argv.index("docker compose --project-name mlflow up -d --no-deps postgres")
    first_status = next(i for i, line in enumerate(argv) if line.startswith("docker inspect"))
    ask = argv.index("docker compose --project-name mlflow exec -T postgres psql -X -w -At -U tracker -d tracking "
                     "-c select version_num from alembic_version")
    dump = argv.index("docker compose --project-name mlflow exec -T postgres pg_dump -Fc -U tracker -d tracking")
    assert up < first_status < ask < dump
    assert [line for line in argv if " up " in line] == ["docker compose --project-name mlflow up -d --no-deps postgres"]


def test_failed_dump_fails_and_leaves_no_backup_file(docker, stack_dir):
    docker.write("psql.out", f"{OLD_REVISION}\n")
    docker.write("pg_dump.rc", "1")
    proc, file = backup(docker, stack_dir)
    assert proc.returncode != 0
    assert not file.exists()
    assert "backed up to" not in proc.stdout


def test_a_database_that_does_not_get_healthy_stops_before_the_dump(docker, stack_dir):
    docker.write("psql.out", f"{OLD_REVISION}\n")
    docker.statuses("postgres running starting 0 0\n")
    proc, file = backup(docker, stack_dir, timeout=2)
    assert proc.returncode != 0
    assert "not healthy after 2s" in proc.stderr
    assert not any(" exec " in line for line in docker.argv)
    assert not file.exists()


# --- the DatabaseCluster fact ------------------------------------------------------------------


def cluster_fact(docker: FakeDocker, stack_dir, user="tracker", database="tracking"):
    command = DatabaseCluster().command(stack_dir=str(stack_dir), project="mlflow", user=user, database=database)
    proc = docker.run(["sh", "-c", command], stdin="")
    assert proc.returncode == 0, proc.stderr
    return DatabaseCluster().process(proc.stdout.splitlines())


def test_fact_on_a_fresh_host(docker, tmp_path):
    docker.write("ids", "")
    assert cluster_fact(docker, tmp_path / "does-not-exist") == {"pg_version": None, "revision": None,
                                                                 "running": False}


def test_fact_reads_the_revision_of_a_running_database(docker, stack_dir):
    docker.write("psql.out", f"{OLD_REVISION}\n")
    assert cluster_fact(docker, stack_dir) == {"pg_version": "17", "revision": OLD_REVISION, "running": True}
    (psql,) = [line for line in docker.argv if line.startswith("psql ")]
    assert psql == "psql -X -w -At -U tracker -d tracking -c select version_num from alembic_version"


def test_fact_on_a_running_database_without_mlflow_tables(docker, stack_dir):
    docker.write("psql.rc", "1")
    assert cluster_fact(docker, stack_dir) == {"pg_version": "17", "revision": None, "running": True}


@pytest.mark.parametrize("ids, running", [("", "true"), ("c-postgres\n", "false")], ids=["no container", "stopped"])
def test_fact_on_a_stopped_database(docker, stack_dir, ids, running):
    docker.write("ids", ids)
    docker.write("running", running)
    docker.write("psql.out", f"{OLD_REVISION}\n")
    assert cluster_fact(docker, stack_dir) == {"pg_version": "17", "revision": None, "running": False}
    assert not any(line.startswith("psql") for line in docker.argv)


@pytest.mark.parametrize("output, expected", [
    ([], {"pg_version": None, "revision": None, "running": False}),
    (["pg_version=", "running=no"], {"pg_version": None, "revision": None, "running": False}),
    (["pg_version=16", "running=yes", "revision="], {"pg_version": "16", "revision": None, "running": True}),
    (["pg_version=17", "running=yes", f"revision={NEW_REVISION}"],
     {"pg_version": "17", "revision": NEW_REVISION, "running": True}),
])
def test_fact_process(output, expected):
    assert DatabaseCluster().process(output) == expected


# --- migrate_db.py ---------------------------------------------------------------------------------


def test_migrate_db_compiles_and_takes_the_uri_from_the_environment_only():
    source = MIGRATE_DB.read_text()
    tree = ast.parse(source)
    compile(source, str(MIGRATE_DB), "exec")
    names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert "argv" not in names  # nothing from the command line
    environ = [node for node in ast.walk(tree) if isinstance(node, ast.Subscript)
               and isinstance(node.value, ast.Attribute) and node.value.attr == "environ"]
    assert [ast.literal_eval(node.slice) for node in environ] == ["MLFLOW_BACKEND_STORE_URI"]
    assert "PASSWORD" not in source.upper().replace("NO PASSWORD", "")


def test_compose_runs_migrate_db_without_a_password_in_argv():
    import yaml

    from mlflow_stack.steps.stack_files import compose_file

    from .helpers import make_config

    given = "Pg-Literal.Secret_0123"
    config = make_config(postgres_password=given)
    service = yaml.safe_load(compose_file(config))["services"]["migrate-db"]
    assert service["command"] == ["python", "/opt/mlflow-stack/migrate_db.py"]
    assert not any("postgres" in item.lower() or "$" in item for item in service["command"])
    assert given not in compose_file(config)


# One Python process imports MLflow once (seconds) and runs migrate_db.py, as compose does
# (`python migrate_db.py`, the URI in the environment), against several SQLite stores.
DRIVER = r"""
import contextlib, io, json, os, runpy, shutil, sqlite3, sys
from alembic import command
from mlflow.store.db import utils

script, folder, old_revision = sys.argv[1:]
old = os.path.join(folder, "old.db")
engine = utils.create_sqlalchemy_engine_with_retry(f"sqlite:///{old}")
utils.InitialBase.metadata.create_all(engine)   # as MLflow makes a store, up to 3.16.1's revision
config = utils._get_alembic_config(f"sqlite:///{old}")
with engine.begin() as connection:
    config.attributes["connection"] = connection
    command.upgrade(config, old_revision)
engine.dispose()
shutil.copy(old, os.path.join(folder, "newer.db"))
with sqlite3.connect(os.path.join(folder, "newer.db")) as connection:
    connection.execute("update alembic_version set version_num = 'ffffffffffff'")

def revision(name):
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        return None
    with sqlite3.connect(path) as connection:
        try:
            return connection.execute("select version_num from alembic_version").fetchone()[0]
        except sqlite3.OperationalError:
            return None

results = {}
for run, name in (("upgrade", "old.db"), ("again", "old.db"), ("empty", "empty.db"), ("newer", "newer.db")):
    before = revision(name)
    os.environ["MLFLOW_BACKEND_STORE_URI"] = f"sqlite:///{os.path.join(folder, name)}"
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as stop:
            code = stop.code
    results[run] = {"rc": code, "stdout": out.getvalue(), "stderr": err.getvalue(), "before": before,
                    "after": revision(name)}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def mlflow_version():
    """The test venv's MLflow (requirements-test.txt: the default release), read without importing it."""
    try:
        version = importlib.metadata.version("mlflow")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("no MLflow in the test venv")
    if SCHEMA_REVISIONS.get(version) != NEW_REVISION:
        pytest.skip(f"the test venv's MLflow {version} is not a {NEW_REVISION} release")
    return version


@pytest.fixture(scope="module")
def migrations(tmp_path_factory, mlflow_version) -> dict:
    folder = tmp_path_factory.mktemp("stores")
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(MIGRATE_DB), str(folder), OLD_REVISION], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_migrate_db_upgrades_an_older_schema(migrations, mlflow_version):
    run = migrations["upgrade"]
    assert run["rc"] == 0, run["stderr"]
    assert (run["before"], run["after"]) == (OLD_REVISION, NEW_REVISION)
    assert f"migrated the schema from revision {OLD_REVISION} to {NEW_REVISION} (MLflow {mlflow_version})" \
        in run["stdout"]


def test_migrate_db_at_the_current_schema_does_nothing(migrations, mlflow_version):
    run = migrations["again"]
    assert run["rc"] == 0, run["stderr"]
    assert run["before"] == run["after"] == NEW_REVISION
    assert run["stdout"].strip() == f"schema revision {NEW_REVISION} is the one MLflow {mlflow_version} expects"


def test_migrate_db_leaves_an_empty_database_to_the_server(migrations, mlflow_version):
    run = migrations["empty"]
    assert run["rc"] == 0, run["stderr"]
    assert run["stdout"].strip() == f"no MLflow schema yet: MLflow {mlflow_version} creates it at its first start"
    assert run["after"] is None


def test_migrate_db_refuses_a_schema_it_does_not_know(migrations):
    run = migrations["newer"]
    assert run["rc"] == 3
    assert "refusing to start: the database has schema revision ffffffffffff" in run["stderr"]
    assert "restore the backup taken before the upgrade" in run["stderr"]
    assert run["before"] == run["after"] == "ffffffffffff"  # untouched
