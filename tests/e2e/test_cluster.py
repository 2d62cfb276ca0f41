"""A cluster and an independent server in one inventory, provisioned in one run: a data host
(PostgreSQL + MinIO, open to the cluster's members only), two tracking servers, a balancer
reached by a DNS name and speaking TLS with the lab's certificate (tls = 'files'), and a server
of its own beside them (plain HTTP). A client logs a model through the balancer and
another loads it through the second tracking server directly (whose MLflow fetches it from S3
through the balancer, trusting the lab's CA); with one tracking server stopped the balancer keeps
serving; a rerun changes nothing on any host."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from mlflow_stack.services import stack_is_healthy, stack_services
from tests.e2e.support import (E2E_ADMIN_PASSWORD, E2E_ADMIN_USER, InventoryDeployer, compose_status, stack_warnings,
                               control_machine_hosts_entry, run_client, status_hosts)
from tests.harness.fixtures import _FACTORY_RANGE, _start_in_range

BALANCER_NAME = "mlflow.cluster.test"
# Given, as a cluster needs them, through the environment (never in the inventory file).
SECRETS = {"MLFLOW_STACK_POSTGRES_PASSWORD": "pg-" + uuid.uuid4().hex,
           "MLFLOW_STACK_MINIO_ROOT_PASSWORD": "minio-" + uuid.uuid4().hex,
           "MLFLOW_STACK_MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex}
# The cluster's hosts only (the inventory also holds a server of its own).
CLUSTER_ONLY = tuple(arg for group in ("mlflow_data_hosts", "mlflow_tracking_servers", "mlflow_balancers")
                     for arg in ("--limit", group))
ROLES = {"data": stack_services(role="data", tls=True),
         "tracking": stack_services(True, True, tls=True, role="tracking"),
         "balancer": stack_services(role="balancer", tls=True), "standalone": stack_services()}
BALANCER_URI = f"https://{BALANCER_NAME}:5000"
CLUSTER_GROUPS = ("mlflow_data_hosts", "mlflow_tracking_servers", "mlflow_balancers")
# The lab's CA certificate, which clients trust (set by the fixture).
LAB = {}


def lab_certificate(directory: Path) -> dict:
    """The lab's own PKI: a CA and a certificate for the balancer's name, made here (by the
    deploy's own script, run on this machine), given to the cluster as tls = 'files'."""
    ca_dir, tls_dir = directory / "ca", directory / "tls"
    ca_dir.mkdir(mode=0o700), tls_dir.mkdir()
    subprocess.run(["sh", "files/host/tls-certs.sh", "--make", "ca", "--ca-dir", str(ca_dir), "--tls-dir", str(tls_dir),
                    "--uid", "0", "--gid", "0", "--ca-days", "400", "--server-days", "200", "--san",
                    f"DNS:{BALANCER_NAME}"], check=True, capture_output=True, cwd=Path(__file__).resolve().parents[2])
    return {"tls": "files", "tls_cert_file": str(tls_dir / "server.crt"), "tls_key_file": str(tls_dir / "server.key"),
            "tls_ca_file": str(ca_dir / "ca.crt")}


def opened(request: urllib.request.Request):
    """urlopen, trusting the lab's CA for https (the balancer)."""
    https = request.full_url.startswith("https:")
    return urllib.request.urlopen(request, timeout=30,
                                  context=ssl.create_default_context(cafile=LAB["ca"]) if https else None)


def trusting_the_lab() -> dict:
    """A client's environment for the balancer: REQUESTS_CA_BUNDLE (the presigned downloads too)."""
    return {"REQUESTS_CA_BUNDLE": LAB["ca"]}


@pytest.fixture(scope="module")
def cluster(settings, preloaded_images, record, tmp_path_factory):
    targets = {}
    try:
        for role in ("data", "tracking1", "tracking2", "balancer", "standalone"):
            targets[role] = _start_in_range(*_FACTORY_RANGE, images=preloaded_images)
        groups = {
            "mlflow_data_hosts": [(targets["data"].address, targets["data"])],
            "mlflow_tracking_servers": [(targets["tracking1"].address, targets["tracking1"]),
                                        (targets["tracking2"].address, targets["tracking2"])],
            "mlflow_balancers": [(BALANCER_NAME, targets["balancer"])],
            "mlflow_servers": [(targets["standalone"].address, targets["standalone"])],
        }
        tls = lab_certificate(tmp_path_factory.mktemp("lab-pki"))
        LAB["ca"] = tls["tls_ca_file"]
        deployer = InventoryDeployer(groups, settings, workdir=tmp_path_factory.mktemp("cluster"),
                                     group_settings={group: tls for group in CLUSTER_GROUPS})
        with control_machine_hosts_entry(BALANCER_NAME, targets["balancer"].address):
            first = deployer.run(env=SECRETS)
            record("cluster_first_run_seconds", round(first.seconds, 1))
            yield {"targets": targets, "deployer": deployer, "first": first,
                   "workdir": tmp_path_factory.mktemp("clients")}
    finally:
        for target in targets.values():
            target.stop()


def role_of(name: str) -> str:
    return {"data": "data", "tracking1": "tracking", "tracking2": "tracking", "balancer": "balancer"}.get(name, name)


def test_one_run_brings_up_every_member_and_the_independent_servers(cluster):
    cluster["first"].check()
    for name, target in cluster["targets"].items():
        status = compose_status(target)
        assert stack_is_healthy(status, ROLES[role_of(name)]), (name, status)
        # Only its own part: no MLflow on the data host, no database on a tracking server.
        assert set(status) == {service.name for service in ROLES[role_of(name)] if not service.on_demand}, (name, status)
    # The first tracking server started alone: its MLflow made the schema, and the second one's
    # migrate-db (started after it) found it current, instead of two servers racing to create it.
    logs = {name: cluster["targets"][name].ssh("docker compose --project-name mlflow logs --no-log-prefix migrate-db")
            .stdout for name in ("tracking1", "tracking2")}
    assert "no MLflow schema yet" in logs["tracking1"], logs
    assert "is the one MLflow" in logs["tracking2"], logs


def reaches(address: str, port: int, timeout: float = 3) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def test_the_data_host_is_open_to_the_cluster_only(cluster):
    targets = cluster["targets"]
    data = targets["data"].address
    for port in (5432, 9000):
        # This machine and the independent server are not members.
        assert not reaches(data, port), f"{data}:{port} is reachable from the control machine"
        probe = f"timeout 5 bash -c 'exec 3<>/dev/tcp/{data}/{port}'"
        assert targets["standalone"].ssh(probe, check=False).returncode != 0, port
        assert targets["tracking2"].ssh(probe, check=False).returncode == 0, port
        assert targets["balancer"].ssh(probe, check=False).returncode == 0, port


def test_the_balancer_speaks_tls_with_the_lab_s_certificate_on_both_ports(cluster):
    """Both ports: the lab's certificate for the balancer's name (verified against the lab's CA);
    plain HTTP to the tracking port is refused by nginx. The tracking servers run no proxy of
    their own and trust the lab's CA for their S3 calls through the balancer."""
    context = ssl.create_default_context(cafile=LAB["ca"])
    for port in (5000, 9000):
        with socket.create_connection((BALANCER_NAME, port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname=BALANCER_NAME) as tls:
            names = [value for kind, value in tls.getpeercert()["subjectAltName"] if kind == "DNS"]
            assert names == [BALANCER_NAME], (port, names)
    request = urllib.request.Request(f"http://{BALANCER_NAME}:5000/health")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400 and b"plain HTTP request was sent to HTTPS port" in refused.value.read()
    for name in ("tracking1", "tracking2"):
        target = cluster["targets"][name]
        bundle = target.ssh("docker compose --project-name mlflow exec -T mlflow printenv AWS_CA_BUNDLE").stdout.strip()
        assert bundle == "/etc/mlflow-stack/ca.crt", (name, bundle)
        assert target.ssh("cat /srv/mlflow/tls/ca.crt").stdout == Path(LAB["ca"]).read_text(), name
        assert target.ssh("test -e /srv/mlflow/tls/server.key", check=False).returncode != 0, name
    assert cluster["targets"]["data"].ssh("test -e /srv/mlflow/tls", check=False).returncode != 0


def test_a_model_logged_through_the_balancer_loads_through_a_tracking_server_directly(cluster):
    tracking2 = cluster["targets"]["tracking2"].address
    run_id = run_client("client_log_model.py", BALANCER_URI, cluster["workdir"] / "a", env=trusting_the_lab())
    # Directly too, the artifacts come by presigned URLs to the balancer's S3 port: the lab's CA.
    prediction = run_client("client_load_model.py", f"http://{tracking2}:5000", cluster["workdir"] / "b", run_id,
                            env=trusting_the_lab())
    assert float(prediction) == pytest.approx(31.0)
    cluster["run_id"] = run_id
    # The independent server is its own: the cluster's run is not in it (it passed the deploy's
    # smoke test through its own address in the same run).
    standalone = cluster["targets"]["standalone"].address
    assert call(f"http://{standalone}:5000", "runs/get", {"run_id": run_id}, allow_error=True) == 404


def call(uri: str, path: str, payload: dict, allow_error: bool = False):
    token = base64.b64encode(f"{E2E_ADMIN_USER}:{E2E_ADMIN_PASSWORD}".encode()).decode()
    method = "GET" if path == "runs/get" else "POST"
    url = f"{uri}/api/2.0/mlflow/{path}"
    data = None
    if method == "GET":
        url += "?" + "&".join(f"{k}={v}" for k, v in payload.items())
    else:
        data = json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Basic {token}", "Content-Type": "application/json"})
    try:
        with opened(request) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        if allow_error:
            return error.code
        raise


def metric_throughput(uri: str, run_id: str, seconds: float = 15, threads: int = 4) -> tuple[float, list[str]]:
    """log-metric calls per second through `uri` from `threads` clients; and the failures' errors."""
    done, failed = [0], []
    deadline = time.monotonic() + seconds
    lock = threading.Lock()

    def client():
        step = 0
        while time.monotonic() < deadline:
            try:
                call(uri, "runs/log-metric", {"run_id": run_id, "key": "throughput", "value": 1.0,
                                              "timestamp": int(time.time() * 1000), "step": step})
                with lock:
                    done[0] += 1
            except Exception as error:
                with lock:
                    failed.append(repr(error))
            step += 1

    workers = [threading.Thread(target=client) for _ in range(threads)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return done[0] / (time.monotonic() - started), failed


def status_as(uri: str, user: str, password: str, method: str = "GET", path: str = "experiments/search?max_results=1",
              payload: dict | None = None) -> int:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(f"{uri}/api/2.0/mlflow/{path}", method=method,
                                     data=json.dumps(payload).encode() if payload is not None else None,
                                     headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"})
    try:
        with opened(request) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_credential_changed_on_one_tracking_server_is_refused_by_the_other_at_once(cluster):
    """Each tracking server caches verified credentials (mlflow_auth_cache_seconds); none
    outlives a change made through another server."""
    first, second = (f"http://{cluster['targets'][name].address}:5000" for name in ("tracking1", "tracking2"))
    password = "cluster-user-0123456789"
    assert status_as(first, E2E_ADMIN_USER, E2E_ADMIN_PASSWORD, "POST", "users/create",
                     {"username": "visitor", "password": password}) == 200
    for uri in (first, second):
        assert {status_as(uri, "visitor", password) for _ in range(8)} == {200}  # cached on both
    assert status_as(first, E2E_ADMIN_USER, E2E_ADMIN_PASSWORD, "PATCH", "users/update-password",
                     {"username": "visitor", "password": password + "-new"}) == 200
    assert {status_as(second, "visitor", password) for _ in range(8)} == {401}
    assert status_as(second, "visitor", password + "-new") == 200
    assert status_as(second, E2E_ADMIN_USER, E2E_ADMIN_PASSWORD, "DELETE", "users/delete",
                     {"username": "visitor"}) == 200
    assert {status_as(first, "visitor", password + "-new") for _ in range(8)} == {401}


def test_with_a_tracking_server_stopped_the_balancer_keeps_serving(cluster, record):
    balancer = BALANCER_URI
    experiment = call(balancer, "experiments/create", {"name": f"throughput-{uuid.uuid4().hex[:8]}"})["experiment_id"]
    run_id = call(balancer, "runs/create", {"experiment_id": experiment})["run"]["info"]["run_id"]
    both, failed = metric_throughput(balancer, run_id)
    assert failed == []
    record("cluster_balancer_log_metric_per_second_two_servers", round(both, 1))

    tracking1 = cluster["targets"]["tracking1"]
    tracking1.ssh("docker compose --project-name mlflow stop mlflow")
    try:
        one, failed = metric_throughput(balancer, run_id)
        assert failed == [], f"calls failed through the balancer with one tracking server stopped: {failed}"
        record("cluster_balancer_log_metric_per_second_one_server", round(one, 1))
        # A whole client session (runs, metrics, a model upload) through the balancer.
        run_client("client_log_model.py", balancer, cluster["workdir"] / "c", env=trusting_the_lab())
    finally:
        tracking1.ssh("docker compose --project-name mlflow start mlflow")
        for _ in range(60):
            if stack_is_healthy(compose_status(tracking1), ROLES["tracking"]):
                break
            time.sleep(3)
    assert stack_is_healthy(compose_status(tracking1), ROLES["tracking"])


def test_the_data_host_backs_the_cluster_up(cluster):
    """The backup timer's service on the data host: the database and the bucket of the whole
    cluster, the model logged through the balancer included."""
    data = cluster["targets"]["data"]
    data.ssh("systemctl start mlflow-backup.service")
    listing = data.ssh("cd /srv/mlflow/backups && d=$(ls -1d mlflow-backup-* | tail -n 1) && ls $d && "
                       "tar -tf $d/artifacts.tar").stdout
    assert "database.dump" in listing and "artifacts.tar" in listing, listing
    # The model logged through the balancer (MLflow 3 keeps it under the logged model's id).
    assert any(line.endswith("/MLmodel") for line in listing.splitlines()), listing[-2000:]
    for name in ("tracking1", "balancer"):  # no timer where there is nothing to back up
        assert cluster["targets"][name].ssh("systemctl cat mlflow-backup.timer", check=False).returncode != 0


def test_restore_brings_the_whole_cluster_back_to_its_backup(cluster, record):
    """restore.py on the cluster's groups: the tracking servers stop, the data host restores
    the backup the timer made (above), the tracking servers start one after the other; a run
    logged after the backup is gone, the model logged before it loads through the balancer."""
    data, balancer_uri = cluster["targets"]["data"], BALANCER_URI
    name = data.ssh("cd /srv/mlflow/backups && ls -1d mlflow-backup-* | tail -n 1").stdout.strip()
    later = call(balancer_uri, "runs/create", {"experiment_id": "0"})["run"]["info"]["run_id"]
    restore = {"restore_from": f"host:/srv/mlflow/backups/{name}", "restore_overwrite": True}

    # Without every tracking server in the run nothing happens.
    partial = cluster["deployer"].run(env=SECRETS, deploy="restore.py", overrides=restore,
                                      extra_args=("--limit", "mlflow_data_hosts"))
    assert partial.returncode != 0 and "restores a cluster as a whole" in partial.stdout + partial.stderr
    assert call(balancer_uri, "runs/get", {"run_id": later})["run"]["info"]["run_id"] == later

    restored = cluster["deployer"].run(env=SECRETS, deploy="restore.py", overrides=restore, extra_args=CLUSTER_ONLY)
    restored.check()
    record("cluster_restore_seconds", round(restored.seconds, 1))
    order = restored.changed
    assert order.index("Restore a backup | Stop MLflow while the data host restores") \
        < order.index(f"Restore a backup | Restore {name} (MLflow stopped meanwhile)") \
        < order.index("Restore a backup | Start MLflow on the first tracking server") \
        < order.index("Restore a backup | Start MLflow on the other tracking servers"), order
    assert call(balancer_uri, "runs/get", {"run_id": later}, allow_error=True) == 404
    prediction = run_client("client_load_model.py", balancer_uri, cluster["workdir"] / "restored", cluster["run_id"],
                            env=trusting_the_lab())
    assert float(prediction) == pytest.approx(31.0)
    for role in ("tracking1", "tracking2"):
        target = cluster["targets"][role]
        assert stack_is_healthy(compose_status(target), ROLES["tracking"]), role


def test_status_of_every_member_of_the_cluster(cluster):
    """status.py on the cluster: each role its own services; the data host reads the database
    through its container, the tracking servers through MLflow's; no warning, no secret."""
    result = cluster["deployer"].run(env=SECRETS, deploy="status.py", overrides={"status_format": "json"},
                                     extra_args=CLUSTER_ONLY).check()
    assert result.changed == [] and result.unchanged == [], "status.py must plan no operation"
    hosts = status_hosts(result)
    assert sorted(document["role"] for document in hosts.values()) == ["balancer", "data", "tracking", "tracking"]
    for name, document in hosts.items():
        assert stack_warnings(document) == [], (name, document["warnings"])
        assert set(document["services"]) == {s.name for s in ROLES[document["role"]] if not s.on_demand}, name
        if document["role"] != "balancer":
            assert document["database"]["revision"] == document["schema_revision_expected"], (name, document)
            assert int(document["database"]["runs"]) >= 1, (name, document["database"])
    for secret in SECRETS.values():
        assert secret not in result.stdout + result.stderr


def test_a_rerun_changes_nothing_on_any_host(cluster, record):
    rerun = cluster["deployer"].run(env=SECRETS).check()
    assert rerun.changed_on == {}, rerun.changed_on
    record("cluster_rerun_seconds_five_hosts", round(rerun.seconds, 1))
    # The same rerun for one host alone: pyinfra runs the hosts in parallel, so five cost
    # about what one does.
    single = cluster["deployer"].run(env=SECRETS, extra_args=("--limit", cluster["targets"]["standalone"].address))
    single.check()
    assert single.changed_on == {}, single.changed_on
    record("cluster_rerun_seconds_one_host", round(single.seconds, 1))


def test_a_cluster_without_its_passwords_is_refused_before_any_change(cluster):
    result = cluster["deployer"].run(env={})
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "postgres_password: required in a cluster" in output, output[-3000:]
    assert not result.changed_on
