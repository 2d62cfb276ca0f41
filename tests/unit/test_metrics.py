"""Metrics for the lab's Prometheus (metrics_networks): MLflow's exporter on both MLflow servers,
each with a metrics directory of its own; the node exporter with the host's figures and the
timers' results; the proxy serving the three to the listed networks only; nothing of it unless
asked, and refused where no proxy can hold it to those networks."""

from __future__ import annotations

import os
import subprocess

import jinja2
import pytest
import yaml

from mlflow_stack.config import ConfigError
from mlflow_stack.config.releases import EXPORTER_LOCK
from mlflow_stack.services import MetricsRoute, Service
from mlflow_stack.services.proxy import metrics_locations
from mlflow_stack.steps.schedules import backup_unit_context, gc_unit_context
from mlflow_stack.steps.stack_files import build_context, compose_file, mlflow_image_ref, render
from tests.unit.helpers import REPO, make_config
from tests.unit.test_cluster import member_config

TEMPLATES_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(REPO / "templates"), undefined=jinja2.StrictUndefined)

NETWORKS = ["10.0.5.0/24", "192.0.2.7", "2001:db8:5::/48"]


def metrics_config(**overrides):
    return make_config(tls="self-signed", metrics_networks=NETWORKS, **overrides)


def test_with_metrics_both_mlflow_servers_export_each_into_its_own_directory_and_the_node_exporter_runs():
    services = yaml.safe_load(compose_file(metrics_config()))["services"]
    for name in ("mlflow", "mlflow-api"):
        assert "--expose-prometheus=/run/mlflow-metrics" in services[name]["command"], name
        # A tmpfs per container: prometheus_client names its files by PID, and PIDs repeat across containers.
        assert services[name]["tmpfs"] == ["/run/mlflow-metrics"], name
    exporter = services["node-exporter"]
    assert exporter["image"] == "prom/node-exporter:v1.9.1" and "ports" not in exporter  # only through the proxy
    assert exporter["user"] == "10001:10001"
    assert "/srv/mlflow/metrics:/textfile:ro" in exporter["volumes"]
    assert {"/proc:/host/proc:ro", "/sys:/host/sys:ro", "/:/host/root:ro"} <= set(exporter["volumes"])
    assert "--collector.textfile.directory=/textfile" in exporter["command"]
    assert "wget" in exporter["healthcheck"]["test"]  # the official image has no bash


def test_with_metrics_the_bundled_database_is_exported_as_the_stack_role_by_its_secret():
    services = yaml.safe_load(compose_file(metrics_config(postgres_db="tracking", postgres_user="tracker")))["services"]
    exporter = services["postgres-exporter"]
    assert exporter["image"] == "quay.io/prometheuscommunity/postgres-exporter:v0.17.1" and "ports" not in exporter
    assert exporter["environment"] == {"DATA_SOURCE_URI": "postgres:5432/tracking?sslmode=disable",
                                       "DATA_SOURCE_USER": "tracker",
                                       "DATA_SOURCE_PASS": "${POSTGRES_PASSWORD:?missing in .env; rerun the deploy}"}
    assert "depends_on" not in exporter  # up while the database is down, to say so
    assert "wget" in exporter["healthcheck"]["test"]
    # An external database is the institute's to watch: no exporter, no route.
    external = metrics_config(postgres_external_host="db.example.org", postgres_password="x" * 20)
    assert "postgres-exporter" not in yaml.safe_load(compose_file(external))["services"]
    assert "/metrics/database" not in render("nginx.conf.j2", external)


def test_without_metrics_nothing_is_exported():
    config = make_config(tls="self-signed")
    services = yaml.safe_load(compose_file(config))["services"]
    assert "node-exporter" not in services and "postgres-exporter" not in services
    for name in ("mlflow", "mlflow-api"):
        assert not any("prometheus" in part for part in services[name]["command"]) and "tmpfs" not in services[name]
    assert "/metrics" not in render("nginx.conf.j2", config)


def test_the_proxy_serves_the_exporters_to_the_listed_networks_only():
    conf = render("nginx.conf.j2", metrics_config())
    block = conf[conf.index("location ^~ /metrics {"):conf.index("# The S3 API")]
    assert [line.strip() for line in block.splitlines() if line.strip().startswith(("allow", "deny"))] == [
        "allow 10.0.5.0/24;", "allow 192.0.2.7;", "allow 2001:db8:5::/48;", "deny all;"]
    for path, upstream in (("/metrics/mlflow", "mlflow:5000"), ("/metrics/mlflow-api", "mlflow-api:5000"),
                           ("/metrics/host", "node-exporter:9100"), ("/metrics/database", "postgres-exporter:9187")):
        location = block[block.index(f"location = {path} {{"):]
        location = location[:location.index("}")]
        assert upstream in location and "/metrics;" in location, path
    # Any other spelling under /metrics (MLflow's own /metrics too) stops at the prefix location.
    assert block.index("return 404;") > block.index("location = /metrics/database")


def test_a_services_metrics_route_is_all_the_proxy_needs():
    # A new exporter declares its route in its own module (Service.metrics); the proxy's block
    # is written from the host's services, the routes in their compose order.
    exporter = Service("queue-exporter", image="queue_exporter_image", metrics=MetricsRoute("/metrics/queue", 9121))
    config = metrics_config()
    block = metrics_locations(config.metrics_networks, (*config.services, exporter))
    paths = [line.split()[2] for line in block.splitlines() if line.strip().startswith("location = ")]
    assert paths == ["/metrics/mlflow", "/metrics/mlflow-api", "/metrics/host", "/metrics/database", "/metrics/queue"]
    assert "set $queue_exporter_metrics queue-exporter:9121;" in block
    assert metrics_locations((), (*config.services, exporter)) == ""


@pytest.mark.parametrize("overrides, message", [
    ({"tls": "off"}, "served by a single server's TLS proxy; set tls = 'self-signed' or 'files'"),
    ({"metrics_networks": ["10.0.5.1/24"]}, "networks like '10.0.5.0/24' (host bits zero)"),
    ({"metrics_networks": "10.0.5.0/24"}, "a list of networks"),
])
def test_bad_metrics_settings_are_refused_before_anything_changes(overrides, message):
    with pytest.raises(ConfigError) as caught:
        make_config(**{"tls": "self-signed", "metrics_networks": NETWORKS, **overrides})
    assert message in str(caught.value)


def test_a_cluster_member_refuses_metrics():
    with pytest.raises(ConfigError, match="a cluster's members export none yet"):
        member_config("tracking", "mlflow-1.lab", metrics_networks=NETWORKS)


def test_the_timers_write_their_last_result_after_a_success_or_a_failure():
    config = metrics_config()
    for context, job in ((backup_unit_context(config), "backup"), (gc_unit_context(config), "gc")):
        command = context[f"{job}_result_command"]
        assert command == f"/bin/bash /srv/mlflow/job-result.sh --job {job} --dir /srv/mlflow/metrics"
    for job, context in (("backup", backup_unit_context(config)), ("gc", gc_unit_context(config))):
        unit = TEMPLATES_ENV.get_template(f"mlflow-{job}.service.j2").render(**context)
        assert f"ExecStopPost=/bin/bash /srv/mlflow/job-result.sh --job {job} --dir /srv/mlflow/metrics" in unit


@pytest.mark.parametrize("result, success", [("success", "1"), ("exit-code", "0"), ("timeout", "0"), (None, "0")])
def test_job_result_writes_the_textfile_whole(tmp_path, result, success):
    env = {key: value for key, value in os.environ.items() if key != "SERVICE_RESULT"}
    if result is not None:
        env["SERVICE_RESULT"] = result
    directory = tmp_path / "metrics"
    subprocess.run(["bash", str(REPO / "files/host/job-result.sh"), "--job", "gc", "--dir", str(directory)],
                   env=env, check=True)
    assert sorted(path.name for path in directory.iterdir()) == ["gc.prom"]  # no temporary file left
    text = (directory / "gc.prom").read_text()
    assert f'mlflow_stack_job_last_run_success{{job="gc"}} {success}\n' in text
    ended = int(text.split('mlflow_stack_job_last_run_end_seconds{job="gc"} ')[1].split()[0])
    assert ended > 1_700_000_000
    assert oct((directory / "gc.prom").stat().st_mode)[-3:] == "644"


def test_job_result_refuses_a_missing_option(tmp_path):
    result = subprocess.run(["bash", str(REPO / "files/host/job-result.sh"), "--job", "gc"], capture_output=True,
                            text=True)
    assert result.returncode != 0 and "--dir missing" in result.stderr


def test_the_exporter_is_in_every_image_from_its_own_lock():
    config = make_config()
    context = build_context(config)
    assert context["exporter.lock"] == EXPORTER_LOCK.read_bytes()
    pins = [line.split(" ")[0] for line in EXPORTER_LOCK.read_text().splitlines() if "==" in line]
    assert [pin.split("==")[0] for pin in pins] == ["prometheus-client", "prometheus-flask-exporter"]
    dockerfile = context["Dockerfile"].decode()
    assert "--no-deps -r /opt/mlflow-stack/exporter.lock" in dockerfile
    assert dockerfile.index("requirements.lock") < dockerfile.index("exporter.lock")
    # Any lock a release pins prometheus-client in pins the exporter lock's version (no downgrade by --no-deps).
    exporter_client = dict(pin.split("==") for pin in pins)["prometheus-client"]
    for lock in REPO.glob("locks/mlflow-*.txt"):
        for line in lock.read_text().splitlines():
            if line.startswith("prometheus-client=="):
                assert line.split("==")[1].split()[0] == exporter_client, lock.name


def test_metrics_settings_do_not_change_the_image():
    assert mlflow_image_ref(make_config(tls="self-signed")) == mlflow_image_ref(metrics_config())
