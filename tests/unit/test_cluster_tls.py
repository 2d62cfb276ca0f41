"""TLS in a cluster (tls = 'files'): the balancer speaks TLS with the lab's certificate on both
its ports, every tracking server trusts its CA (its own S3 calls go to the balancer's name over
https) and serves plain HTTP to the balancer, the data host is unchanged; a certificate that does
not cover the balancer's name and the self-signed mode are refused on every member."""

from __future__ import annotations

import pytest
import yaml

from mlflow_stack.config import ConfigError
from mlflow_stack.services import port_settings
from mlflow_stack.steps import tls
from mlflow_stack.steps.stack_files import compose_file, render

from .plan import plan
from .test_cluster import BALANCER, DATA, TRACKING, member_config
from .test_tls import self_signed


@pytest.fixture
def lab_files(tmp_path):
    cert, key = self_signed(tmp_path, f"DNS:{BALANCER.name}")
    return dict(tls="files", tls_cert_file=cert, tls_key_file=key, tls_ca_file=cert)


def service_names(config) -> list[str]:
    return [service.name for service in config.services]


def test_the_balancer_terminates_tls_on_both_ports(lab_files):
    config = member_config("balancer", BALANCER.name, **lab_files)
    assert config.tracking_uri == f"https://{BALANCER.name}:5000" and config.ca_local_path == lab_files["tls_ca_file"]
    assert service_names(config) == ["balancer"]
    conf = render("balancer.conf.j2", config)
    assert "listen 5000 ssl;" in conf and "listen 9000 ssl;" in conf
    assert "ssl_certificate /etc/nginx/tls/server.crt;" in conf and "ssl_certificate_key /etc/nginx/tls/server.key;" in conf
    balancer = yaml.safe_load(compose_file(config))["services"]["balancer"]
    assert {"/srv/mlflow/tls/server.crt:/etc/nginx/tls/server.crt:ro",
            "/srv/mlflow/tls/server.key:/etc/nginx/tls/server.key:ro"} \
        <= set(balancer["volumes"]), balancer["volumes"]
    assert port_settings(config.services) == ("mlflow_port", "minio_api_port")


def test_without_tls_the_balancer_listens_plain(lab_files):
    conf = render("balancer.conf.j2", member_config("balancer", BALANCER.name))
    assert "ssl" not in conf and "listen 5000;" in conf and "listen 9000;" in conf


def test_a_tracking_server_trusts_the_balancer_and_serves_plain_http_to_it(lab_files):
    config = member_config("tracking", TRACKING[0].name, **lab_files)
    # no proxy and no tracking-API server of its own: its port goes to the balancer, plain
    assert service_names(config) == ["migrate-db", "mlflow", "jobs"]
    assert port_settings(config.services) == ("mlflow_port",)
    assert config.tracking_uri == f"http://{TRACKING[0].name}:5000" and config.mlflow_worker_count == 1
    assert config.s3_endpoint_url == f"https://{BALANCER.name}:9000"
    mlflow = yaml.safe_load(compose_file(config))["services"]["mlflow"]
    assert "/srv/mlflow/tls/ca.crt:/etc/mlflow-stack/ca.crt:ro" in mlflow["volumes"]
    assert f"{BALANCER.name}:{BALANCER.address}" in mlflow["extra_hosts"]
    assert "AWS_CA_BUNDLE=/etc/mlflow-stack/ca.crt" in render("mlflow.env.j2", config).splitlines()


def test_the_data_host_is_unchanged_by_tls(lab_files):
    with_tls, without = member_config("data", DATA.name, **lab_files), member_config("data", DATA.name)
    assert compose_file(with_tls) == compose_file(without)


@pytest.mark.parametrize("role, name", [("balancer", BALANCER.name), ("tracking", TRACKING[1].name),
                                        ("data", DATA.name)])
def test_a_certificate_not_for_the_balancer_s_name_is_refused_on_every_member(tmp_path, role, name):
    cert, key = self_signed(tmp_path, "DNS:elsewhere.lab")
    with pytest.raises(ConfigError) as error:
        member_config(role, name, tls="files", tls_cert_file=cert, tls_key_file=key, tls_ca_file=cert)
    assert f"tls_cert_file = {cert!r}" in str(error.value) and BALANCER.name in str(error.value)
    assert "(the cluster's balancer)" in str(error.value)


@pytest.mark.parametrize("role, name", [("balancer", BALANCER.name), ("tracking", TRACKING[0].name)])
def test_self_signed_is_refused_naming_the_files_mode(role, name):
    with pytest.raises(ConfigError, match="tls = 'self-signed' in a cluster.*tls = 'files'"):
        member_config(role, name, tls="self-signed")


def test_the_balancer_gets_certificate_and_key_the_tracking_server_the_ca_the_data_host_nothing(lab_files):
    balancer = plan(tls.ensure_certificates, member_config("balancer", BALANCER.name, **lab_files), {})
    uploads = sorted(op.name.split(" | ")[1] for op in balancer.ops if "Upload" in op.name)
    assert uploads == ["Upload the CA certificate (tls_ca_file)", "Upload the TLS certificate (tls_cert_file)",
                       "Upload the TLS key (tls_key_file)"]
    assert "PRIVATE KEY" not in balancer.text()
    tracking = plan(tls.ensure_certificates, member_config("tracking", TRACKING[0].name, **lab_files), {})
    assert [op.name.split(" | ")[1] for op in tracking.ops if "Upload" in op.name] == \
        ["Upload the CA certificate (tls_ca_file)"]
    data = plan(tls.ensure_certificates, member_config("data", DATA.name, **lab_files), {})
    assert not [op for op in data.ops if "Upload" in op.name]
    for result in (balancer, tracking, data):  # no proxy config and no CA made on any member
        assert not [op for op in result.ops if "nginx.conf" in op.name and "Remove" not in op.name]
        assert "tls-certs.sh" not in result.text()


@pytest.mark.parametrize("role, name, service, what", [
    ("balancer", BALANCER.name, "balancer", "certificate"), ("tracking", TRACKING[0].name, "mlflow", "CA")])
def test_new_files_restart_the_member_s_reader(lab_files, role, name, service, what):
    config = member_config(role, name, **lab_files)
    running = {"ComposeServices": {"mlflow": {service: {"state": "running"}}}}

    def steps(config):
        tls.reload_certificates(config, tls.ensure_certificates(config))

    result = plan(steps, config, running)
    restarts = [op.name for op in result.ops if op.name.startswith("Load new TLS certificates") and op.commands]
    assert restarts == [f"Load new TLS certificates | Restart {service} to load the new {what}"]
