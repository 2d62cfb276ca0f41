"""Prove that the stand-in images honour the contract of the images they replace.

Runs the images on a private host dockerd (see dockerd.py); published ports
are on 127.0.0.1 only.  Needs root, debootstrap and docker.io (dockerd).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path

import pytest

from tools.standins.build import STANDIN_IMAGES, ensure_standin_archive
from tools.standins.dockerd import DOCKERD, host_dockerd

pytestmark = pytest.mark.e2e

UID = 10001
PG_USER, PG_PASSWORD, PG_DB = "mlflow", "pg-Secret-123", "mlflowdb"
S3_USER, S3_PASSWORD = "mlflow-minio", "minio-Secret-123"
MIB = 1024 * 1024


def _missing_requirements() -> str | None:
    if os.geteuid() != 0:
        return "needs root (debootstrap, dockerd)"
    if not os.access(DOCKERD, os.X_OK):
        return "dockerd missing (apt-get install docker.io)"
    if not shutil.which("debootstrap"):
        return "debootstrap missing"
    return None


@pytest.fixture(scope="module")
def docker():
    reason = _missing_requirements()
    if reason:
        pytest.skip(reason)
    archive = ensure_standin_archive()
    forward_before = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    with host_dockerd() as daemon:
        daemon.docker("load", "-i", str(archive), timeout=600)
        yield daemon
    # our dockerd runs with --ip-forward=false: it must not have changed the host
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == forward_before


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _owned_dir(base: Path, name: str) -> Path:
    path = base / name
    path.mkdir()
    os.chown(path, UID, UID)
    return path


def _wait(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as error:  # noqa: BLE001 - retried until the deadline
            last = error
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


def _exec(docker, container: str, *cmd: str, env: dict[str, str] | None = None):
    args = ["exec"]
    for key, value in (env or {}).items():
        args += ["-e", f"{key}={value}"]
    return docker.docker(*args, container, *cmd, check=False, timeout=120)


def _out(result) -> str:
    return (result.stdout or b"").decode(errors="replace") + (result.stderr or b"").decode(
        errors="replace")


def _logs(docker, container: str) -> str:
    return _out(docker.docker("logs", container, check=False))


def _container_ip(docker, container: str) -> str:
    out = docker.docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                        container)
    return out.stdout.decode().strip()


# -- postgres ------------------------------------------------------------------------


def test_postgres_contract(docker, tmp_path):
    data = _owned_dir(tmp_path, "pgdata")
    port = _free_port()
    name = f"standin-pg-{uuid.uuid4().hex[:8]}"
    docker.docker(
        "run", "-d", "--name", name, "--user", f"{UID}:{UID}",
        "-e", f"POSTGRES_USER={PG_USER}", "-e", f"POSTGRES_PASSWORD={PG_PASSWORD}",
        "-e", f"POSTGRES_DB={PG_DB}",
        "-v", f"{data}:/var/lib/postgresql/data", "-p", f"127.0.0.1:{port}:5432",
        STANDIN_IMAGES["postgres"])
    try:
        def ready():
            return _exec(docker, name, "pg_isready", "-U", PG_USER, "-d", PG_DB).returncode == 0

        _wait(ready, 90, "pg_isready")
        assert (data / "PG_VERSION").read_text().strip() == "17"
        assert (data / "PG_VERSION").stat().st_uid == UID
        assert "init process complete" in _logs(docker, name)
        # the published loopback port answers
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass

        # password login over TCP from a non-loopback address (scram-sha-256)
        ip = _container_ip(docker, name)

        def psql(password: str, sql: str):
            return _exec(docker, name, "psql", "-h", ip, "-U", PG_USER, "-d", PG_DB,
                         "-v", "ON_ERROR_STOP=1", "-tAc", sql, env={"PGPASSWORD": password})

        ok = psql(PG_PASSWORD, "SHOW password_encryption")
        assert ok.returncode == 0, _out(ok)
        assert ok.stdout.decode().strip() == "scram-sha-256"
        hba = psql(PG_PASSWORD, "SELECT auth_method FROM pg_hba_file_rules "
                                "WHERE type = 'host' AND address = 'all'")
        assert hba.returncode == 0, _out(hba)
        assert hba.stdout.decode().split() == ["scram-sha-256"]
        bad = psql("not-the-password", "SELECT 1")
        assert bad.returncode != 0
        assert "password authentication failed" in _out(bad)

        created = psql(PG_PASSWORD, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
        assert created.returncode == 0, _out(created)
        # The image has no JIT (its LLVM is left out): a query costly enough for one still runs.
        costly = psql(PG_PASSWORD, "SET jit_above_cost = 0; SELECT sum(i) FROM generate_series(1, 100000) i")
        assert costly.returncode == 0, _out(costly)
        assert costly.stdout.decode().split()[-1] == "5000050000"

        # clean stop on SIGINT (STOPSIGNAL), restart keeps the data and skips initdb
        started = time.monotonic()
        docker.docker("stop", "-t", "30", name)
        assert time.monotonic() - started < 20
        assert "database system is shut down" in _logs(docker, name)
        docker.docker("start", name)
        _wait(ready, 90, "pg_isready after restart")
        assert "skipping initialisation" in _logs(docker, name)
        kept = psql(PG_PASSWORD, "SELECT v FROM kept")
        assert kept.returncode == 0, _out(kept)
        assert kept.stdout.decode().strip() == "42"
    finally:
        docker.docker("rm", "-f", name, check=False)


def test_postgres_refuses_to_init_without_password(docker, tmp_path):
    data = _owned_dir(tmp_path, "pgdata")
    result = docker.docker("run", "--rm", "--user", f"{UID}:{UID}",
                           "-v", f"{data}:/var/lib/postgresql/data",
                           STANDIN_IMAGES["postgres"], check=False, timeout=120)
    assert result.returncode != 0
    assert "superuser password is not specified" in _out(result)
    assert not (data / "PG_VERSION").exists()


def test_postgres_password_file_and_root_start(docker, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text(PG_PASSWORD + "\n")
    name = f"standin-pg-{uuid.uuid4().hex[:8]}"
    docker.docker("run", "-d", "--name", name,
                  "-v", f"{secret}:/run/secrets/pg_password:ro",
                  "-e", "POSTGRES_PASSWORD_FILE=/run/secrets/pg_password",
                  STANDIN_IMAGES["postgres"])
    try:
        _wait(lambda: _exec(docker, name, "pg_isready", "-U", "postgres").returncode == 0,
              90, "pg_isready")
        ip = _container_ip(docker, name)
        ok = _exec(docker, name, "psql", "-h", ip, "-U", "postgres", "-tAc",
                   "SELECT current_user", env={"PGPASSWORD": PG_PASSWORD})
        assert ok.returncode == 0, _out(ok)
        owner = _exec(docker, name, "stat", "-c", "%U", "/var/lib/postgresql/data")
        assert owner.stdout.decode().strip() == "postgres"
    finally:
        docker.docker("rm", "-f", name, check=False)


# -- minio ----------------------------------------------------------------------------


def _s3(endpoint: str, key: str = S3_USER, secret: str = S3_PASSWORD):
    boto3 = pytest.importorskip("boto3")
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                      retries={"max_attempts": 1}))


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_minio_contract(docker, tmp_path):
    from botocore.exceptions import ClientError

    data = _owned_dir(tmp_path, "miniodata")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    name = f"standin-minio-{uuid.uuid4().hex[:8]}"
    docker.docker(
        "run", "-d", "--name", name, "--user", f"{UID}:{UID}",
        "-e", f"MINIO_ROOT_USER={S3_USER}", "-e", f"MINIO_ROOT_PASSWORD={S3_PASSWORD}",
        "-v", f"{data}:/data", "-p", f"127.0.0.1:{port}:9000",
        STANDIN_IMAGES["minio"], "server", "/data", "--console-address", ":9001")
    try:
        _wait(lambda: _status(endpoint + "/minio/health/live") == 200, 60, "minio live")
        assert _status(endpoint + "/minio/health/ready") == 200
        ready = _exec(docker, name, "mc", "ready", "local")
        assert ready.returncode == 0, _out(ready)
        console = _exec(docker, name, "python3", "-c",
                        "import urllib.request;"
                        "print(urllib.request.urlopen('http://127.0.0.1:9001/').status)")
        assert console.stdout.decode().strip() == "200", _out(console)

        s3 = _s3(endpoint)
        s3.create_bucket(Bucket="mlflow")
        s3.head_bucket(Bucket="mlflow")
        s3.put_object(Bucket="mlflow", Key="1/run/artifacts/model file.txt", Body=b"hello")
        got = s3.get_object(Bucket="mlflow", Key="1/run/artifacts/model file.txt")
        assert got["Body"].read() == b"hello"
        assert s3.head_object(Bucket="mlflow", Key="1/run/artifacts/model file.txt")[
            "ContentLength"] == 5
        listed = s3.list_objects_v2(Bucket="mlflow", Prefix="1/run/")
        assert [o["Key"] for o in listed["Contents"]] == ["1/run/artifacts/model file.txt"]
        with pytest.raises(ClientError) as missing:
            s3.head_bucket(Bucket="no-such-bucket")
        assert missing.value.response["Error"]["Code"] == "404"  # create_bucket.py relies on it

        # multipart: two parts (5 MiB minimum for all but the last), then an aborted one
        body = os.urandom(5 * MIB) + os.urandom(MIB + 7)
        upload = s3.create_multipart_upload(Bucket="mlflow", Key="big/model.bin")
        parts = []
        for number, chunk in ((1, body[:5 * MIB]), (2, body[5 * MIB:])):
            part = s3.upload_part(Bucket="mlflow", Key="big/model.bin",
                                  UploadId=upload["UploadId"], PartNumber=number, Body=chunk)
            parts.append({"PartNumber": number, "ETag": part["ETag"]})
        s3.complete_multipart_upload(Bucket="mlflow", Key="big/model.bin",
                                     UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": parts})
        assert s3.get_object(Bucket="mlflow", Key="big/model.bin")["Body"].read() == body
        aborted = s3.create_multipart_upload(Bucket="mlflow", Key="big/aborted.bin")
        s3.upload_part(Bucket="mlflow", Key="big/aborted.bin", UploadId=aborted["UploadId"],
                       PartNumber=1, Body=b"x" * MIB)
        s3.abort_multipart_upload(Bucket="mlflow", Key="big/aborted.bin",
                                  UploadId=aborted["UploadId"])
        with pytest.raises(ClientError):
            s3.head_object(Bucket="mlflow", Key="big/aborted.bin")

        # what MLflow's server does with artifacts: boto3's transfer manager (multipart with
        # concurrent parts and checksums above 8 MiB) and delimiter listings
        src = tmp_path / "artifact.bin"
        src.write_bytes(os.urandom(9 * MIB + 123))
        s3.upload_file(str(src), "mlflow", "1/run/artifacts/model/artifact.bin")
        back = tmp_path / "artifact.back"
        s3.download_file("mlflow", "1/run/artifacts/model/artifact.bin", str(back))
        assert back.read_bytes() == src.read_bytes()
        tree = s3.list_objects_v2(Bucket="mlflow", Prefix="1/run/artifacts/", Delimiter="/")
        assert [p["Prefix"] for p in tree.get("CommonPrefixes", [])] == [
            "1/run/artifacts/model/"]
        assert [o["Key"] for o in tree["Contents"]] == ["1/run/artifacts/model file.txt"]
        # DeleteObjects (how MLflow's server deletes artifacts)
        s3.put_object(Bucket="mlflow", Key="gone/a.txt", Body=b"a")
        s3.put_object(Bucket="mlflow", Key="gone/b.txt", Body=b"b")
        deleted = s3.delete_objects(Bucket="mlflow", Delete={"Objects": [{"Key": "gone/a.txt"}, {"Key": "gone/b.txt"}]})
        assert sorted(d["Key"] for d in deleted["Deleted"]) == ["gone/a.txt", "gone/b.txt"]
        assert s3.list_objects_v2(Bucket="mlflow", Prefix="gone/").get("KeyCount") == 0

        # presigned GET (how MLflow clients download artifacts)
        url = s3.generate_presigned_url(
            "get_object", Params={"Bucket": "mlflow", "Key": "1/run/artifacts/model file.txt"},
            ExpiresIn=300)
        assert "X-Amz-Signature=" in url
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.read() == b"hello"
        tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=00")
        assert _status(tampered) == 403
        forged = _s3(endpoint, secret="wrong-secret-key").generate_presigned_url(
            "get_object", Params={"Bucket": "mlflow", "Key": "1/run/artifacts/model file.txt"})
        assert _status(forged) == 403
        # legacy SigV2 presigned URL (boto3's default without signature_version) works too
        from botocore.config import Config

        import boto3
        v2 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_USER,
                          aws_secret_access_key=S3_PASSWORD, region_name="us-east-1",
                          config=Config(signature_version="s3", s3={"addressing_style": "path"}))
        v2url = v2.generate_presigned_url(
            "get_object", Params={"Bucket": "mlflow", "Key": "1/run/artifacts/model file.txt"})
        assert _status(v2url) == 200

        # wrong keys and anonymous requests are refused with 403
        for key, secret, code in ((S3_USER, "wrong-secret-key", "SignatureDoesNotMatch"),
                                  ("someone-else", S3_PASSWORD, "InvalidAccessKeyId")):
            with pytest.raises(ClientError) as refused:
                _s3(endpoint, key, secret).list_objects_v2(Bucket="mlflow")
            assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
            assert refused.value.response["Error"]["Code"] == code
            with pytest.raises(ClientError):
                _s3(endpoint, key, secret).put_object(Bucket="mlflow", Key="evil", Body=b"x")
        assert _status(f"{endpoint}/mlflow/big/model.bin") == 403
        with pytest.raises(ClientError):
            s3.head_object(Bucket="mlflow", Key="evil")

        # objects are files under the bind-mounted dir, owned by the container user
        stored = data / "mlflow" / "big" / "model.bin"
        assert stored.read_bytes() == body
        assert stored.stat().st_uid == UID

        # survives a restart
        docker.docker("restart", "-t", "10", name)
        _wait(lambda: _status(endpoint + "/minio/health/live") == 200, 60, "minio after restart")
        assert _exec(docker, name, "mc", "ready", "local").returncode == 0
        s3 = _s3(endpoint)
        assert s3.get_object(Bucket="mlflow", Key="big/model.bin")["Body"].read() == body
        s3.delete_object(Bucket="mlflow", Key="1/run/artifacts/model file.txt")
        with pytest.raises(ClientError):
            s3.head_object(Bucket="mlflow", Key="1/run/artifacts/model file.txt")
    finally:
        docker.docker("rm", "-f", name, check=False)


def test_minio_healthcheck_fails_without_server(docker):
    name = f"standin-minio-{uuid.uuid4().hex[:8]}"
    docker.docker("run", "-d", "--name", name, "--user", f"{UID}:{UID}",
                  "--entrypoint", "sleep", STANDIN_IMAGES["minio"], "300")
    try:
        result = _exec(docker, name, "mc", "ready", "local")
        assert result.returncode != 0
    finally:
        docker.docker("rm", "-f", name, check=False)


def test_minio_rejects_short_password(docker):
    result = docker.docker("run", "--rm", "-e", "MINIO_ROOT_USER=admin",
                           "-e", "MINIO_ROOT_PASSWORD=short", STANDIN_IMAGES["minio"],
                           "server", "/data", check=False, timeout=60)
    assert result.returncode != 0
    assert "MINIO_ROOT_PASSWORD length" in _out(result)


# -- python ---------------------------------------------------------------------------


def _tiny_wheel(directory: Path) -> Path:
    """A minimal pure-Python wheel, so `pip install` is tested without a network."""
    wheel = directory / "standin_tiny-0.1-py3-none-any.whl"
    files = {
        "standin_tiny/__init__.py": "VALUE = 'tiny ok'\n",
        "standin_tiny-0.1.dist-info/METADATA":
            "Metadata-Version: 2.1\nName: standin-tiny\nVersion: 0.1\n",
        "standin_tiny-0.1.dist-info/WHEEL":
            "Wheel-Version: 1.0\nGenerator: standin-test\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in files) + "standin_tiny-0.1.dist-info/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
        archive.writestr("standin_tiny-0.1.dist-info/RECORD", record)
    return wheel


def test_python_contract(docker, tmp_path):
    image = STANDIN_IMAGES["python"]
    config = docker.docker("inspect", "-f", "{{json .Config.Entrypoint}} {{json .Config.Cmd}}",
                           image).stdout.decode().strip()
    assert config == 'null ["python3"]'

    def run(*cmd: str, user: str | None = None, volume: str | None = None):
        args = ["run", "--rm"]
        if user:
            args += ["--user", user]
        if volume:
            args += ["-v", volume]
        return docker.docker(*args, image, *cmd, check=False, timeout=180)

    version = run("python", "--version", user=f"{UID}:{UID}")
    assert version.returncode == 0 and "Python 3." in _out(version), _out(version)
    pip = run("pip", "--version", user=f"{UID}:{UID}")
    assert pip.returncode == 0 and "pip " in _out(pip), _out(pip)
    tools = run("sh", "-c", "command -v useradd update-ca-certificates python3 pip")
    assert tools.returncode == 0, _out(tools)

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = _tiny_wheel(wheels)
    # root: global pip install works (no EXTERNALLY-MANAGED refusal)
    installed = run("sh", "-c", f"pip install --no-index /wheels/{wheel.name} && "
                    "python -c 'import standin_tiny; print(standin_tiny.VALUE)'",
                    volume=f"{wheels}:/wheels:ro")
    assert installed.returncode == 0, _out(installed)
    assert "tiny ok" in _out(installed)
    # uid 10001 without a passwd entry: venv + pip install
    venv = run("sh", "-c", f"python -m venv /tmp/venv && /tmp/venv/bin/pip install -q "
               f"--no-index /wheels/{wheel.name} && /tmp/venv/bin/python -c "
               "'import os, standin_tiny; print(os.getuid(), standin_tiny.VALUE)'",
               user=f"{UID}:{UID}", volume=f"{wheels}:/wheels:ro")
    assert venv.returncode == 0, _out(venv)
    assert f"{UID} tiny ok" in _out(venv)


def test_python_as_dockerfile_base(docker, tmp_path):
    """The pattern of the project's MLflow Dockerfile: extra CA, a user, pip install."""
    context = tmp_path / "ctx"
    context.mkdir()
    _tiny_wheel(context)
    cas = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
    if cas:
        shutil.copy(cas[0], context / "extra-ca.crt")
    else:
        (context / "extra-ca.crt").write_text("")
    (context / "Dockerfile").write_text(
        f"FROM {STANDIN_IMAGES['python']}\n"
        "COPY extra-ca.crt /usr/local/share/ca-certificates/extra-ca.crt\n"
        "RUN update-ca-certificates\n"
        "COPY standin_tiny-0.1-py3-none-any.whl /tmp/\n"
        "RUN pip install --no-cache-dir --no-index /tmp/standin_tiny-0.1-py3-none-any.whl "
        "&& useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin mlflow\n"
        "USER mlflow\n"
        "CMD [\"python\", \"-c\", \"import getpass, standin_tiny; "
        "print(getpass.getuser(), standin_tiny.VALUE)\"]\n")
    tag = f"standin-test/derived:{uuid.uuid4().hex[:8]}"
    docker.docker("build", "-q", "-t", tag, str(context), timeout=300)
    try:
        result = docker.docker("run", "--rm", tag, timeout=60)
        assert _out(result).strip() == "mlflow tiny ok"
    finally:
        docker.docker("rmi", "-f", tag, check=False)


# -- nginx (the TLS proxy) ------------------------------------------------------------


def test_nginx_contract(docker, tmp_path):
    """The deploy's nginx.conf at /etc/nginx/nginx.conf, `nginx -g 'daemon off;'` (the image's
    command), an arbitrary `user:`, the health check's bash /dev/tcp, TLS with the mounted
    certificate and key, plain HTTP on a TLS port refused."""
    import http.client
    import ssl
    import subprocess

    from mlflow_stack.config import load_config
    from mlflow_stack.steps.stack_files import render

    repo = Path(__file__).resolve().parents[2]
    config = load_config({"mlflow_public_host": "mlflow.standin.test"}, "mlflow.standin.test", environ={})
    conf = tmp_path / "nginx.conf"
    conf.write_text(render("nginx.conf.j2", config))
    ca_dir, tls_dir = tmp_path / "ca", tmp_path / "tls"
    ca_dir.mkdir(mode=0o700), tls_dir.mkdir()
    subprocess.run(["sh", str(repo / "files" / "host" / "tls-certs.sh"), "--make", "ca", "--ca-dir", str(ca_dir),
                    "--tls-dir", str(tls_dir), "--uid", str(UID), "--gid", str(UID), "--ca-days", "30",
                    "--server-days", "30", "--san", "DNS:mlflow.standin.test"], check=True, capture_output=True)
    name = f"standin-nginx-{uuid.uuid4().hex[:8]}"
    docker.docker("run", "-d", "--name", name, "--user", f"{UID}:{UID}",
                  "-v", f"{conf}:/etc/nginx/nginx.conf:ro",
                  "-v", f"{tls_dir}/server.crt:/etc/nginx/tls/server.crt:ro",
                  "-v", f"{tls_dir}/server.key:/etc/nginx/tls/server.key:ro", STANDIN_IMAGES["nginx"])
    try:
        health = f"exec 3<>/dev/tcp/127.0.0.1/{config.mlflow_port} && exec 4<>/dev/tcp/127.0.0.1/{config.minio_api_port}"
        _wait(lambda: _exec(docker, name, "bash", "-c", health).returncode == 0, 30, "nginx listening")
        assert _out(_exec(docker, name, "id", "-u")).strip() == str(UID)
        address = _container_ip(docker, name)
        plain = http.client.HTTPConnection(address, config.mlflow_port, timeout=10)
        plain.request("GET", "/")
        response = plain.getresponse()
        assert response.status == 400 and b"plain HTTP request was sent to HTTPS port" in response.read()
        context = ssl.create_default_context(cafile=str(tls_dir / "ca.crt"))
        with socket.create_connection((address, config.minio_api_port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="mlflow.standin.test") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        docker.docker("rm", "-f", name, check=False)


# -- node exporter (the host's metrics) --------------------------------------------------


def test_node_exporter_contract(docker, tmp_path):
    """The compose entry's command and mounts (the host's /proc, /sys and root; a textfile
    directory), an arbitrary `user:`, the health check's wget: the host's figures and the
    job result job-result.sh writes come out of /metrics."""
    import subprocess

    from mlflow_stack.services.node_exporter import PORT, compose, service
    from mlflow_stack.services.model import ComposeContext, Topology
    from tests.unit.helpers import make_config

    repo = Path(__file__).resolve().parents[2]
    textfiles = tmp_path / "metrics"
    subprocess.run(["bash", str(repo / "files" / "host" / "job-result.sh"), "--job", "backup", "--dir", str(textfiles)],
                   env={**os.environ, "SERVICE_RESULT": "exit-code"}, check=True)
    config = make_config(tls="self-signed", metrics_networks=["10.0.5.0/24"])
    entry = compose(service(Topology(tls=True, metrics=True)), ComposeContext(config, "unused", "unused"))
    mounts = [volume.replace(f"{config.stack_dir}/metrics", str(textfiles)) for volume in entry["volumes"]]
    name = f"standin-node-exporter-{uuid.uuid4().hex[:8]}"
    docker.docker("run", "-d", "--name", name, "--user", f"{UID}:{UID}",
                  *(option for volume in mounts for option in ("-v", volume)),
                  STANDIN_IMAGES["node-exporter"], *entry["command"])
    try:
        health = entry["healthcheck"]["test"][1:]
        _wait(lambda: _exec(docker, name, *health).returncode == 0, 30, "node exporter answering")
        assert _out(_exec(docker, name, "id", "-u")).strip() == str(UID)
        with urllib.request.urlopen(f"http://{_container_ip(docker, name)}:{PORT}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert 'mlflow_stack_job_last_run_success{job="backup"} 0' in metrics
        assert "node_filesystem_avail_bytes{" in metrics and "node_memory_MemAvailable_bytes " in metrics
        assert 'mountpoint="/"' in metrics  # the host's root, seen through --path.rootfs
    finally:
        docker.docker("rm", "-f", name, check=False)


# -- postgres exporter (the database's metrics) -------------------------------------------


def test_postgres_exporter_contract(docker, tmp_path):
    """The compose entry's environment (DATA_SOURCE_URI/_USER/_PASS, the database by its compose
    name), command and wget health check, an arbitrary `user:`: the PostgreSQL stand-in's figures
    come out of /metrics."""
    from mlflow_stack.services.model import ComposeContext, Topology
    from mlflow_stack.services.postgres_exporter import PORT, compose, service
    from tests.unit.helpers import make_config

    config = make_config(tls="self-signed", metrics_networks=["10.0.5.0/24"], postgres_user=PG_USER, postgres_db=PG_DB)
    entry = compose(service(Topology(tls=True, metrics=True)), ComposeContext(config, "unused", "unused"))
    environment = {**entry["environment"], "DATA_SOURCE_PASS": PG_PASSWORD}  # what compose interpolates
    data = _owned_dir(tmp_path, "pgdata")
    database, exporter = (f"standin-{role}-{uuid.uuid4().hex[:8]}" for role in ("pg", "pg-exporter"))
    docker.docker("run", "-d", "--name", database, "--user", f"{UID}:{UID}", "-e", f"POSTGRES_USER={PG_USER}",
                  "-e", f"POSTGRES_PASSWORD={PG_PASSWORD}", "-e", f"POSTGRES_DB={PG_DB}",
                  "-v", f"{data}:/var/lib/postgresql/data", STANDIN_IMAGES["postgres"])
    try:
        _wait(lambda: _exec(docker, database, "pg_isready", "-U", PG_USER, "-d", PG_DB).returncode == 0, 90,
              "pg_isready")
        docker.docker("run", "-d", "--name", exporter, "--user", f"{UID}:{UID}",
                      "--add-host", f"postgres:{_container_ip(docker, database)}",
                      *(option for key, value in environment.items() for option in ("-e", f"{key}={value}")),
                      STANDIN_IMAGES["postgres-exporter"], *entry["command"])
        health = entry["healthcheck"]["test"][1:]
        _wait(lambda: _exec(docker, exporter, *health).returncode == 0, 30, "postgres exporter answering")
        assert _out(_exec(docker, exporter, "id", "-u")).strip() == str(UID)

        def metrics() -> str:
            with urllib.request.urlopen(f"http://{_container_ip(docker, exporter)}:{PORT}/metrics", timeout=10) as r:
                return r.read().decode()

        def page_with(line: str) -> str | None:
            text = metrics()
            return text if f"\n{line}\n" in text else None

        page = _wait(lambda: page_with("pg_up 1"), 30, "pg_up 1")
        assert f'pg_database_size_bytes{{datname="{PG_DB}"}}' in page, page[-2000:]
        # A wrong password: the exporter still answers, and says the database is down.
        docker.docker("rm", "-f", exporter)
        docker.docker("run", "-d", "--name", exporter, "--user", f"{UID}:{UID}",
                      "--add-host", f"postgres:{_container_ip(docker, database)}",
                      *(option for key, value in {**environment, "DATA_SOURCE_PASS": "wrong"}.items()
                        for option in ("-e", f"{key}={value}")),
                      STANDIN_IMAGES["postgres-exporter"], *entry["command"])
        _wait(lambda: _exec(docker, exporter, *health).returncode == 0, 30, "postgres exporter answering")
        _wait(lambda: page_with("pg_up 0"), 30, "pg_up 0")
    finally:
        docker.docker("rm", "-f", exporter, database, check=False)
