"""External backends: one target (A) runs the institute's PostgreSQL and S3 store, another (B)
deploys the stack with both external settings pointing at A by its address (the database over
TLS, verify-full against the institute's CA). A remote client logs and loads a model through B,
the objects land in A's bucket, a rerun changes nothing, and a wrong database password, an
unreachable S3, a missing bucket or an untrusted database certificate is refused before
anything restarts."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest

from mlflow_stack.services import stack_services
from tests.e2e.support import (Deployer, assert_stack_healthy, compose_status, read_secrets, run_client,
                               run_status, stack_warnings, status_document)
from tests.harness.fixtures import _FACTORY_RANGE, _start_in_range

DB_PASSWORD = "db-" + uuid.uuid4().hex
S3_SECRET = "s3-" + uuid.uuid4().hex
BUCKET, PREFIX = "lab-artifacts", "team/mlflow"
START = "Build the MLflow image and start the stack"  # the deploy step holding the check and the start
EXTERNAL_BOTH = stack_services(external_database=True, external_s3=True)


def institute_s3(address: str):
    import boto3

    return boto3.client("s3", endpoint_url=f"http://{address}:9000", region_name="us-east-1",
                        aws_access_key_id="labkey", aws_secret_access_key=S3_SECRET)


def mlflow_started_at(target) -> str:
    return target.ssh("docker inspect -f '{{.State.StartedAt}}' "
                      "$(docker compose --project-name mlflow ps -q mlflow)").stdout.strip()


@pytest.fixture(scope="module")
def tracking_target(preloaded_images):
    """B: a second target for the whole module (container_target, A, runs the backends)."""
    target = _start_in_range(*_FACTORY_RANGE, images=preloaded_images)
    try:
        yield target
    finally:
        target.stop()


def make_ca(directory: Path, name: str) -> Path:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
                    "-keyout", str(directory / f"{name}.key"), "-out", str(directory / f"{name}.pem")],
                   check=True, capture_output=True)
    return directory / f"{name}.pem"


@pytest.fixture(scope="module")
def tls(container_target, tmp_path_factory) -> dict:
    """A CA, the database's certificate for A's address signed by it, and an unrelated CA."""
    directory = tmp_path_factory.mktemp("tls")
    ca = make_ca(directory, "institute-ca")
    (directory / "san.ext").write_text(f"subjectAltName=IP:{container_target.address}\n")
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={container_target.address}",
                    "-keyout", str(directory / "server.key"), "-out", str(directory / "server.csr")],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(directory / "server.csr"), "-CA", str(ca), "-CAkey",
                    str(directory / "institute-ca.key"), "-CAcreateserial", "-days", "2", "-out",
                    str(directory / "server.crt"), "-extfile", str(directory / "san.ext")],
                   check=True, capture_output=True)
    return {"dir": directory, "ca": ca, "other_ca": make_ca(directory, "other-ca")}


@pytest.fixture(scope="module")
def backends(container_target, settings, tls):
    target = container_target
    Deployer(target, settings).run(deploy="tests/e2e/institute_backends.py", overrides={
        "institute_db_password": DB_PASSWORD, "institute_s3_secret": S3_SECRET,
        "institute_db_tls_dir": str(tls["dir"])}).check()
    s3 = institute_s3(target.address)
    for _ in range(30):  # the S3 store answers a few seconds after its container starts
        try:
            s3.create_bucket(Bucket=BUCKET)
            break
        except Exception:
            time.sleep(1)
    else:
        s3.create_bucket(Bucket=BUCKET)
    return target


@pytest.fixture(scope="module")
def server(tracking_target, backends, tls, settings, tmp_path_factory, record):
    target = tracking_target
    external = {
        "postgres_external_host": backends.address, "postgres_db": "mlflow_lab", "postgres_user": "institute",
        "postgres_password": DB_PASSWORD, "postgres_sslmode": "verify-full", "postgres_ca_file": str(tls["ca"]),
        "s3_endpoint_url": f"http://{backends.address}:9000", "s3_access_key": "labkey",
        "s3_secret_access_key": S3_SECRET, "minio_bucket": BUCKET, "minio_bucket_prefix": PREFIX,
    }
    deployer = Deployer(target, {**settings, **external})
    first = deployer.run().check()
    record("external_first_deploy_s", round(first.seconds, 1))
    return {"target": target, "deployer": deployer, "first": first, "uri": f"http://{target.address}:5000",
            "workdir": tmp_path_factory.mktemp("clients")}


def test_only_mlflow_runs_here_and_the_secrets_stay_hidden(server):
    target, first = server["target"], server["first"]
    assert_stack_healthy(target, EXTERNAL_BOTH)
    assert set(compose_status(target)) == {"migrate-db", "mlflow"}
    assert f"{START} | Check the external backends from the host" in first.changed
    assert target.ssh("ls /srv/mlflow/data").stdout.split() == ["mlruns"]  # no postgres/, no minio/
    secrets = read_secrets(target)
    assert secrets["POSTGRES_PASSWORD"] == DB_PASSWORD and secrets["S3_SECRET_ACCESS_KEY"] == S3_SECRET
    assert "MINIO_ROOT_PASSWORD" not in secrets
    assert target.ssh("stat -c '%U %a' /srv/mlflow/.env").stdout.strip() == "root 600"
    assert DB_PASSWORD not in first.stdout + first.stderr and S3_SECRET not in first.stdout + first.stderr
    assert DB_PASSWORD not in target.ssh("cat /srv/mlflow/compose.yaml /srv/mlflow/mlflow.env /srv/mlflow/auth.ini").stdout


def test_client_logs_and_loads_a_model_whose_objects_land_in_the_external_bucket(server, backends):
    uri, workdir = server["uri"], server["workdir"]
    run_id = run_client("client_log_model.py", uri, workdir / "log")
    assert float(run_client("client_load_model.py", uri, workdir / "load", run_id)) == pytest.approx(31.0)
    keys = [obj["Key"] for obj in institute_s3(backends.address).list_objects_v2(
        Bucket=BUCKET, Prefix=PREFIX + "/").get("Contents", [])]
    assert any(key.endswith("/MLmodel") for key in keys), keys
    # The runs are in the institute's database, not on this server.
    count = backends.ssh("docker exec institute-postgres psql -X -At -U institute -d mlflow_lab "
                         f"-c \"select count(*) from runs where run_uuid = '{run_id}'\"").stdout.strip()
    assert count == "1"
    # MLflow's connections to it are encrypted (verify-full against the institute's CA).
    ssl = backends.ssh("docker exec institute-postgres psql -X -At -U institute -d mlflow_lab -c \"select s.ssl, "
                       "count(*) from pg_stat_ssl s join pg_stat_activity a using (pid) where a.usename = 'institute' "
                       "and a.client_addr is not null group by s.ssl\"").stdout.split()
    assert [line.split("|")[0] for line in ssl] == ["t"], ssl


def test_rerun_changes_nothing(server, record):
    again = server["deployer"].run().check()
    record("external_rerun_s", round(again.seconds, 1))
    assert again.changed == [], again.changed


def test_a_classic_file_store_is_imported_into_the_external_bucket(server, backends, record):
    """The importer runs in the jobs service, which an external-S3 stack has too (it has no
    bucket init); the old artifacts become objects in the institute's bucket."""
    from tests.e2e.test_import import COUNTED, FILE_STORE, make_classic_data

    target, deployer = server["target"], server["deployer"]
    s3 = institute_s3(backends.address)

    def models() -> int:
        keys = [obj["Key"] for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX + "/").get("Contents", [])]
        return sum(key.endswith("/MLmodel") for key in keys)

    before = models()
    make_classic_data(target, FILE_STORE, "file:///app/mlruns", "classic-model")
    imported = deployer.run(overrides={"classic_backend_store": f"{FILE_STORE}/mlruns"},
                            deploy="import_classic.py").check()
    record("external_import_s", round(imported.seconds, 1))
    assert f"Import {FILE_STORE}/mlruns into the stack: {COUNTED}" in imported.stdout + imported.stderr
    assert models() == before + 2  # the data set's two logged models
    assert S3_SECRET not in imported.stdout + imported.stderr


def test_status_reads_the_external_database_through_mlflow(server):
    result = run_status(server["deployer"], "json")
    document = status_document(result)
    assert set(document["services"]) == {"migrate-db", "mlflow"}
    assert document["database"]["revision"] == document["schema_revision_expected"], document["database"]
    assert int(document["database"]["runs"]) >= 1 and int(document["database"]["users"]) >= 1
    assert stack_warnings(document) == [], document["warnings"]
    assert DB_PASSWORD not in result.stdout + result.stderr and S3_SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize("overrides, message", [
    ({"postgres_password": "wrong-password-123"}, "authentication: connection to server at \"{backends}\", port 5432 "
                                                  "failed: FATAL:  password authentication failed for user \"institute\""),
    ({"s3_endpoint_url": "http://{backends}:9009"}, "connect: {backends}:9009 does not accept connections"),
    ({"minio_bucket": "no-such-bucket"}, "missing bucket: 'no-such-bucket' does not exist"),
    ({"postgres_ca_file": "{other_ca}"}, "TLS: "),
], ids=["wrong-db-password", "unreachable-s3", "missing-bucket", "untrusted-db-certificate"])
def test_bad_backend_is_refused_before_the_stack_restarts(server, backends, tls, overrides, message, record, request):
    target = server["target"]
    overrides = {key: value.format(backends=backends.address, other_ca=tls["other_ca"])
                 for key, value in overrides.items()}
    started = mlflow_started_at(target)
    result = server["deployer"].run(overrides)
    record(f"external_refused_{request.node.callspec.id}_s", round(result.seconds, 1))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message.format(backends=backends.address) in output, result.stderr[-3000:]
    assert "Stopped before (re)starting the stack" in output
    assert "wrong-password-123" not in output
    assert not [name for name in result.changed if name.startswith(f"{START} | Start the stack")], result.changed
    assert mlflow_started_at(target) == started
    assert_stack_healthy(target, EXTERNAL_BOTH)
    # The right settings again: checked, nothing to restart.
    again = server["deployer"].run().check()
    record(f"external_after_{request.node.callspec.id}_s", round(again.seconds, 1))
    assert mlflow_started_at(target) == started
