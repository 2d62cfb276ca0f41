"""End-to-end: MLflow's basic authentication, on by default, on a fresh container target that
clients know by a DNS name only. Generated admin password, two listed users (READ and EDIT)
with generated passwords, rotation of the admin password, reruns at zero changes, and no
password in argv or in pyinfra's output.

The tests share one target and run in order.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest

from .support import Deployer, assert_stack_healthy, control_machine_hosts_entry, read_secrets, run_client

pytestmark = pytest.mark.e2e

USERS = [{"name": "reader", "permission": "READ"}, {"name": "writer", "permission": "EDIT"}]
SYNC_OP = "Keep MLflow's users | Make MLflow's user store match the admin and mlflow_auth_users"


def status(url: str, credentials: tuple[str, str] | None = None, payload: dict | None = None) -> int:
    """HTTP status of a call (GET, or POST with a JSON payload)."""
    headers = {"Content-Type": "application/json"}
    if credentials:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def read_users(target) -> dict[str, str]:
    text = target.ssh("cat /srv/mlflow/users.env").stdout
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def client_env(user: str, password: str) -> dict:
    return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}


@pytest.fixture(scope="module")
def server(container_target, settings, tmp_path_factory):
    """The target known by a name only the control machine resolves; auth settings left at
    their defaults apart from the users and a default permission of nothing, so whatever the
    READ user may do comes from its own grant."""
    target = container_target
    name = f"mlflow-{target.name}.auth.test"
    plain = {key: value for key, value in settings.items() if key != "mlflow_auth_admin_password"}
    deployer = Deployer(target, {**plain, "mlflow_auth_users": USERS, "mlflow_auth_default_permission": "NO_PERMISSIONS"},
                        workdir=tmp_path_factory.mktemp("deploy"), name=name)
    with control_machine_hosts_entry(name, target.address):
        first = deployer.run(extra_args=("-vv", "--diff")).check()
        yield {"target": target, "deployer": deployer, "first": first, "uri": f"http://{name}:5000",
               "workdir": tmp_path_factory.mktemp("clients")}


def test_first_run_generates_passwords_creates_users_and_smoke_tests_as_admin(server):
    target, first = server["target"], server["first"]
    assert_stack_healthy(target)
    assert SYNC_OP in first.changed
    secrets, users = read_secrets(target), read_users(target)
    assert len(secrets["MLFLOW_AUTH_ADMIN_PASSWORD"]) == 64 and len(secrets["MLFLOW_FLASK_SERVER_SECRET_KEY"]) == 64
    assert set(users) == {"reader", "writer"} and all(len(p) == 64 for p in users.values())
    assert "smoke test passed against " + server["uri"] + " as admin" in first.stdout + first.stderr
    output = first.stdout + first.stderr
    assert "MLFLOW_TRACKING_USERNAME=<user> MLFLOW_TRACKING_PASSWORD=<password>" in output
    assert "MLFLOW_AUTH_ADMIN_PASSWORD in /srv/mlflow/.env" in output and "/srv/mlflow/users.env" in output
    assert "WARNING: plain HTTP" in output
    for value in [*users.values(), secrets["MLFLOW_AUTH_ADMIN_PASSWORD"], secrets["MLFLOW_FLASK_SERVER_SECRET_KEY"]]:
        assert value not in output
    for path, mode in (("/srv/mlflow/users.env", "root 600"), ("/srv/mlflow/.env", "root 600"),
                       ("/srv/mlflow/auth.ini", "root 644")):
        assert target.ssh(f"stat -c '%U %a' {path}").stdout.strip() == mode, path
    assert secrets["MLFLOW_AUTH_ADMIN_PASSWORD"] not in target.ssh("cat /srv/mlflow/auth.ini").stdout


def test_requests_without_or_with_wrong_credentials_are_refused(server):
    target, uri = server["target"], server["uri"]
    secrets = read_secrets(target)
    search = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert status(search) == 401
    assert status(search, ("admin", "wrong-password-123")) == 401
    assert status(search, ("writer", secrets["MLFLOW_AUTH_ADMIN_PASSWORD"])) == 401
    assert status(search, ("admin", secrets["MLFLOW_AUTH_ADMIN_PASSWORD"])) == 200
    assert status(f"{uri}/health") == 200  # the container's health check needs no password


def test_users_log_and_load_a_model_and_a_read_user_cannot_write(server):
    target, uri, workdir = server["target"], server["uri"], server["workdir"]
    users = read_users(target)
    with control_machine_hosts_entry(uri.split("/")[2].split(":")[0], target.address):
        run_id = run_client("client_log_model.py", uri, workdir / "log", env=client_env("writer", users["writer"]))
        # Reading the writer's run needs the reader's READ grant (the default grants nothing).
        prediction = run_client("client_load_model.py", uri, workdir / "load", run_id,
                                env=client_env("reader", users["reader"]))
        assert abs(float(prediction) - 31.0) < 1e-6
        api = f"{uri}/api/2.0/mlflow"
        run = {"run_id": run_id, "key": "written-by-reader", "value": "1"}
        assert status(f"{api}/runs/log-parameter", ("reader", users["reader"]), run) == 403
        assert status(f"{api}/runs/log-parameter", ("writer", users["writer"]), {**run, "key": "by-writer"}) == 200
    server["run_id"] = run_id


def test_rerun_changes_nothing(server):
    with control_machine_hosts_entry(server["uri"].split("/")[2].split(":")[0], server["target"].address):
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
        assert status(search, ("admin", old)) == 401
        assert status(search, ("admin", new)) == 200
        # The model logged before still loads, as the admin now.
        prediction = run_client("client_load_model.py", uri, server["workdir"] / "after", server["run_id"],
                                env=client_env("admin", new))
        assert abs(float(prediction) - 31.0) < 1e-6
        again = server["deployer"].run().check()
    assert again.changed == [], again.changed


def test_no_password_in_any_process_s_arguments(server):
    target = server["target"]
    values = [*read_users(target).values(), *read_secrets(target).values()]
    processes = target.ssh("ps -eo args").stdout
    assert not [value for value in values if value in processes]
