"""End-to-end: MLflow's basic authentication and TLS (both on by default, TLS self-signed) on a
fresh container target that clients know by a DNS name only. Generated admin password, two
listed users (READ and EDIT) with generated passwords, clients trusting the fetched CA (the
presigned artifact traffic through the proxy too), no plain HTTP on the published ports,
rotation of the admin password, reruns at zero changes, no password in argv or in pyinfra's
output.

The tests share one target and run in order.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mlflow_stack.services import stack_is_healthy, stack_services

from .support import (Deployer, assert_stack_healthy, compose_status, control_machine_hosts_entry, read_secrets,
                      run_client, wait_until_healthy)

pytestmark = pytest.mark.e2e

USERS = [{"name": "reader", "permission": "READ"}, {"name": "writer", "permission": "EDIT"}]
SYNC_OP = "Keep MLflow's users | Make MLflow's user store match the admin and mlflow_auth_users"


def status(url: str, credentials: tuple[str, str] | None = None, payload: dict | None = None,
           ca_file: str | None = None) -> int:
    """HTTP status of a call (GET, or POST with a JSON payload), trusting `ca_file` for https."""
    headers = {"Content-Type": "application/json"}
    if credentials:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30, context=ssl.create_default_context(cafile=ca_file)) \
                as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def fetch(url: str, credentials: tuple[str, str] | None, ca_file: str, headers: dict | None = None,
          data: bytes | None = None) -> bytes:
    """GET (PUT with `data`) over https trusting `ca_file`; the body of the response."""
    headers = dict(headers or {})
    if credentials:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
    request = urllib.request.Request(url, headers=headers, data=data, method="PUT" if data is not None else "GET")
    with urllib.request.urlopen(request, timeout=30, context=ssl.create_default_context(cafile=ca_file)) as response:
        return response.read()


def read_users(target) -> dict[str, str]:
    text = target.ssh("cat /srv/mlflow/users.env").stdout
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def client_env(user: str, password: str, ca_file: str) -> dict:
    # REQUESTS_CA_BUNDLE: MLflow's presigned downloads use plain requests, which
    # MLFLOW_TRACKING_SERVER_CERT_PATH does not reach.
    return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password, "REQUESTS_CA_BUNDLE": ca_file}


@pytest.fixture(scope="module")
def server(container_target, settings, tmp_path_factory):
    """The target known by a name only the control machine resolves; auth and TLS settings
    left at their defaults (the suite's shared settings turn TLS off) apart from the users, a
    default permission of nothing, so whatever the READ user may do comes from its own grant,
    and where the CA certificate is fetched to."""
    target = container_target
    name = f"mlflow-{target.name}.auth.test"
    defaults = {key: value for key, value in settings.items() if key not in ("mlflow_auth_admin_password", "tls")}
    ca_dir = tmp_path_factory.mktemp("ca")
    deployer = Deployer(target, {**defaults, "mlflow_auth_users": USERS, "mlflow_auth_default_permission": "NO_PERMISSIONS",
                                 "tls_ca_local_dir": str(ca_dir)},
                        workdir=tmp_path_factory.mktemp("deploy"), name=name)
    with control_machine_hosts_entry(name, target.address):
        first = deployer.run(extra_args=("-vv", "--diff")).check()
        yield {"target": target, "deployer": deployer, "first": first, "uri": f"https://{name}:5000", "name": name,
               "ca": str(ca_dir / name / "ca.crt"), "workdir": tmp_path_factory.mktemp("clients")}


def test_first_run_generates_passwords_creates_users_and_smoke_tests_as_admin(server):
    target, first = server["target"], server["first"]
    assert_stack_healthy(target, tls="self-signed")
    assert SYNC_OP in first.changed
    secrets, users = read_secrets(target), read_users(target)
    assert len(secrets["MLFLOW_AUTH_ADMIN_PASSWORD"]) == 64 and len(secrets["MLFLOW_FLASK_SERVER_SECRET_KEY"]) == 64
    assert set(users) == {"reader", "writer"} and all(len(p) == 64 for p in users.values())
    assert "smoke test passed against " + server["uri"] + " as admin" in first.stdout + first.stderr
    output = first.stdout + first.stderr
    assert "MLFLOW_TRACKING_USERNAME=<user> MLFLOW_TRACKING_PASSWORD=<password>" in output
    assert "MLFLOW_AUTH_ADMIN_PASSWORD in /srv/mlflow/.env" in output and "/srv/mlflow/users.env" in output
    assert "WARNING: plain HTTP" not in output
    assert "REQUESTS_CA_BUNDLE" in output and server["ca"] in output
    keys = [target.ssh(f"cat {path}").stdout.strip() for path in ("/srv/mlflow/ca/ca.key", "/srv/mlflow/tls/server.key")]
    assert all("PRIVATE KEY" in key for key in keys) and "PRIVATE KEY" not in output
    for value in [*users.values(), secrets["MLFLOW_AUTH_ADMIN_PASSWORD"], secrets["MLFLOW_FLASK_SERVER_SECRET_KEY"],
                  *(line for key in keys for line in key.splitlines() if "PRIVATE KEY" not in line)]:
        assert value not in output
    for path, mode in (("/srv/mlflow/users.env", "root 600"), ("/srv/mlflow/.env", "root 600"),
                       ("/srv/mlflow/auth.ini", "root 644"), ("/srv/mlflow/ca", "root 700"),
                       ("/srv/mlflow/ca/ca.key", "root 600"), ("/srv/mlflow/tls/server.key", "mlflow 600")):
        assert target.ssh(f"stat -c '%U %a' {path}").stdout.strip() == mode, path
    # The fetched CA is the host's; the CA key is mounted into no container.
    assert open(server["ca"]).read().strip() == target.ssh("cat /srv/mlflow/ca/ca.crt").stdout.strip()
    assert "/srv/mlflow/ca" not in target.ssh("cat /srv/mlflow/compose.yaml").stdout
    assert secrets["MLFLOW_AUTH_ADMIN_PASSWORD"] not in target.ssh("cat /srv/mlflow/auth.ini").stdout


def test_the_tracking_api_has_its_gunicorn_server_and_both_servers_check_the_host(server):
    """Behind the proxy /api/2.0/mlflow/ goes to mlflow-api (gunicorn), the rest to mlflow
    (uvicorn); a Host header that is not one of the server's names is refused by both (the
    DNS-rebinding check MLflow takes from its environment under gunicorn)."""
    target, uri, ca = server["target"], server["uri"], server["ca"]
    api_processes, ui_processes = (target.ssh(f"cd /srv/mlflow && docker compose top {name}").stdout
                                   for name in ("mlflow-api", "mlflow"))
    assert "gunicorn" in api_processes and "uvicorn" not in api_processes, api_processes
    assert "uvicorn" in ui_processes and "gunicorn" not in ui_processes, ui_processes
    admin = ("admin", read_secrets(target)["MLFLOW_AUTH_ADMIN_PASSWORD"])
    token = base64.b64encode(":".join(admin).encode()).decode()
    for path in ("/api/2.0/mlflow/experiments/search?max_results=1", "/ajax-api/2.0/mlflow/experiments/search?max_results=1"):
        assert status(uri + path, admin, ca_file=ca) == 200, path
        forged = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", ca,
                                 "-H", f"Authorization: Basic {token}", "-H", "Host: rebound.attacker.example",
                                 uri + path], capture_output=True, text=True, timeout=60).stdout
        assert forged == "403", (path, forged)


def test_requests_without_or_with_wrong_credentials_are_refused(server):
    target, uri = server["target"], server["uri"]
    secrets = read_secrets(target)
    search = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
    ca = server["ca"]
    assert status(search, ca_file=ca) == 401
    assert status(search, ("admin", "wrong-password-123"), ca_file=ca) == 401
    assert status(search, ("writer", secrets["MLFLOW_AUTH_ADMIN_PASSWORD"]), ca_file=ca) == 401
    assert status(search, ("admin", secrets["MLFLOW_AUTH_ADMIN_PASSWORD"]), ca_file=ca) == 200
    assert status(f"{uri}/health", ca_file=ca) == 200  # the container's health check needs no password


def test_published_ports_speak_only_tls_with_a_certificate_from_the_fetched_ca(server):
    target, name = server["target"], server["name"]
    secrets = read_secrets(target)
    credentials = ("admin", secrets["MLFLOW_AUTH_ADMIN_PASSWORD"])
    for port in (5000, 9000):
        # Plain HTTP reaches nginx's TLS port: 400, nothing of MLflow's API or MinIO's.
        connection = http.client.HTTPConnection(name, port, timeout=30)
        connection.request("GET", "/api/2.0/mlflow/experiments/search?max_results=1",
                           headers={"Authorization": "Basic " + base64.b64encode(":".join(credentials).encode()).decode()})
        response = connection.getresponse()
        body = response.read()
        assert response.status == 400 and b"plain HTTP request was sent to HTTPS port" in body, (port, body[:200])
        # Without the CA a client refuses the certificate; with it, the name is verified too.
        with pytest.raises(ssl.SSLCertVerificationError):
            ssl.create_default_context().wrap_socket(socket.create_connection((name, port), timeout=30),
                                                     server_hostname=name)
    # MLflow and MinIO publish nothing; only the proxy does.
    published = target.ssh("docker ps --format '{{.Names}} {{.Ports}}'").stdout
    lines = {line.split()[0]: line for line in published.splitlines()}
    assert "0.0.0.0:5000->5000" in lines["mlflow-proxy-1"] and "0.0.0.0:9000->9000" in lines["mlflow-proxy-1"]
    assert "->" not in lines["mlflow-mlflow-1"] and "0.0.0.0" not in lines["mlflow-minio-1"], published


def test_users_log_and_load_a_model_and_a_read_user_cannot_write(server):
    target, uri, workdir = server["target"], server["uri"], server["workdir"]
    users = read_users(target)
    with control_machine_hosts_entry(uri.split("/")[2].split(":")[0], target.address):
        run_id = run_client("client_log_model.py", uri, workdir / "log",
                            env=client_env("writer", users["writer"], server["ca"]))
        # Reading the writer's run needs the reader's READ grant (the default grants nothing).
        prediction = run_client("client_load_model.py", uri, workdir / "load", run_id,
                                env=client_env("reader", users["reader"], server["ca"]))
        assert abs(float(prediction) - 31.0) < 1e-6
        api = f"{uri}/api/2.0/mlflow"
        run = {"run_id": run_id, "key": "written-by-reader", "value": "1"}
        assert status(f"{api}/runs/log-parameter", ("reader", users["reader"]), run, ca_file=server["ca"]) == 403
        assert status(f"{api}/runs/log-parameter", ("writer", users["writer"]), {**run, "key": "by-writer"},
                      ca_file=server["ca"]) == 200
        # Downloads go by presigned URL: to the S3 port of the proxy, by the public name, over TLS.
        reader = ("reader", users["reader"])
        run_info = json.loads(fetch(f"{api}/runs/get?run_id={run_id}", reader, server["ca"]))["run"]["info"]
        artifacts = run_info["artifact_uri"].split(":", 1)[1].lstrip("/")
        fetch(f"{uri}/api/2.0/mlflow-artifacts/artifacts/{artifacts}/note.txt", ("writer", users["writer"]),
              server["ca"], data=b"through the proxy")
        presigned = json.loads(fetch(f"{uri}/api/2.0/mlflow-artifacts/presigned/{artifacts}/note.txt", reader,
                                     server["ca"]))
        assert presigned["url"].startswith(f"https://{server['name']}:9000/mlflow/artifacts/"), presigned
        assert fetch(presigned["url"], None, server["ca"], presigned.get("headers", {})) == b"through the proxy"
    server["run_id"] = run_id


def test_rerun_changes_nothing(server):
    with control_machine_hosts_entry(server["uri"].split("/")[2].split(":")[0], server["target"].address):
        again = server["deployer"].run().check()
    assert again.changed == [], again.changed


def started_services(target) -> dict[str, str]:
    """When each running container of the stack started, by its name."""
    out = target.ssh("docker inspect -f '{{.Name}} {{.State.StartedAt}}' $(docker ps -q)").stdout
    return dict(line.lstrip("/").split() for line in out.splitlines() if line.startswith("/mlflow-"))


def test_the_default_stack_comes_back_by_itself_after_a_reboot(server, record):
    """A lab server's power cut or kernel update: systemd starts Docker and the timers, Docker
    every service (their restart policies), TLS and the users as they were; no rerun is needed,
    and a rerun then changes nothing. A container target's reboot boots its systemd as a
    machine's does; the VM test proves the deploy on a real kernel."""
    target, uri = server["target"], server["uri"]
    before = started_services(target)
    started = time.monotonic()
    target.reboot()
    wait_until_healthy(target, timeout=300, tls="self-signed")
    record("container_reboot_to_healthy_seconds", round(time.monotonic() - started, 1))
    after = started_services(target)
    assert set(after) == set(before) and all(after[name] != before[name] for name in before), (before, after)
    assert "mlflow-backup.timer" in target.ssh("systemctl list-timers --no-legend mlflow-backup.timer").stdout
    admin = ("admin", read_secrets(target)["MLFLOW_AUTH_ADMIN_PASSWORD"])
    logged = f"{uri}/api/2.0/mlflow/runs/get?run_id={server['run_id']}"
    with control_machine_hosts_entry(server["name"], target.address):
        assert status(logged, ca_file=server["ca"]) == 401
        assert status(logged, admin, ca_file=server["ca"]) == 200
        again = server["deployer"].run().check()
    assert again.changed == [], again.changed


def test_admin_password_rotation_reaches_mlflow_s_user_store(server):
    target, uri = server["target"], server["uri"]
    old = read_secrets(target)["MLFLOW_AUTH_ADMIN_PASSWORD"]
    search = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
    with control_machine_hosts_entry(uri.split("/")[2].split(":")[0], target.address):
        rotated = server["deployer"].run(overrides={"rotate_secrets": ["mlflow_auth_admin_password"]},
                                         extra_args=("-vv", "--diff")).check()
        new = read_secrets(target)["MLFLOW_AUTH_ADMIN_PASSWORD"]
        assert new != old
        assert SYNC_OP in rotated.changed
        output = rotated.stdout + rotated.stderr
        assert old not in output and new not in output
        assert "smoke test passed against " + uri + " as admin" in output
        assert status(search, ("admin", old), ca_file=server["ca"]) == 401
        assert status(search, ("admin", new), ca_file=server["ca"]) == 200
        # The model logged before still loads, as the admin now.
        prediction = run_client("client_load_model.py", uri, server["workdir"] / "after", server["run_id"],
                                env=client_env("admin", new, server["ca"]))
        assert abs(float(prediction) - 31.0) < 1e-6
        again = server["deployer"].run().check()
    assert again.changed == [], again.changed


def call(method: str, url: str, credentials: tuple[str, str], ca_file: str, payload: dict | None = None) -> int:
    """HTTP status of one call with a JSON payload (for PATCH and DELETE too)."""
    headers = {"Content-Type": "application/json",
               "Authorization": "Basic " + base64.b64encode(":".join(credentials).encode()).decode()}
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30, context=ssl.create_default_context(cafile=ca_file)) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def statuses(url: str, credentials: tuple[str, str], ca_file: str, calls: int = 24) -> set[int]:
    """Each call on a new connection, so the proxy spreads them over every MLflow worker and each
    worker's credential cache is asked (and, with a right password, filled)."""
    return {status(url, credentials, ca_file=ca_file) for _ in range(calls)}


def test_no_cached_credential_outlives_a_change(server):
    """MLflow runs several workers, each with its own credential cache (mlflow_auth_cache_seconds).
    Whoever changes a user — the deploy's sync (another process) or the API (one worker) — every
    worker refuses the old credential from the very next call."""
    target, uri, ca = server["target"], server["uri"], server["ca"]
    assert "--workers=4" in target.ssh("cat /srv/mlflow/compose.yaml").stdout
    admin = ("admin", read_secrets(target)["MLFLOW_AUTH_ADMIN_PASSWORD"])
    api = f"{uri}/api/2.0/mlflow/users"
    search = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
    writer_old = ("writer", read_users(target)["writer"])
    assert statuses(search, writer_old, ca) == {200}  # cached now, in every worker
    changed = [*USERS[:1], {**USERS[1], "password": "writer-changed-0123456789"}]
    with control_machine_hosts_entry(server["name"], target.address):
        deployed = server["deployer"].run(overrides={"mlflow_auth_users": changed}).check()
        assert SYNC_OP in deployed.changed
        assert "Build the MLflow image and start the stack | Start the stack" not in deployed.changed  # no restart needed
        assert statuses(search, writer_old, ca) == {401}
        assert statuses(search, ("writer", "writer-changed-0123456789"), ca) == {200}

        # Made admin, then not, through the API (one worker handles each change).
        reader = ("reader", read_users(target)["reader"])
        other_user = f"{api}/get?username=writer"
        assert call("PATCH", f"{api}/update-admin", admin, ca, {"username": "reader", "is_admin": True}) == 200
        assert statuses(other_user, reader, ca) == {200}
        assert call("PATCH", f"{api}/update-admin", admin, ca, {"username": "reader", "is_admin": False}) == 200
        assert statuses(other_user, reader, ca) == {403}

        # A user deleted through the API.
        passing = ("passing", "passing-user-0123456789")
        assert call("POST", f"{api}/create", admin, ca, {"username": "passing", "password": passing[1]}) == 200
        assert statuses(search, passing, ca) == {200}
        assert call("DELETE", f"{api}/delete", admin, ca, {"username": "passing"}) == 200
        assert statuses(search, passing, ca) == {401}
        # Wrong passwords are never remembered, whatever came before.
        assert statuses(search, ("writer", "writer-changed-0123456780"), ca) == {401}

        again = server["deployer"].run(overrides={"mlflow_auth_users": changed}).check()
    assert again.changed == [], again.changed


@contextlib.contextmanager
def ssh_tunnel(target, local_port: int, remote: str):
    """Forward 127.0.0.1:local_port on this machine to `remote` (host:port) as seen from the target."""
    tunnel = subprocess.Popen([*target.ssh_command()[:-1], "-N", "-L", f"127.0.0.1:{local_port}:{remote}",
                               target.ssh_command()[-1]], stdin=subprocess.DEVNULL)
    try:
        for _ in range(50):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", local_port), timeout=1):
                break
            time.sleep(0.2)
        yield f"http://localhost:{local_port}"
    finally:
        tunnel.terminate()
        tunnel.wait(timeout=10)


def test_tls_proxy_against_plain_mlflow_through_an_ssh_tunnel(server, record):
    """log_metric latency and a 200 MB artifact up and down, as a client sees them: through the
    TLS proxy (upload through MLflow, download presigned to the proxy's S3 port), then to
    MLflow's own port, unpublished, through an SSH tunnel (plain HTTP inside it; downloads
    through MLflow too). Then 200 MB by presigned multipart upload through the proxy (the
    client's threshold lowered from 500 MiB: the path a big upload takes)."""
    target, uri, workdir = server["target"], server["uri"], server["workdir"]
    admin = client_env("admin", read_secrets(target)["MLFLOW_AUTH_ADMIN_PASSWORD"], server["ca"])
    with_tls = json.loads(run_client("client_tls_bench.py", uri, workdir / "bench-tls", "200", env=admin))
    record("tls_proxy_log_metric_ms_and_200MB_MBps", with_tls)
    # Authentication on, through the proxy: ~10 ms here; a password hash per call costs ~200-280 ms.
    assert with_tls["log_metric_ms_median"] < 50, with_tls
    mlflow_ip = target.ssh("docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "
                           "mlflow-mlflow-1").stdout.strip()
    # MLflow accepts the Host header localhost:5000 (--allowed-hosts), so the tunnel listens on 5000 here.
    with ssh_tunnel(target, 5000, f"{mlflow_ip}:5000") as direct_uri:
        direct = json.loads(run_client("client_tls_bench.py", direct_uri, workdir / "bench-direct", "200",
                                       env={**admin, "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false"}))
    record("ssh_tunnel_to_mlflow_log_metric_ms_and_200MB_MBps", direct)
    multipart = json.loads(run_client("client_tls_bench.py", uri, workdir / "bench-multipart", "200",
                                      env={**admin, "MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE": str(100 * 1024 * 1024)}))
    record("tls_proxy_presigned_multipart_200MB_MBps", multipart)


def test_another_public_name_gets_a_new_certificate_from_the_same_ca(server):
    target, name, ca = server["target"], server["name"], server["ca"]
    second = f"alt-{name}"
    ca_before = target.ssh("cat /srv/mlflow/ca/ca.crt").stdout
    with control_machine_hosts_entry(second, target.address):
        renamed = server["deployer"].run(overrides={"mlflow_public_names": [second]}).check()
        assert "Ensure the TLS certificates | Make a new server certificate (missing, close to its end, or for other " \
               "names)" in renamed.changed, renamed.changed
        assert "Load new TLS certificates | Restart proxy to load the new certificate" in renamed.changed
        assert status(f"https://{second}:5000/health", ca_file=ca) == 200
        assert status(f"https://{name}:5000/health", ca_file=ca) == 200
        again = server["deployer"].run(overrides={"mlflow_public_names": [second]}).check()
    assert again.changed == [], again.changed
    assert target.ssh("cat /srv/mlflow/ca/ca.crt").stdout == ca_before


def metrics_page(url: str, ca_file: str, credentials: tuple[str, str] | None = None) -> tuple[int, str]:
    headers = {"Authorization": "Basic " + base64.b64encode(":".join(credentials).encode()).decode()} if credentials else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30, context=ssl.create_default_context(cafile=ca_file)) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def test_metrics_reach_the_listed_network_only_and_show_a_failed_backup(server, record):
    """metrics_networks naming this machine: the node and database exporters start, both MLflow
    servers export; through the proxy /metrics/host has the host's figures and the timers'
    results, /metrics/database the database's, MLflow's metrics need an MLflow user too; a source
    not listed (the host itself) is refused; a stopped database shows as down and its failed
    backup as 0 there and as a warning in status; a rerun changes nothing."""
    target, uri, ca = server["target"], server["uri"], server["ca"]
    control = target.ssh("echo ${SSH_CLIENT%% *}").stdout.strip()  # this machine, as the target sees it
    metrics = {"metrics_networks": [control]}
    first = server["deployer"].run(overrides=metrics).check()
    assert {"node-exporter", "postgres-exporter"} <= set(compose_status(target))
    assert stack_is_healthy(compose_status(target), stack_services(tls=True, metrics=True))
    assert server["deployer"].run(overrides=metrics).check().changed == []
    admin = ("admin", read_secrets(target)["MLFLOW_AUTH_ADMIN_PASSWORD"])
    assert status(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", admin, ca_file=ca) == 200
    code, text = metrics_page(f"{uri}/metrics/mlflow-api", ca, admin)
    assert code == 200 and "mlflow_http_request_total{" in text, (code, text[:500])
    assert metrics_page(f"{uri}/metrics/mlflow", ca, admin)[0] == 200
    assert metrics_page(f"{uri}/metrics/mlflow-api", ca)[0] == 401  # MLflow's own, for its users only
    code, text = metrics_page(f"{uri}/metrics/host", ca)
    assert code == 200 and "node_filesystem_avail_bytes{" in text and "node_load1 " in text, (code, text[:500])
    code, text = metrics_page(f"{uri}/metrics/database", ca)
    assert code == 200 and "\npg_up 1\n" in text and "pg_database_size_bytes{" in text, (code, text[:500])
    assert metrics_page(f"{uri}/metrics", ca, admin)[0] == 404  # no other path under /metrics reaches MLflow
    # The host itself is no listed source: refused by the proxy, whatever the credentials.
    refused = target.ssh(f"curl -sk -o /dev/null -w '%{{http_code}}' https://127.0.0.1:5000/metrics/host").stdout
    assert refused == "403", refused
    # A backup that fails (no database to dump), then one that succeeds.
    target.ssh("cd /srv/mlflow && docker compose stop postgres")
    try:
        assert target.ssh("systemctl start mlflow-backup.service", check=False).returncode != 0
        assert 'mlflow_stack_job_last_run_success{job="backup"} 0' in metrics_page(f"{uri}/metrics/host", ca)[1]
        assert "\npg_up 0\n" in metrics_page(f"{uri}/metrics/database", ca)[1]  # what the lab's alert fires on
        document = server["deployer"].run(overrides={**metrics, "status_format": "json"}, deploy="status.py").check()
        assert "the last mlflow-backup run failed" in document.stdout, document.stdout[-3000:]
    finally:
        target.ssh("cd /srv/mlflow && docker compose start postgres && docker compose up -d --wait", timeout=600)
    target.ssh("systemctl start mlflow-backup.service")
    assert 'mlflow_stack_job_last_run_success{job="backup"} 1' in metrics_page(f"{uri}/metrics/host", ca)[1]
    record("metrics_first_run_changed_operations", len(first.changed))


def test_tls_files_mode_serves_the_given_certificate(server, tmp_path):
    """The lab's own PKI: a CA and a certificate for the name made here (by the deploy's own
    script, run on this machine), given as tls = "files"."""
    target, name, uri = server["target"], server["name"], server["uri"]
    ca_dir, tls_dir = tmp_path / "ca", tmp_path / "tls"
    ca_dir.mkdir(mode=0o700), tls_dir.mkdir()
    subprocess.run(["sh", "files/host/tls-certs.sh", "--make", "ca", "--ca-dir", str(ca_dir), "--tls-dir", str(tls_dir),
                    "--uid", "0", "--gid", "0", "--ca-days", "30", "--server-days", "30", "--san", f"DNS:{name}"],
                   check=True, capture_output=True, cwd=Path(__file__).resolve().parents[2])
    files = {"tls": "files", "tls_cert_file": str(tls_dir / "server.crt"), "tls_key_file": str(tls_dir / "server.key"),
             "tls_ca_file": str(ca_dir / "ca.crt")}
    given = server["deployer"].run(overrides=files, extra_args=("-vv", "--diff")).check()
    # 30 days: the summary warns that the lab's certificate ends soon (the deploy renews only its own).
    assert "(tls_cert_file) expires in 29 days" in given.stdout + given.stderr
    assert "Load new TLS certificates | Restart proxy to load the new certificate" in given.changed
    assert "Load new TLS certificates | Restart mlflow to load the new CA" in given.changed
    key = (tls_dir / "server.key").read_text()
    assert "PRIVATE KEY" not in given.stdout + given.stderr
    assert not [line for line in key.splitlines() if "PRIVATE" not in line and line in given.stdout + given.stderr]
    assert target.ssh("stat -c '%U %a' /srv/mlflow/tls/server.key").stdout.strip() == "mlflow 600"
    assert status(f"{uri}/health", ca_file=str(ca_dir / "ca.crt")) == 200
    with pytest.raises(urllib.error.URLError):
        status(f"{uri}/health", ca_file=server["ca"])  # the self-signed CA no longer fits
    # MLflow trusts the new CA for its own S3 calls (a proxied upload), clients for the presigned download.
    admin = client_env("admin", read_secrets(target)["MLFLOW_AUTH_ADMIN_PASSWORD"], str(ca_dir / "ca.crt"))
    run_id = run_client("client_log_model.py", uri, server["workdir"] / "files-log", env=admin)
    prediction = run_client("client_load_model.py", uri, server["workdir"] / "files-load", run_id, env=admin)
    assert abs(float(prediction) - 31.0) < 1e-6
    again = server["deployer"].run(overrides=files).check()
    assert again.changed == [], again.changed


def test_tls_off_removes_the_proxy_and_warns_of_plain_http(server):
    target, name = server["target"], server["name"]
    plain = server["deployer"].run(overrides={"tls": "off"}).check()
    output = plain.stdout + plain.stderr
    assert "WARNING: plain HTTP" in output
    assert f"smoke test passed against http://{name}:5000 as admin" in output
    assert not {"proxy", "mlflow-api"} & set(compose_status(target))  # one MLflow serves everything again
    assert_stack_healthy(target, tls="off")
    admin = ("admin", read_secrets(target)["MLFLOW_AUTH_ADMIN_PASSWORD"])
    assert status(f"http://{name}:5000/api/2.0/mlflow/experiments/search?max_results=1", admin) == 200
    again = server["deployer"].run(overrides={"tls": "off"}).check()
    assert again.changed == [], again.changed


def test_no_password_in_any_process_s_arguments(server):
    target = server["target"]
    values = [*read_users(target).values(), *read_secrets(target).values()]
    processes = target.ssh("ps -eo args").stdout
    assert not [value for value in values if value in processes]
