"""End-to-end, the day-two verbs against one real target, as a sudo user, with the host known by
a DNS name only this machine resolves: status.py and logs.py on a healthy, a degraded and a
stopped stack (read-only: no operation, nothing changes); uninstall.py keeping the data, then
deploy.py bringing the same data back; the data removed only when confirmed by the host's name."""

from __future__ import annotations

import json

import pytest

from .support import Deployer, compose_status, control_machine_hosts_entry, http_json, stack_warnings

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(container_target, settings, tmp_path_factory):
    name = f"status-{container_target.name}.lab.test"
    deployer = Deployer(container_target, {**settings, "backup_schedule": "*-*-* 03:00:00"}, user="labadmin",
                        workdir=tmp_path_factory.mktemp("status"), name=name)
    with control_machine_hosts_entry(name, container_target.address):
        deployer.run().check()
        yield {"target": container_target, "deployer": deployer, "name": name}


def status(server, fmt: str = "text"):
    result = server["deployer"].run(overrides={"status_format": fmt}, deploy="status.py").check()
    assert result.changed == [] and result.unchanged == [], "status.py must plan no operation"
    return result


def json_document(result) -> dict:
    start = result.stdout.index('{\n  "hosts"')
    return json.loads(result.stdout[start:result.stdout.index("\n}\n", start) + 2])["hosts"][result_host(result)]


def result_host(result) -> str:
    return result.stdout.split('"hosts": {\n    "', 1)[1].split('"', 1)[0]


def test_a_healthy_stack(server):
    before = compose_status(server["target"])
    text = status(server).stdout
    assert f"== {server['name']} (standalone): http://{server['name']}:5000, MLflow 3.17.2" in text
    assert "no warnings" in text and "users" in text and "runs" in text
    document = json_document(status(server, "json"))
    assert stack_warnings(document) == []
    assert {name: service["healthy"] for name, service in document["services"].items()} == {
        name: True for name in before}
    assert document["database"]["revision"] == document["schema_revision_expected"]
    assert int(document["database"]["users"]) >= 1
    assert "mlflow-backup" in document["schedules"] and document["schedules"]["mlflow-backup"]["next_run"]
    assert document["disk"]["filesystem"]["free_percent"] > 0
    assert compose_status(server["target"]) == before  # read-only


def test_logs_of_one_service(server):
    result = server["deployer"].run(overrides={"logs_service": "mlflow", "logs_lines": 5}, deploy="logs.py").check()
    assert result.changed == [] and result.unchanged == []
    assert "the last 5 lines of mlflow" in result.stdout and "mlflow-1  |" in result.stdout


def test_a_degraded_then_stopped_stack_is_reported_not_changed(server):
    target = server["target"]
    target.ssh("cd /srv/mlflow && docker compose stop minio")
    document = json_document(status(server, "json"))
    assert "minio is not healthy (exited)" in document["warnings"], document["warnings"]
    assert compose_status(target)["minio"]["state"] == "exited"  # status changed nothing
    target.ssh("cd /srv/mlflow && docker compose stop")
    document = json_document(status(server, "json"))
    assert {service["state"] for name, service in document["services"].items()
            if name not in ("create-bucket", "migrate-db")} == {"exited"}
    assert sorted(document["warnings"]) == [f"{name} is not healthy (exited)" for name in ("minio", "mlflow", "postgres")]
    assert document["database"].get("revision") is None  # nothing to ask: no error either
    # The deploy brings it back.
    assert server["deployer"].run().check().changed
    assert stack_warnings(json_document(status(server, "json"))) == []


def test_uninstall_keeps_the_data_and_a_deploy_brings_it_back(server):
    target, deployer, name = server["target"], server["deployer"], server["name"]
    uri = f"http://{name}:5000/api/2.0/mlflow"
    experiment = http_json(f"{uri}/experiments/create", {"name": "kept-through-uninstall"})["experiment_id"]
    secrets_before = target.ssh("sha256sum /srv/mlflow/.env").stdout
    removed = deployer.run(deploy="uninstall.py").check()
    assert removed.changed
    assert target.ssh("docker ps -aq --filter label=com.docker.compose.project=mlflow").stdout.strip() == ""
    assert target.ssh("docker image ls -q mlflow-stack/mlflow").stdout.strip() == ""
    assert target.ssh("ls /etc/systemd/system/ | grep -c mlflow-", check=False).stdout.strip() == "0"
    for gone in ("compose.yaml", "mlflow.env", "auth.ini", "build", "images", "backup.sh"):
        assert target.ssh(f"test -e /srv/mlflow/{gone}", check=False).returncode != 0, gone
    for kept in ("data/postgres", "data/minio", ".env"):
        assert target.ssh(f"test -e /srv/mlflow/{kept}", check=False).returncode == 0, kept
    assert deployer.run(deploy="uninstall.py").check().changed == []  # again: nothing left to do
    document = json_document(status(server, "json"))
    assert {service["state"] for service in document["services"].values()} == {"missing"}

    deployer.run().check()
    assert target.ssh("sha256sum /srv/mlflow/.env").stdout == secrets_before
    assert http_json(f"{uri}/experiments/get?experiment_id={experiment}")["experiment"]["name"] == \
        "kept-through-uninstall"
    assert deployer.run().check().changed == []


def test_data_goes_only_when_confirmed_by_the_host_s_name(server):
    target, deployer, name = server["target"], server["deployer"], server["name"]
    refused = deployer.run(overrides={"uninstall_data": True}, deploy="uninstall.py")
    assert refused.returncode != 0 and f"confirm with uninstall_confirm = {name!r}" in refused.stderr
    assert compose_status(target)["mlflow"]["state"] == "running"  # refused before any change
    deployer.run(overrides={"uninstall_data": True, "uninstall_confirm": name}, deploy="uninstall.py").check()
    assert target.ssh("test -e /srv/mlflow", check=False).returncode != 0
    assert target.ssh("id mlflow", check=False).returncode != 0
