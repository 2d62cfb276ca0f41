"""The service table (mlflow_stack/services/) is what the compose file, the directories
step, the secrets step, the port-clash check and the health decision use."""

from __future__ import annotations

import itertools
import re

import pytest
import yaml

from mlflow_stack.config import CONFIG_KEYS, ConfigError
from mlflow_stack.steps.secrets import secret_values
from mlflow_stack.services import BUILT_IMAGE, PORT_SETTINGS, SERVICES, active_services, stack_is_healthy
from mlflow_stack.steps.stack_files import build_context, mlflow_image_ref, compose_file

from .helpers import NON_DEFAULT, make_config

INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
HEALTHY = {service.name: ({"state": "exited", "health": "", "exit_code": 0} if service.oneshot
                          else {"state": "running", "health": "healthy", "exit_code": 0}) for service in SERVICES}


@pytest.fixture(params=["default", "non_default"])
def config(request):
    return make_config() if request.param == "default" else make_config(**NON_DEFAULT)


def compose_text(config) -> str:
    return compose_file(config)


def service_sections(text: str) -> dict[str, str]:
    """Service name -> its lines of compose.yaml (comments included)."""
    body = text.split("\nservices:\n", 1)[1]
    parts = re.split(r"^  ([a-z-]+):\n", body, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_compose_runs_the_table_s_services_in_its_order(config):
    assert list(yaml.safe_load(compose_text(config))["services"]) == \
        [service.name for service in active_services(config.tls)]


def test_image_user_volumes_and_ports_come_from_the_table(config):
    services = yaml.safe_load(compose_text(config))["services"]
    tls_on = config.tls != "off"
    for service in active_services(config.tls):
        compose = services[service.name]
        image = mlflow_image_ref(config) if service.image == BUILT_IMAGE else getattr(config, service.image)
        assert compose["image"] == image, service.name
        assert compose["user"] == f"{config.stack_uid}:{config.stack_gid}", service.name
        config_files = [f for f in service.config_files if tls_on or not f.tls_only]
        assert compose.get("volumes", []) == [f"{config.data_dir}/{d.name}:{d.mount}" for d in service.data_dirs] + \
            [f"{config.stack_dir}/{f.name}:{f.mount}:ro" for f in config_files]
        ports = [port for port in service.ports if not (tls_on and port.plain_only)]
        published = [port.split(":") for port in compose.get("ports", [])]
        assert [int(host_port) for _, host_port, _ in published] == \
            [getattr(config, port.setting) for port in ports], service.name
        for (address, host_port, inside), port in zip(published, ports):
            assert address == (getattr(config, port.address_setting) if port.address_setting else "127.0.0.1")
            assert int(inside) == (port.container_port or int(host_port))


def test_each_service_gets_exactly_its_secrets(config):
    sections = service_sections(compose_text(config))
    for service in active_services(config.tls):
        assert set(INTERPOLATION.findall(sections[service.name])) == set(service.secrets), service.name


def test_the_secrets_step_writes_every_secret_a_service_reads(config):
    assert set(secret_values(config)) == {key for service in SERVICES for key in service.secrets}


def test_the_table_names_real_settings():
    for service in SERVICES:
        assert service.image == BUILT_IMAGE or service.image in CONFIG_KEYS, service.name
        for port in service.ports:
            assert port.setting in CONFIG_KEYS and port.address_setting in (None, *CONFIG_KEYS), port


@pytest.mark.parametrize("first, second", list(itertools.combinations(PORT_SETTINGS, 2)))
def test_any_two_published_ports_must_differ(first, second):
    with pytest.raises(ConfigError) as caught:
        make_config(**{first: 18000, second: 18000})
    assert "clashes with" in str(caught.value) and first in str(caught.value) and second in str(caught.value)


def test_every_published_port_is_checked():
    assert set(PORT_SETTINGS) == {"mlflow_port", "minio_api_port", "minio_console_port"}


@pytest.mark.parametrize("status, healthy", [
    ({"state": "running", "health": "healthy"}, True),
    ({"state": "running", "health": "starting"}, False),
    ({"state": "running", "health": "unhealthy"}, False),
    ({"state": "restarting", "health": "healthy"}, False),
    ({"state": "exited", "health": "", "exit_code": 0}, False),
    ({}, False),
])
def test_a_long_running_service_is_healthy_only_running_and_passing_its_check(status, healthy):
    for name in ("postgres", "minio", "mlflow"):
        assert stack_is_healthy({**HEALTHY, name: status}, active_services("self-signed")) is healthy, name


@pytest.mark.parametrize("status, healthy", [
    ({"state": "exited", "health": "", "exit_code": 0}, True),
    ({"state": "exited", "health": "", "exit_code": 1}, False),
    ({"state": "running", "health": "", "exit_code": 0}, False),
    ({}, False),
])
def test_a_oneshot_is_healthy_only_exited_0(status, healthy):
    for name in ("create-bucket", "migrate-db"):
        assert stack_is_healthy({**HEALTHY, name: status}, active_services("self-signed")) is healthy, name


def test_each_service_writes_where_its_data_dir_is_mounted(config):
    services = yaml.safe_load(compose_text(config))["services"]
    mounts = {service.name: [d.mount for d in service.data_dirs] for service in SERVICES}
    assert mounts["postgres"] == [services["postgres"]["environment"]["PGDATA"]]
    assert mounts["minio"] == [services["minio"]["command"][1]]  # server /data
    # the MLflow server's working directory (WORKDIR of its image)
    assert f"WORKDIR {mounts['mlflow'][0]}" in build_context(config)["Dockerfile"].decode().splitlines()


def test_with_tls_the_proxy_publishes_the_api_ports_and_mlflow_and_minio_publish_none():
    config = make_config(mlflow_public_host="mlflow.lab.example.org", minio_api_bind_address="10.0.0.5")
    services = yaml.safe_load(compose_text(config))["services"]
    assert config.tls == "self-signed"  # the default
    assert services["proxy"]["ports"] == ["0.0.0.0:5000:5000", "10.0.0.5:9000:9000"]
    assert "ports" not in services["mlflow"] and services["minio"]["ports"] == ["127.0.0.1:9001:9001"]
    # The public name is the proxy's on the compose network: MLflow's S3 calls go through it.
    assert services["proxy"]["networks"]["default"]["aliases"] == ["mlflow.lab.example.org"]
    assert services["minio"]["networks"]["default"]["aliases"] == []
    assert f"{config.stack_dir}/tls/ca.crt:/etc/mlflow-stack/ca.crt:ro" in services["mlflow"]["volumes"]
    assert services["proxy"]["volumes"] == [f"{config.stack_dir}/nginx.conf:/etc/nginx/nginx.conf:ro",
                                            f"{config.stack_dir}/tls/server.crt:/etc/nginx/tls/server.crt:ro",
                                            f"{config.stack_dir}/tls/server.key:/etc/nginx/tls/server.key:ro"]
    # The CA's key is mounted nowhere.
    assert config.ca_dir not in compose_text(config)
    assert stack_is_healthy(HEALTHY, active_services("self-signed"))
    assert not stack_is_healthy({k: v for k, v in HEALTHY.items() if k != "proxy"}, active_services("self-signed"))


def test_without_tls_there_is_no_proxy_and_mlflow_and_minio_publish_their_ports():
    config = make_config(tls="off", mlflow_public_host="mlflow.lab.example.org")
    services = yaml.safe_load(compose_text(config))["services"]
    assert "proxy" not in services
    assert services["mlflow"]["ports"] == ["0.0.0.0:5000:5000"]
    assert services["minio"]["ports"] == ["0.0.0.0:9000:9000", "127.0.0.1:9001:9001"]
    assert services["minio"]["networks"]["default"]["aliases"] == ["mlflow.lab.example.org"]
    assert not any("ca.crt" in volume for volume in services["mlflow"]["volumes"])
    assert stack_is_healthy({k: v for k, v in HEALTHY.items() if k != "proxy"}, active_services("off"))


# --- the package: one module per service ---------------------------------------------------


def test_every_module_of_the_package_is_a_service_found_by_itself():
    import pkgutil

    from mlflow_stack import services as package

    modules = [m.name for m in pkgutil.iter_modules(package.__path__) if m.name != "model"]
    # A module found on disk is a service the package asks, under the module's name.
    assert {name.replace("_", "-") for name in modules} == set(package.SERVICE_NAMES)
    orders = [getattr(package, name).ORDER for name in modules]
    assert len(set(orders)) == len(orders), "two services share an ORDER"


@pytest.mark.parametrize("topology, bundled", [
    (dict(), True), (dict(external_database=True), True), (dict(external_s3=True), False),
    (dict(external_database=True, external_s3=True), False), (dict(role="data"), True),
    (dict(role="tracking", external_database=True, external_s3=True), False)])
def test_the_job_runner_exists_wherever_the_mlflow_image_does(topology, bundled):
    from mlflow_stack.services import stack_services

    services = {service.name: service for service in stack_services(**topology)}
    jobs = services["jobs"]
    assert jobs.image == BUILT_IMAGE and jobs.on_demand and not jobs.oneshot and not jobs.ports
    assert jobs.secrets == (("MINIO_ROOT_PASSWORD",) if bundled else ("S3_SECRET_ACCESS_KEY",))
    # Never waited for, always healthy: `compose up` does not start it.
    assert jobs.is_healthy({})


def test_a_balancer_has_no_job_runner():
    from mlflow_stack.services import stack_services

    assert [service.name for service in stack_services(role="balancer")] == ["balancer"]


@pytest.mark.parametrize("settings", [{}, dict(
    s3_endpoint_url="https://s3.example.org", s3_region="eu-central-1", s3_access_key="LABKEY",
    s3_secret_access_key="abc/DEF+ghi=123", minio_bucket="lab-artifacts", tls="off")], ids=["bundled", "external-s3"])
def test_the_job_runner_is_started_by_compose_run_only_and_reaches_the_bucket(settings):
    config = make_config(**settings)
    jobs = yaml.safe_load(compose_file(config))["services"]["jobs"]
    assert jobs["profiles"] == ["jobs"]  # no `compose up` names the profile
    assert "ports" not in jobs and "depends_on" not in jobs and jobs["restart"] == "no"
    env = jobs["environment"]
    assert env["ARTIFACT_BUCKET"] == config.minio_bucket
    if config.external_s3:
        assert env["S3_ENDPOINT_URL"] == "https://s3.example.org" and env["AWS_ACCESS_KEY_ID"] == "LABKEY"
        assert INTERPOLATION.findall(env["AWS_SECRET_ACCESS_KEY"]) == ["S3_SECRET_ACCESS_KEY"]
    else:
        assert env["S3_ENDPOINT_URL"] == f"http://minio:{config.minio_api_port}"
        assert INTERPOLATION.findall(env["AWS_SECRET_ACCESS_KEY"]) == ["MINIO_ROOT_PASSWORD"]
