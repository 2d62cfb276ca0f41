"""Issue 7's host-side pieces, run for real: files/host/backup-before-migrate.sh, the deploy's
decision for a database stopped while planning and the DatabaseCluster fact's command against
the fake `docker` (tests/unit/fakedocker.py), and files/image/migrate_db.py against a SQLite
tracking store with the MLflow of the test venv."""

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
from .helpers import REPO, make_config

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


def backup(docker: FakeDocker, stack_dir, timeout=30, file=None, before="migrating its schema from A to B"):
    file = file or stack_dir / "backups" / f"mlflow-db-20260101T000000Z-schema-{OLD_REVISION}.dump"
    args = ["sh", str(stack_dir / "backup-before-migrate.sh"), "--stack-dir", str(stack_dir), "--project", "mlflow",
            "--db-role", "tracker", "--database", "tracking", "--file", str(file), "--timeout", str(timeout),
            "--before", before]
    proc = docker.run(args, timeout=timeout + 30, stdin="")
    return proc, file


def dumped(docker: FakeDocker) -> bool:
    return any(" pg_dump " in line for line in docker.argv)


# --- backup-before-migrate.sh: dumps, decides nothing -----------------------------------------


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


def test_the_database_is_dumped_to_the_file_readable_by_root_only(docker, stack_dir):
    docker.write("pg_dump.out", "PGDMP the tracking database\n")
    proc, file = backup(docker, stack_dir, before="the MinIO image changes")
    assert proc.returncode == 0, proc.stderr
    assert file.read_text() == "PGDMP the tracking database\n"
    assert file.stat().st_mode & 0o777 == 0o600
    assert (stack_dir / "backups").stat().st_mode & 0o077 == 0  # the folder too
    assert not file.with_name(file.name + ".part").exists()
    assert proc.stdout.splitlines()[-1] == f"database backed up to {file} before the MinIO image changes"
    assert not any("alembic_version" in line for line in docker.argv)  # it asks nothing


def test_backup_starts_the_database_alone_waits_then_dumps(docker, stack_dir):
    proc, _ = backup(docker, stack_dir)
    assert proc.returncode == 0, proc.stderr
    argv = docker.argv
    up = argv.index("docker compose --project-name mlflow up -d --no-deps postgres")
    first_status = next(i for i, line in enumerate(argv) if line.startswith("docker inspect"))
    dump = argv.index("docker compose --project-name mlflow exec -T postgres pg_dump -Fc -U tracker -d tracking")
    assert up < first_status < dump
    assert [line for line in argv if " up " in line] == ["docker compose --project-name mlflow up -d --no-deps postgres"]


def test_failed_dump_fails_and_leaves_no_backup_file(docker, stack_dir):
    docker.write("pg_dump.rc", "1")
    proc, file = backup(docker, stack_dir)
    assert proc.returncode != 0
    assert not file.exists()
    assert "backed up to" not in proc.stdout


def test_a_database_that_does_not_get_healthy_stops_before_the_dump(docker, stack_dir):
    docker.statuses("postgres running starting 0 0\n")
    proc, file = backup(docker, stack_dir, timeout=2)
    assert proc.returncode != 0
    assert "not healthy after 2s" in proc.stderr
    assert not any(" exec " in line for line in docker.argv)
    assert not file.exists()


@pytest.mark.parametrize("args, message", [
    (["--before"], "--before missing"),
    (["--reason", "x"], "unknown option --reason"),
], ids=["no reason given", "unknown option"])
def test_incomplete_or_unknown_options_are_refused_before_docker(docker, stack_dir, args, message):
    full = ["sh", str(stack_dir / "backup-before-migrate.sh"), "--stack-dir", str(stack_dir), "--project", "mlflow",
            "--db-role", "tracker", "--database", "tracking", "--file", str(stack_dir / "f.dump"), "--timeout", "5"]
    proc = docker.run(full + (args if args != ["--before"] else []), stdin="")
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert docker.argv == []


# --- a database stopped while planning: started, asked, decided by the deploy's own rules -------


class _Host:
    name = "lab-server"
    print_prefix = ""

    def __init__(self):
        self.errors = []

    def log_styled(self, text, fg=None, log_func=None):
        self.errors.append(text)


def back_up_a_stopped_database(docker, stack_dir, monkeypatch, image_change=None, **settings):
    """Run the callback with its commands run here, against the fake docker (as pyinfra would
    run them on the host). Returns (result, the host stub with its logged errors)."""
    from types import SimpleNamespace

    from mlflow_stack.steps import upgrades

    def run_here(state, host, command, print_output=False):
        text = command if isinstance(command, str) else command.get_raw_value()
        proc = docker.run(["sh", "-c", text], stdin="")
        return proc.returncode == 0, SimpleNamespace(stdout=proc.stdout, stderr=proc.stderr,
                                                     stdout_lines=proc.stdout.splitlines())

    monkeypatch.setattr(upgrades, "run_as_the_deploy", run_here)
    config = make_config(stack_dir=str(stack_dir), compose_project="mlflow", postgres_user="tracker",
                         postgres_db="tracking", **settings)
    host = _Host()
    return upgrades._back_up_a_stopped_database(None, host, config, image_change), host


def backups_in(stack_dir):
    return sorted(path.name for path in (stack_dir / "backups").glob("*.dump"))


@pytest.mark.parametrize("answer", [NEW_REVISION, None], ids=["current", "no tables"])
def test_stopped_database_at_the_expected_revision_is_started_and_not_dumped(docker, stack_dir, monkeypatch, answer):
    if answer is None:
        docker.write("psql.rc", "1")  # psql's message: the fake prints psql.out on stdout, as 2>&1 gets it
        docker.write("psql.out", 'ERROR:  relation "alembic_version" does not exist\n')
    else:
        docker.write("psql.out", f"{answer}\n")
    ok, host = back_up_a_stopped_database(docker, stack_dir, monkeypatch)
    assert ok and host.errors == []
    assert "docker compose --project-name mlflow up -d --no-deps postgres" in docker.argv
    assert not dumped(docker) and backups_in(stack_dir) == []


def test_stopped_database_with_an_older_schema_is_dumped_before_the_migration(docker, stack_dir, monkeypatch):
    docker.write("psql.out", f"{OLD_REVISION}\n")
    docker.write("pg_dump.out", "PGDMP the tracking database\n")
    ok, host = back_up_a_stopped_database(docker, stack_dir, monkeypatch)
    assert ok and host.errors == []
    (name,) = backups_in(stack_dir)
    assert name.endswith(f"-schema-{OLD_REVISION}.dump")
    assert (stack_dir / "backups" / name).read_text() == "PGDMP the tracking database\n"
    up = docker.argv.index("docker compose --project-name mlflow up -d --no-deps postgres")
    ask = next(i for i, line in enumerate(docker.argv) if "alembic_version" in line)
    assert up < ask < next(i for i, line in enumerate(docker.argv) if " pg_dump " in line)


def test_a_new_minio_image_dumps_a_stopped_database_at_any_known_revision(docker, stack_dir, monkeypatch):
    docker.write("psql.out", f"{NEW_REVISION}\n")
    ok, host = back_up_a_stopped_database(docker, stack_dir, monkeypatch, image_change="the MinIO image changes")
    assert ok and host.errors == []
    assert [name.endswith(f"-schema-{NEW_REVISION}.dump") for name in backups_in(stack_dir)] == [True]


@pytest.mark.parametrize("revision, message", [
    ("ffffffffffff", "which no supported MLflow release"),
    (NEW_REVISION, "MLflow cannot downgrade a schema"),
], ids=["unknown", "newer"])
@pytest.mark.parametrize("image_change", [None, "the MinIO image changes"], ids=["", "minio change"])
def test_stopped_database_the_configured_mlflow_cannot_migrate_is_refused_undumped(docker, stack_dir, monkeypatch,
                                                                                   revision, message, image_change):
    docker.write("psql.out", f"{revision}\n")
    ok, host = back_up_a_stopped_database(docker, stack_dir, monkeypatch, image_change=image_change,
                                          mlflow_version="3.16.1")
    assert not ok
    assert len(host.errors) == 1 and message in host.errors[0] and "Nothing was changed" in host.errors[0]
    assert host.errors[0].startswith("on lab-server: ")
    assert not dumped(docker) and backups_in(stack_dir) == []


# --- the DatabaseCluster fact ------------------------------------------------------------------


def cluster_fact(docker: FakeDocker, stack_dir, user="tracker", database="tracking"):
    command = DatabaseCluster().command(stack_dir=str(stack_dir), project="mlflow", user=user, database=database)
    proc = docker.run(["sh", "-c", command], stdin="")
    assert proc.returncode == 0, proc.stderr
    return DatabaseCluster().process(proc.stdout.splitlines())


def test_fact_on_a_fresh_host(docker, tmp_path):
    docker.write("ids", "")
    assert cluster_fact(docker, tmp_path / "does-not-exist") == {"pg_version": None, "revision": None,
                                                                 "running": False, "unreadable": None}


def test_fact_reads_the_revision_of_a_running_database(docker, stack_dir):
    docker.write("psql.out", f"{OLD_REVISION}\n")
    assert cluster_fact(docker, stack_dir) == {"pg_version": "17", "revision": OLD_REVISION, "running": True,
                                               "unreadable": None}
    (psql,) = [line for line in docker.argv if line.startswith("psql ")]
    assert psql == "psql -X -w -At -U tracker -d tracking -c select version_num from alembic_version"


def test_fact_on_a_running_database_without_mlflow_tables(docker, stack_dir):
    docker.write("psql.rc", "1")
    docker.write("psql.out", 'ERROR:  relation "alembic_version" does not exist\nLINE 1: select ...\n')
    assert cluster_fact(docker, stack_dir) == {"pg_version": "17", "revision": None, "running": True,
                                               "unreadable": None}


def test_fact_on_a_running_database_that_cannot_be_asked_says_why(docker, stack_dir):
    docker.write("psql.rc", "2")
    docker.write("psql.out", "psql: error: connection to server failed\nthe database system is starting up\n")
    assert cluster_fact(docker, stack_dir) == {
        "pg_version": "17", "revision": None, "running": True,
        "unreadable": "psql: error: connection to server failed the database system is starting up"}


def test_stopped_database_that_cannot_be_asked_is_neither_dumped_nor_passed(docker, stack_dir, monkeypatch):
    docker.write("psql.rc", "2")
    docker.write("psql.out", "psql: error: connection to server failed\n")
    ok, host = back_up_a_stopped_database(docker, stack_dir, monkeypatch)
    assert not ok
    assert host.errors == ["on lab-server: cannot read the database's schema revision (psql: error: connection to "
                           "server failed). Nothing was backed up or migrated; the deploy stops here"]
    assert not dumped(docker)


@pytest.mark.parametrize("ids, running", [("", "true"), ("c-postgres\n", "false")], ids=["no container", "stopped"])
def test_fact_on_a_stopped_database(docker, stack_dir, ids, running):
    docker.write("ids", ids)
    docker.write("running", running)
    docker.write("psql.out", f"{OLD_REVISION}\n")
    assert cluster_fact(docker, stack_dir) == {"pg_version": "17", "revision": None, "running": False,
                                               "unreadable": None}
    assert not any(line.startswith("psql") for line in docker.argv)


@pytest.mark.parametrize("output, expected", [
    ([], {"pg_version": None, "revision": None, "running": False, "unreadable": None}),
    (["pg_version=", "running=no"],
     {"pg_version": None, "revision": None, "running": False, "unreadable": None}),
    (["pg_version=16", "running=yes", "revision="],
     {"pg_version": "16", "revision": None, "running": True, "unreadable": None}),
    (["pg_version=17", "running=yes", f"revision={NEW_REVISION}"],
     {"pg_version": "17", "revision": NEW_REVISION, "running": True, "unreadable": None}),
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


def test_migrate_db_tells_an_empty_database_without_importing_mlflow(tmp_path, mlflow_version):
    # Every new server starts with an empty database; MLflow's import is the cost of this one-shot.
    driver = ("import runpy, sys\ntry:\n    runpy.run_path(sys.argv[1], run_name='__main__')\nfinally:\n"
              "    print(sorted(name for name in sys.modules if name.split('.')[0] in ('mlflow', 'alembic')))")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
           "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path / 'new.db'}"}
    proc = subprocess.run([sys.executable, "-c", driver, str(MIGRATE_DB)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    told, imported = proc.stdout.strip().splitlines()
    assert told == f"no MLflow schema yet: MLflow {mlflow_version} creates it at its first start"
    assert imported == "[]"


def test_migrate_db_refuses_a_schema_it_does_not_know(migrations):
    run = migrations["newer"]
    assert run["rc"] == 3
    assert "refusing to start: the database has schema revision ffffffffffff" in run["stderr"]
    assert "restore the backup taken before the upgrade" in run["stderr"]
    assert run["before"] == run["after"] == "ffffffffffff"  # untouched
