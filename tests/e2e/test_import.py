"""Import of a classic MLflow data set (issue 11), then the day-two verbs, on one container
target over SSH with the real pyinfra CLI: TLS at its default (self-signed; the suite's shared
settings turn it off), deployed by a sudo user, the host known by a DNS name only this machine
resolves, backups scheduled.

The import: the MLflow client inside the built MLflow image writes a classic data set the way the
classic setup does (a store and `file://` artifacts on a bind mount, seen as /app in the
container); `import_classic.py` brings it in; a client on this machine (trusting the fetched CA)
finds everything through the stack. First a file store, then a SQLite store with one 500 MiB
artifact (uploaded by presigned multipart URLs through the TLS proxy), then a PostgreSQL database
(a second database in the stack's own PostgreSQL); the experiments have the same names each time
(merged).

The day-two verbs, on the same stack with its imported data: status.py and logs.py on a healthy,
a degraded and a stopped stack (read-only: no operation, nothing changes); uninstall.py keeping
the data, then deploy.py bringing the same data back; the data removed only when confirmed by
the host's name. (One target for both: a fresh deploy less in the suite.)

The tests share the target and run in order.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import requests

from .support import (Deployer, compose_status, control_machine_hosts_entry, http_json, read_secrets, run_client,
                      run_status, s3_client, stack_warnings, status_document)

pytestmark = pytest.mark.e2e

FILE_STORE = "/srv/classic-fs"      # the old server's bind mount: /app in its container
SQLITE_STORE = "/srv/classic-sqlite"
POSTGRES_DIR = "/srv/classic-postgres"  # the old server's artifacts (/app/mlruns in its container)
# MLflow's client uploads a file of MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE (500 MiB) or more
# by presigned multipart URLs, i.e. to https://<public name>:9000 through the proxy.
LARGE = 500 * 1024 * 1024
# The old PostgreSQL: a database and role of the test's own in the stack's container.
OLD_DATABASE, OLD_ROLE, OLD_PASSWORD = "classic_mlflow", "classic_old", "old-DB-pw-Zq81x"
OLD_URI = f"postgresql://{OLD_ROLE}@postgres:5432/{OLD_DATABASE}"
COUNTED = "2 experiments, 6 runs, 2 logged models, 1 registered models, 2 model versions, 1 aliases"
MERGED = COUNTED.removeprefix("2 experiments, ")  # the experiments' names exist in the stack already


def make_classic_data(target, directory: str, uri: str, model: str, large: int = 0, docker_args: str = "") -> dict:
    """tests/e2e/classic_data.py in the stack's MLflow image, as root (as classic containers
    run), the host directory mounted at /app."""
    script = (Path(__file__).parent / "classic_data.py").read_text()
    target.ssh(f"mkdir -p {directory} /srv/classic-tools && printf %s {shlex.quote(script)} > "
               "/srv/classic-tools/classic_data.py")
    image = "$(docker inspect -f '{{.Config.Image}}' $(docker compose --project-name mlflow ps -q mlflow))"
    out = target.ssh(f"docker run --rm --user 0:0 {docker_args} -v {directory}:/app -v /srv/classic-tools:/tools:ro -w /app "
                     f"-e MLFLOW_ALLOW_FILE_STORE=true -e MLFLOW_DISABLE_TELEMETRY=true {image} "
                     f"python /tools/classic_data.py {uri} {model} {large}", timeout=900).stdout
    return json.loads(next(line[7:] for line in out.splitlines() if line.startswith("RESULT=")))


def tree_digest(target, directory: str) -> str:
    """Every path, size, mode and mtime, and every file's content, of the old data."""
    return target.ssh(f"cd {directory} && {{ find . -printf '%p %s %m %T@\\n' | sort; "
                      "find . -type f -print0 | sort -z | xargs -0 sha256sum; } | sha256sum").stdout


def postgres(target, command: str, user: str = "mlflow", database: str = "mlflow") -> str:
    """A command in the stack's PostgreSQL container (as its superuser, over the local socket)."""
    return target.ssh(f"docker exec -i $(docker compose --project-name mlflow ps -q postgres) "
                      f"{command.replace('PSQL', f'psql -v ON_ERROR_STOP=1 -Atq -U {user} -d {database}')}").stdout


def old_database_digest(target) -> str:
    """Schema, rows and sequences of the old database (without pg_dump's random \\restrict key)."""
    return target.ssh(f"docker exec $(docker compose --project-name mlflow ps -q postgres) "
                      f"pg_dump -U mlflow {OLD_DATABASE} | grep -v -E '^.(un)?restrict ' | sha256sum").stdout


@pytest.fixture(scope="module")
def deployer(container_target, settings, tmp_path_factory):
    """TLS at its default: the shared settings without "tls"; the CA fetched per inventory name, a
    DNS name that only this machine resolves; a sudo user; backups scheduled (status shows when)."""
    ca_dir = tmp_path_factory.mktemp("ca")
    name = f"import-{container_target.name}.lab.test"
    defaults = {key: value for key, value in settings.items() if key != "tls"}
    deployer = Deployer(container_target, {**defaults, "tls_ca_local_dir": str(ca_dir),
                                           "backup_schedule": "*-*-* 03:00:00"},
                        user="labadmin", workdir=tmp_path_factory.mktemp("deploy-import"), name=name)
    with control_machine_hosts_entry(name, container_target.address):
        assert container_target.ssh(f"getent hosts {name}", check=False).returncode != 0, "the target must not resolve it"
        deployer.run().check()
        deployer.ca = str(ca_dir / name / "ca.crt")
        deployer.uri = f"https://{name}:5000"
        deployer.imported = False  # set by each import: the next one merges (the module's tests run in order)
        yield deployer


def read_imported(deployer, workdir: Path, model: str, model_run: str) -> dict:
    """The control machine's client: tracking URI, credentials and the stack's CA only."""
    return json.loads(run_client("client_read_imported.py", deployer.uri, workdir, model, model_run,
                                 env={"REQUESTS_CA_BUNDLE": deployer.ca}))


def bucket(deployer):
    return s3_client(f"https://{deployer.name}:9000", read_secrets(deployer.target), verify=deployer.ca)


def distinct(metrics: dict) -> dict:
    return {key: list(dict.fromkeys(map(tuple, values))) for key, values in metrics.items()}


def check_imported(made: dict, found: dict, model: str) -> None:
    imported = found["runs"]
    assert set(made["runs"]) <= set(imported)
    for source, experiment in made["runs"].items():
        run = imported[source]
        assert run["experiment"] == experiment
        # steps, timestamps, values; the file store holds some twice (3.x log_model logs them again)
        assert distinct(run["metrics"]) == distinct(made["metrics"][source])
        assert run["times"] == made["times"][source]
        assert run["lifecycle"] == ("deleted" if source in made["deleted"] else "active")
        assert run["artifact_uri"].startswith("mlflow-artifacts:/"), run["artifact_uri"]
    assert all(not e["location"].startswith("file:") for e in found["experiments"].values()), found["experiments"]
    assert found["aliases"] == {"champion": "2"}
    assert found["versions"]["1"]["stage"] == "Archived"
    assert {v["run_id"] for v in found["versions"].values()} == {imported[r]["id"] for r in made["model_runs"]}
    assert found["predict_by_alias"] == pytest.approx(41.0) and found["predict_by_run"] == pytest.approx(41.0)
    assert found["notes"] == "slope 4.0\n"


def test_file_store_is_imported_once_and_left_unchanged(container_target, deployer, tmp_path, record):
    target = container_target
    made = make_classic_data(target, FILE_STORE, "file:///app/mlruns", "classic-model")
    before = tree_digest(target, FILE_STORE)
    store = {"classic_backend_store": f"{FILE_STORE}/mlruns"}

    dry = deployer.run(overrides=store, deploy="import_classic.py", extra_args=("--dry",)).check()
    assert f"Import {FILE_STORE}/mlruns into the stack: {COUNTED}" in dry.stdout + dry.stderr

    imported = deployer.run(overrides=store, deploy="import_classic.py").check()
    record("import_file_store_seconds", round(imported.seconds, 1))
    deployer.imported = True
    assert f"Import a classic MLflow data set | Import {FILE_STORE}/mlruns into the stack: {COUNTED}" \
        in imported.changed, imported.changed

    found = read_imported(deployer, tmp_path / "client", "classic-model", made["model_runs"][-1])
    check_imported(made, found, "classic-model")
    assert found["experiments"]["classic-training"]["tags"]["team"] == "vision"
    # The artifacts are objects in the bucket now.
    s3 = bucket(deployer)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow", Prefix="artifacts/")["Contents"]]
    assert sum(key.endswith("/MLmodel") for key in keys) == 2, keys
    assert sum(key.endswith("/notes/summary.txt") for key in keys) == 3, keys

    again = deployer.run(overrides=store, deploy="import_classic.py").check()
    record("import_rerun_seconds", round(again.seconds, 1))
    assert again.changed == [], again.changed
    assert deployer.run().check().changed == []
    assert tree_digest(target, FILE_STORE) == before


def test_sqlite_store_with_a_500_mib_artifact_merges_into_same_named_experiments(container_target, deployer,
                                                                                  tmp_path, record):
    """The 500 MiB file goes by presigned multipart URLs (the server advertises them), to the
    public name through the TLS proxy: only the CA mounted into the importer makes that work
    (MLflow falls back to a plain upload only when the server says multipart is unsupported)."""
    target = container_target
    info = requests.get(f"{deployer.uri}/api/3.0/mlflow/server-info", verify=deployer.ca, timeout=30).json()
    assert info.get("multipart_uploads_enabled") is True, info
    made = make_classic_data(target, SQLITE_STORE, "sqlite:////app/mlflow.db", "classic-sqlite-model", LARGE)
    before = tree_digest(target, SQLITE_STORE)
    # Artifacts default to the SQLite file's directory (/app/mlruns in the old container).
    store = {"classic_backend_store": f"{SQLITE_STORE}/mlflow.db"}

    imported = deployer.run(overrides=store, deploy="import_classic.py").check()
    record("import_sqlite_with_500mib_tls_seconds", round(imported.seconds, 1))
    counted, deployer.imported = (MERGED if deployer.imported else COUNTED), True
    assert f"Import a classic MLflow data set | Import {SQLITE_STORE}/mlflow.db into the stack: {counted}" \
        in imported.changed, imported.changed

    found = read_imported(deployer, tmp_path / "client", "classic-sqlite-model", made["model_runs"][-1])
    check_imported(made, found, "classic-sqlite-model")
    large = found["runs"][made["model_runs"][-1]]
    assert "data" in large["artifacts"]
    s3 = bucket(deployer)
    key = f"artifacts/{large['artifact_uri'].split(':/', 1)[1]}/data/large.bin"
    assert s3.head_object(Bucket="mlflow", Key=key)["ContentLength"] == LARGE

    again = deployer.run(overrides=store, deploy="import_classic.py").check()
    assert again.changed == [], again.changed
    assert tree_digest(target, SQLITE_STORE) == before


def test_postgresql_database_is_read_in_read_only_sessions_and_left_unchanged(container_target, deployer, tmp_path,
                                                                              record):
    """The old database: a database and role of its own in the stack's PostgreSQL container,
    written by the MLflow client in the built image (artifacts on a bind mount); its password
    reaches the import only through $MLFLOW_STACK_CLASSIC_DATABASE_PASSWORD and stdin."""
    target = container_target
    postgres(target, f"PSQL -c \"CREATE ROLE {OLD_ROLE} LOGIN PASSWORD '{OLD_PASSWORD}'\" "
                     f"-c 'CREATE DATABASE {OLD_DATABASE} OWNER {OLD_ROLE}'")
    network = target.ssh("docker inspect -f '{{range $name, $_ := .NetworkSettings.Networks}}{{$name}}{{end}}' "
                         "$(docker compose --project-name mlflow ps -q postgres)").stdout.strip()
    made = make_classic_data(target, POSTGRES_DIR, f"postgresql+psycopg2://{OLD_ROLE}@postgres:5432/{OLD_DATABASE}",
                             "classic-pg-model", docker_args=f"--network {network} -e PGPASSWORD={OLD_PASSWORD}")
    before = old_database_digest(target)
    store = {"classic_backend_store": OLD_URI, "classic_artifact_root": f"{POSTGRES_DIR}/mlruns"}
    secret = {"MLFLOW_STACK_CLASSIC_DATABASE_PASSWORD": OLD_PASSWORD}

    # -vvv: pyinfra shows every command and its output; the password is in none of them.
    imported = deployer.run(overrides=store, deploy="import_classic.py", env=secret, extra_args=("-vvv",)).check()
    record("import_postgresql_seconds", round(imported.seconds, 1))
    deployer.imported = True
    # The password reaches the host on the first run, after the plan fact ran: counts unknown then.
    assert "Import a classic MLflow data set | Keep the old database's password (root, 0600)" in imported.changed
    assert f"Import a classic MLflow data set | Import {OLD_URI} into the stack: counts unknown" in imported.changed, \
        imported.changed
    output = imported.stdout + imported.stderr
    assert "database_read_only=on" in output
    assert OLD_PASSWORD not in output
    assert target.ssh("stat -c '%U %a' /srv/mlflow/classic-database.password").stdout.split() == ["root", "600"]
    found = read_imported(deployer, tmp_path / "client", "classic-pg-model", made["model_runs"][-1])
    check_imported(made, found, "classic-pg-model")

    again = deployer.run(overrides=store, deploy="import_classic.py", env=secret).check()
    assert again.changed == [], again.changed
    assert old_database_digest(target) == before

    # A table MLflow would create (it does when one is missing, even when only reading) is
    # missing: PostgreSQL itself refuses the write, and the import stops with nothing changed.
    postgres(target, "PSQL -c 'DROP TABLE tags'", database=OLD_DATABASE)
    dropped = old_database_digest(target)
    refused = deployer.run(overrides=store, deploy="import_classic.py", env=secret)
    assert refused.returncode != 0
    assert "read-only transaction" in refused.stdout + refused.stderr
    assert old_database_digest(target) == dropped


# The day-two verbs, on the stack with the imported data.

def test_status_of_a_healthy_stack(container_target, deployer):
    before = compose_status(container_target)
    text = run_status(deployer).stdout
    assert f"== {deployer.name} (standalone): https://{deployer.name}:5000, MLflow 3.17.2" in text
    assert "no warnings" in text and "users" in text and "runs" in text
    document = status_document(run_status(deployer, "json"))
    assert stack_warnings(document) == []
    assert {name: service["healthy"] for name, service in document["services"].items()} == {
        name: True for name in before}
    assert document["database"]["revision"] == document["schema_revision_expected"]
    assert int(document["database"]["users"]) >= 1
    assert int(document["database"]["runs"]) >= 5  # the imported ones (active)
    assert "mlflow-backup" in document["schedules"] and document["schedules"]["mlflow-backup"]["next_run"]
    assert document["disk"]["filesystem"]["free_percent"] > 0
    assert compose_status(container_target) == before  # read-only


def test_logs_of_one_service(deployer):
    result = deployer.run(overrides={"logs_service": "mlflow", "logs_lines": 5}, deploy="logs.py").check()
    assert result.changed == [] and result.unchanged == []
    assert "the last 5 lines of mlflow" in result.stdout and "mlflow-1  |" in result.stdout


def test_a_degraded_then_stopped_stack_is_reported_not_changed(container_target, deployer):
    long_running = sorted(name for name, service in compose_status(container_target).items()
                          if service["state"] == "running")
    assert {"minio", "mlflow", "mlflow-api", "postgres", "proxy"} <= set(long_running), long_running
    container_target.ssh("cd /srv/mlflow && docker compose stop minio")
    document = status_document(run_status(deployer, "json"))
    assert "minio is not healthy (exited)" in document["warnings"], document["warnings"]
    assert compose_status(container_target)["minio"]["state"] == "exited"  # status changed nothing
    container_target.ssh("cd /srv/mlflow && docker compose stop")
    document = status_document(run_status(deployer, "json"))
    assert {document["services"][name]["state"] for name in long_running} == {"exited"}
    assert sorted(document["warnings"]) == [f"{name} is not healthy (exited)" for name in long_running]
    assert document["database"].get("revision") is None  # nothing to ask: no error either
    # The deploy brings it back.
    assert deployer.run().check().changed
    assert stack_warnings(status_document(run_status(deployer, "json"))) == []


def test_uninstall_keeps_the_data_and_a_deploy_brings_it_back(container_target, deployer):
    target, uri = container_target, f"{deployer.uri}/api/2.0/mlflow"
    experiment = http_json(f"{uri}/experiments/create", {"name": "kept-through-uninstall"}, ca=deployer.ca)["experiment_id"]
    secrets_before = target.ssh("sha256sum /srv/mlflow/.env").stdout
    removed = deployer.run(deploy="uninstall.py").check()
    assert removed.changed
    assert target.ssh("docker ps -aq --filter label=com.docker.compose.project=mlflow").stdout.strip() == ""
    assert target.ssh("docker image ls -q mlflow-stack/mlflow").stdout.strip() == ""
    assert target.ssh("ls /etc/systemd/system/ | grep -c mlflow-", check=False).stdout.strip() == "0"
    for gone in ("compose.yaml", "mlflow.env", "auth.ini", "nginx.conf", "build", "images", "backup.sh"):
        assert target.ssh(f"test -e /srv/mlflow/{gone}", check=False).returncode != 0, gone
    for kept in ("data/postgres", "data/minio", ".env"):
        assert target.ssh(f"test -e /srv/mlflow/{kept}", check=False).returncode == 0, kept
    assert deployer.run(deploy="uninstall.py").check().changed == []  # again: nothing left to do
    document = status_document(run_status(deployer, "json"))
    assert {service["state"] for service in document["services"].values()} == {"missing"}

    deployer.run().check()
    assert target.ssh("sha256sum /srv/mlflow/.env").stdout == secrets_before
    assert http_json(f"{uri}/experiments/get?experiment_id={experiment}", ca=deployer.ca)["experiment"]["name"] == \
        "kept-through-uninstall"
    assert deployer.run().check().changed == []


def test_data_goes_only_when_confirmed_by_the_host_s_name(container_target, deployer):
    target, name = container_target, deployer.name
    refused = deployer.run(overrides={"uninstall_data": True}, deploy="uninstall.py")
    assert refused.returncode != 0 and f"confirm with uninstall_confirm = {name!r}" in refused.stderr
    assert compose_status(target)["mlflow"]["state"] == "running"  # refused before any change
    deployer.run(overrides={"uninstall_data": True, "uninstall_confirm": name}, deploy="uninstall.py").check()
    assert target.ssh("test -e /srv/mlflow", check=False).returncode != 0
    assert target.ssh("id mlflow", check=False).returncode != 0
