"""Rendered files: a valid compose model that runs as the stack user, proxies artifacts to
MinIO, keeps passwords out of every file, and an image tag that follows the image's inputs."""

from __future__ import annotations

import ipaddress
import re

import pytest
import yaml

from mlflow_stack.steps.secrets import secret_values
from mlflow_stack.config import releases
from mlflow_stack.config.releases import lock_file
from mlflow_stack.services import DATA_DIRS, ON_DEMAND_SERVICES, ONESHOT_SERVICES, long_running_services, mlflow_api
from mlflow_stack.steps.stack_files import IMAGE_FILES, build_context, mlflow_image_ref, compose_file, render

from .helpers import REPO, HOST_NAME, NON_DEFAULT, make_config

BUCKET_INIT, MIGRATE = ONESHOT_SERVICES
HEALTH_CONDITIONS = {"service_healthy", "service_completed_successfully", "service_started"}
RESTART_POLICIES = {"no", "always", "on-failure", "unless-stopped"}
PORT = re.compile(r"^(?P<addr>.+):(?P<host>\d{1,5}):(?P<container>\d{1,5})$")
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?+][^}]*)?\}")
GIVEN_SECRETS = dict(postgres_password="Pg-Literal.Secret_0123", minio_root_password="Minio~Literal.Secret_4567")


@pytest.fixture(params=["default", "non_default"])
def config(request):
    return make_config() if request.param == "default" else make_config(**NON_DEFAULT)


def rendered_files(config) -> dict[str, str]:
    files = {"compose.yaml": compose_file(config), "mlflow.env": render("mlflow.env.j2", config)}
    files.update({f"build/{name}": data.decode() for name, data in build_context(config).items()})
    return files


def compose(config) -> dict:
    return yaml.safe_load(compose_file(config))


def env_file(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return {key: value for key, value in pairs}


def url_host(name: str) -> str:
    return f"[{name}]" if ":" in name else name


def flag(command: list[str], name: str) -> str:
    values = [item.split("=", 1)[1] for item in command if item.startswith(f"{name}=")]
    assert len(values) == 1, f"{name} given {len(values)} times in {command}"
    return values[0]


# --- structure -------------------------------------------------------------------------------


def test_compose_is_a_valid_model(config):
    model = compose(config)
    assert model["name"] == config.compose_project
    services = model["services"]
    assert set(services) == {*ONESHOT_SERVICES, *long_running_services(config.tls), *ON_DEMAND_SERVICES}
    for name, service in services.items():
        assert isinstance(service["image"], str) and service["image"], name
        assert re.fullmatch(r"\d+:\d+", service["user"]), name
        assert service.get("restart", "no") in RESTART_POLICIES, name
        if "healthcheck" in service:
            test = service["healthcheck"]["test"]
            assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert spec["condition"] in HEALTH_CONDITIONS, name
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: port {port!r} must be a quoted string"
            match = PORT.match(port)
            assert match, f"{name}: {port!r} is not addr:port:port"
            ipaddress.ip_address(match["addr"])
            assert 1 <= int(match["host"]) <= 65535 and 1 <= int(match["container"]) <= 65535
        for key, value in (service.get("environment") or {}).items():
            assert isinstance(value, (str, int)), f"{name}: {key} = {value!r}"
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            config_file = source.startswith(config.stack_dir + "/") and volume.endswith(":ro") \
                and not source.startswith(config.ca_dir)
            assert (source.startswith(config.data_dir + "/") or config_file) and target.startswith("/"), volume


def test_images_come_from_the_config(config):
    services = compose(config)["services"]
    assert services["postgres"]["image"] == config.postgres_image
    assert services["minio"]["image"] == config.minio_image
    assert services["mlflow"]["image"] == services[BUCKET_INIT]["image"] == services[MIGRATE]["image"] \
        == mlflow_image_ref(config)


def test_every_service_runs_as_the_stack_account(config):
    expected = f"{config.stack_uid}:{config.stack_gid}"
    for name, service in compose(config)["services"].items():
        assert service["user"] == expected, name


def test_postgres_is_not_published(config):
    assert "ports" not in compose(config)["services"]["postgres"]


def test_long_running_services_have_healthchecks(config):
    services = compose(config)["services"]
    for name in long_running_services(config.tls):
        assert services[name]["healthcheck"]["test"], name
    assert config.postgres_user in services["postgres"]["healthcheck"]["test"]


@pytest.mark.parametrize(("timeout", "start_interval"), [(300, None), (1200, 15)])
def test_running_services_are_probed_rarely_and_starting_ones_often(timeout, start_interval):
    # A probe starts a process in the container: every 5 s the idle stack in the VM took 80 %
    # of a core. Starting services are probed every 2 s (a slow host's setting: less often) until
    # the deploy stops waiting.
    given = {} if start_interval is None else {"mlflow_health_start_interval": start_interval}
    config = make_config(tls="self-signed", metrics_networks=["10.0.0.0/8"], mlflow_health_timeout=timeout, **given)
    probed = {name: service["healthcheck"] for name, service in compose(config)["services"].items()
              if "healthcheck" in service}
    assert {"postgres", "minio", "mlflow", "mlflow-api", "proxy", "node-exporter", "postgres-exporter"} <= set(probed)
    expected = ("30s", f"{start_interval or 2}s", f"{timeout}s")
    for name, check in probed.items():
        assert (check["interval"], check["start_interval"], check["start_period"]) == expected, name
        assert check["retries"] * 30 >= 90, name  # a few slow probes on a loaded host are not "unhealthy"


def test_bucket_init_runs_once_and_mlflow_waits_for_it(config):
    services = compose(config)["services"]
    assert services[BUCKET_INIT]["restart"] == "no"  # the string, not YAML's false
    assert services["mlflow"]["depends_on"][BUCKET_INIT]["condition"] == "service_completed_successfully"
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services[BUCKET_INIT]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services[BUCKET_INIT]["environment"]["ARTIFACT_BUCKET"] == config.minio_bucket


def test_migration_runs_once_against_a_healthy_database_and_mlflow_waits_for_it(config):
    services = compose(config)["services"]
    migrate = services[MIGRATE]
    assert migrate["restart"] == "no"
    assert migrate["command"] == ["python", "/opt/mlflow-stack/migrate_db.py"]
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["mlflow"]["depends_on"][MIGRATE]["condition"] == "service_completed_successfully"
    # the same backend store as the server, by environment
    assert migrate["environment"]["MLFLOW_BACKEND_STORE_URI"] == \
        services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert "ports" not in migrate and "volumes" not in migrate


@pytest.mark.parametrize("extra", [{"tls": "off"}, {**NON_DEFAULT, "tls": "off"}], ids=["default", "non_default"])
def test_published_ports_follow_the_config(extra):
    config = make_config(**extra)
    services = compose(config)["services"]
    mlflow_command = services["mlflow"]["command"]
    container_port = flag(mlflow_command, "--port")
    assert services["mlflow"]["ports"] == [f"{config.mlflow_bind_address}:{config.mlflow_port}:{container_port}"]
    # MinIO listens inside on the published ports: the public endpoint URL is valid inside
    # the compose network too (through the network alias).
    api, console = config.minio_api_port, config.minio_console_port
    assert services["minio"]["ports"] == [f"{config.minio_api_bind_address}:{api}:{api}",
                                          f"127.0.0.1:{console}:{console}"]  # console: loopback only
    command = services["minio"]["command"]
    assert command[:2] == ["server", "/data"]
    assert command[command.index("--address") + 1] == f":{api}"
    assert command[command.index("--console-address") + 1] == f":{console}"
    # the health check (`mc ready local`) asks the port MinIO listens on
    assert services["minio"]["environment"]["MC_HOST_local"] == f"http://127.0.0.1:{api}"
    assert services["minio"]["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]


def test_data_volumes_are_the_directories_the_service_account_creates(config):
    services = compose(config)["services"]
    sources = {volume.split(":")[0] for service in services.values() for volume in service.get("volumes", [])}
    config_files = {config.auth_config_file, f"{config.stack_dir}/nginx.conf",
                    *(f"{config.tls_dir}/{name}" for name in ("ca.crt", "server.crt", "server.key"))}
    assert sources - config_files == {f"{config.stack_dir}/data/{name}" for name in DATA_DIRS}


# --- MLflow server ---------------------------------------------------------------------------


def test_mlflow_proxies_artifacts_to_the_bucket(config):
    services = compose(config)["services"]
    for name in config.mlflow_servers:
        command = services[name]["command"]
        assert "--serve-artifacts" in command
        expected = f"s3://{config.minio_bucket}/{config.minio_bucket_prefix}"
        assert flag(command, "--artifacts-destination") == expected
    assert set(config.mlflow_servers) == ({"mlflow", "mlflow-api"} if config.tls != "off" else {"mlflow"})


@pytest.mark.parametrize("settings, api_workers, ui_workers", [
    ({}, 4, 1),                                  # behind the TLS proxy: gunicorn, a connection per request
    ({"tls": "off"}, 1, None),                   # keep-alive clients on uvicorn itself (uvicorn #3149)
    ({"tls": "off", "mlflow_workers": 3}, 3, None),
    ({"mlflow_workers": 2, "mlflow_ui_workers": 3}, 2, 3),
])
def test_workers_default_to_what_the_path_to_them_allows(settings, api_workers, ui_workers):
    services = compose(make_config(**{"mlflow_workers": None, **settings}))["services"]
    api = services["mlflow-api" if ui_workers else "mlflow"]["command"]
    assert flag(api, "--workers") == str(api_workers)
    if ui_workers:
        assert flag(services["mlflow"]["command"], "--workers") == str(ui_workers)


def test_tracking_api_behind_the_proxy_is_the_same_server_under_gunicorn():
    services = compose(make_config())["services"]
    api, ui = services["mlflow-api"], services["mlflow"]
    assert flag(api["command"], "--gunicorn-opts").startswith("--timeout ")
    # MLflow takes the Host check from the environment under gunicorn: the same names as uvicorn's flag.
    assert api["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"] == flag(ui["command"], "--allowed-hosts")
    assert not any(option.startswith("--allowed-hosts") for option in api["command"])  # refused with gunicorn
    for key in ("image", "user", "env_file", "volumes", "labels", "depends_on", "healthcheck"):
        assert api[key] == ui[key], key
    assert {k: v for k, v in api["environment"].items() if k != "MLFLOW_SERVER_ALLOWED_HOSTS"} == ui["environment"]
    assert [o for o in api["command"] if not o.startswith(("--workers", "--gunicorn"))] == \
        [o for o in ui["command"] if not o.startswith(("--workers", "--allowed-hosts"))]
    assert "ports" not in api  # reached through the proxy only


def test_without_tls_one_mlflow_serves_everything():
    services = compose(make_config(tls="off"))["services"]
    assert "mlflow-api" not in services and "proxy" not in services


def test_proxy_sends_the_tracking_api_to_its_server_and_the_rest_to_mlflow():
    nginx = render("nginx.conf.j2", make_config())
    api = nginx.index(f"location {mlflow_api.PATH_PREFIX} {{")
    assert "set $mlflow_api mlflow-api:5000;" in nginx[api:nginx.index("}", api)]
    rest = nginx.index("location / {")
    assert "set $mlflow mlflow:5000;" in nginx[rest:nginx.index("}", rest)]


def test_database_connections_are_pooled_not_opened_per_request():
    env = render("mlflow.env.j2", make_config(mlflow_db_pool_size=4)).splitlines()
    assert "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE=4" in env
    assert "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW=0" in env


def test_no_local_artifact_store_anywhere(config):
    for name, text in rendered_files(config).items():
        assert "file://" not in text, name


def test_allowed_hosts_cover_every_public_name(config):
    command = compose(config)["services"]["mlflow"]["command"]
    allowed = flag(command, "--allowed-hosts").split(",")
    names = {config.inventory_name, config.mlflow_public_host, *config.mlflow_public_names}
    for name in names:
        assert url_host(name) in allowed, name
        assert f"{url_host(name)}:{config.mlflow_port}" in allowed, name
    assert HOST_NAME in allowed
    assert "*" not in allowed


def test_s3_endpoint_in_mlflow_env_is_the_public_minio(config):
    env = env_file(render("mlflow.env.j2", config))
    assert env["MLFLOW_S3_ENDPOINT_URL"] == \
        f"{config.scheme}://{url_host(config.mlflow_public_host)}:{config.minio_api_port}"
    # With TLS MLflow's own S3 calls go through the proxy and trust the deploy's CA.
    assert env.get("AWS_CA_BUNDLE") == (None if config.tls == "off" else "/etc/mlflow-stack/ca.crt")
    assert env["AWS_ACCESS_KEY_ID"] == config.minio_root_user
    assert not any("PASSWORD" in key or "SECRET" in key for key in env)


# --- secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [{}, NON_DEFAULT], ids=["default", "non_default"])
def test_given_passwords_appear_in_no_rendered_file(extra):
    config = make_config(**extra, **GIVEN_SECRETS)
    files = rendered_files(config)
    assert {"compose.yaml", "mlflow.env", "build/Dockerfile", "build/create_bucket.py", "build/migrate_db.py",
            "build/requirements.lock"} <= set(files)
    for name, text in files.items():
        for secret in GIVEN_SECRETS.values():
            assert secret not in text, f"{secret} written into {name}"


def test_passwords_come_from_env_file_interpolation(config):
    services = compose(config)["services"]
    uri = services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    match = re.fullmatch(r"postgresql\+psycopg2://(?P<user>[^:]+):(?P<password>.+)@postgres:5432/(?P<db>\w+)", uri)
    assert match, uri
    assert match["user"] == config.postgres_user and match["db"] == config.postgres_db
    assert INTERPOLATION.fullmatch(match["password"])[1] == "POSTGRES_PASSWORD"
    assert INTERPOLATION.fullmatch(services["postgres"]["environment"]["POSTGRES_PASSWORD"])[1] == "POSTGRES_PASSWORD"
    for name in ("minio",):
        assert INTERPOLATION.fullmatch(services[name]["environment"]["MINIO_ROOT_PASSWORD"])[1] == "MINIO_ROOT_PASSWORD"
    uri = services[MIGRATE]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    match = re.fullmatch(r"postgresql\+psycopg2://(?P<user>[^:]+):(?P<password>.+)@postgres:5432/(?P<db>\w+)", uri)
    assert match and INTERPOLATION.fullmatch(match["password"])[1] == "POSTGRES_PASSWORD", uri
    for name in ("mlflow", BUCKET_INIT):
        secret = services[name]["environment"]["AWS_SECRET_ACCESS_KEY"]
        assert INTERPOLATION.fullmatch(secret)[1] == "MINIO_ROOT_PASSWORD"


def test_interpolated_variables_are_the_ones_the_secrets_step_writes(config):
    referenced = set(INTERPOLATION.findall(compose_file(config)))
    assert referenced == set(secret_values(config))


@pytest.mark.parametrize("service", ["mlflow", MIGRATE])
def test_mlflow_command_line_holds_no_password(config, service):
    command = compose(config)["services"][service]["command"]
    assert isinstance(command, list)
    for item in command:
        assert "PASSWORD" not in item and "${" not in item and "postgresql" not in item, item


# --- the MLflow image ------------------------------------------------------------------------


def lock_pins(lock: bytes) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", lock.decode(), re.M))


def test_dockerfile_pins_versions_and_runs_as_the_stack_account(config):
    context = build_context(config)
    dockerfile = context["Dockerfile"].decode()
    assert re.search(rf"^FROM {re.escape(config.python_image)}$", dockerfile, re.M)
    # the versions are in the lock the image installs, with hashes, nothing besides it
    (install, exporter) = re.findall(r"^RUN pip install (.*)$", dockerfile.replace("\\\n", " "), re.M)
    for command in (install, exporter):
        assert "--require-hashes" in command and "--only-binary=:all:" in command and "==" not in command
    assert install.rstrip().endswith("-r /opt/mlflow-stack/requirements.lock")
    # MLflow's Prometheus exporter from its own lock, nothing else (Flask comes from the release's).
    assert exporter.rstrip().endswith("--no-deps -r /opt/mlflow-stack/exporter.lock")
    assert "COPY requirements.lock /opt/mlflow-stack/requirements.lock" in dockerfile.splitlines()
    assert f'--index-url "{config.pip_index_url}"' in dockerfile
    lock = context["requirements.lock"]
    assert lock == lock_file(config.mlflow_version).read_bytes() == config.mlflow_lock
    pins = lock_pins(lock)
    assert pins["mlflow"] == config.mlflow_version
    assert pins["psycopg2-binary"] == config.mlflow_psycopg2_version
    assert pins["boto3"] == config.mlflow_boto3_version
    # every requirement carries a hash
    requirements = re.split(r"\n(?=\S)", "\n".join(line for line in lock.decode().splitlines()
                                                   if line.strip() and not line.lstrip().startswith("#")))
    assert len(requirements) == len(pins) > 3
    assert all("--hash=sha256:" in requirement for requirement in requirements)
    user_lines = re.findall(r"^USER (.+)$", dockerfile, re.M)
    assert user_lines == [f"{config.stack_uid}:{config.stack_gid}"]


def test_build_context_carries_create_bucket_and_ca_certificates(ca_cert):
    config = make_config(extra_ca_certificates=[ca_cert])
    context = build_context(config)
    programs = {path.name for path in IMAGE_FILES.glob("*.py")}
    assert {"create_bucket.py", "migrate_db.py", "auth_users.py", "artifacts_archive.py", "backup_manifest.py",
            "import_classic.py", "cached_basic_auth.py"} <= programs
    assert set(context) == {"Dockerfile", *programs, "requirements.lock", "exporter.lock",
                            "ca-certificates/corp-root.crt"}
    with open(ca_cert, "rb") as handle:
        assert context["ca-certificates/corp-root.crt"] == handle.read()
    for name in programs:
        assert context[name] == (IMAGE_FILES / name).read_bytes()
    assert context["requirements.lock"] == lock_file(config.mlflow_version).read_bytes()
    assert "COPY *.py /opt/mlflow-stack/" in context["Dockerfile"].decode().splitlines()


def test_image_ref_is_repository_version_and_digest(config):
    ref = mlflow_image_ref(config)
    assert re.fullmatch(rf"{re.escape(config.mlflow_image)}:{re.escape(config.mlflow_version)}-[0-9a-f]{{12}}", ref)


@pytest.mark.parametrize(
    "change, rebuilds",
    [
        (dict(mlflow_version="3.17.1"), True),
        ("lock", True),
        (dict(python_image="python:3.13-slim"), True),
        (dict(stack_uid=10002), True),
        ("ca", True),
        (dict(mlflow_port=5001), False),
        (dict(minio_bucket="other-bucket"), False),
        (dict(mlflow_workers=2), False),
    ],
    ids=["version", "lock", "base", "uid", "ca-cert", "port", "bucket", "workers"],
)
def test_image_ref_changes_only_with_the_image_inputs(change, rebuilds, ca_cert, tmp_path, monkeypatch):
    base = mlflow_image_ref(make_config())
    if change == "lock":
        # the same release, its lock regenerated (e.g. a new boto3 pin): a new tag
        config = make_config()
        (tmp_path / "schema-revisions.json").write_bytes((releases.LOCK_DIR / "schema-revisions.json").read_bytes())
        lock = config.mlflow_lock + b"# regenerated\n"
        (tmp_path / f"mlflow-{config.mlflow_version}.txt").write_bytes(lock)
        monkeypatch.setattr(releases, "LOCK_DIR", tmp_path)
        changed = make_config()
        assert changed.mlflow_lock == lock
    elif change == "ca":
        changed = make_config(extra_ca_certificates=[ca_cert])
    else:
        changed = make_config(**change)
    assert (mlflow_image_ref(changed) != base) is rebuilds
    monkeypatch.undo()
    assert mlflow_image_ref(make_config()) == base  # deterministic


# --- MinIO on the compose network --------------------------------------------------------------


@pytest.mark.parametrize("public_host, aliases", [
    ("mlflow.lab.example.org", ["mlflow.lab.example.org"]),
    (None, [HOST_NAME]),
    ("192.0.2.10", []),
    ("2001:db8::10", []),
], ids=["dns name", "inventory name", "ipv4", "ipv6"])
def test_minio_answers_to_the_public_name_inside_the_network(public_host, aliases):
    config = make_config(mlflow_public_host=public_host, tls="off")
    services = compose(config)["services"]
    assert services["minio"]["networks"] == {"default": {"aliases": aliases}}
    # the MLflow server signs URLs for the public endpoint; by the alias its own S3 traffic
    # reaches the container, on the port MinIO listens on inside
    env = env_file(render("mlflow.env.j2", config))
    assert env["MLFLOW_S3_ENDPOINT_URL"] == config.s3_public_endpoint
    command = services["minio"]["command"]
    assert env["MLFLOW_S3_ENDPOINT_URL"].endswith(command[command.index("--address") + 1])
    # no other service joins another network, so they all share the default one
    for name, service in services.items():
        assert set(service.get("networks", {"default": None})) == {"default"}, name


def test_no_service_name_is_shadowed_by_the_alias(config):
    services = compose(config)["services"]
    assert not set(services["minio"]["networks"]["default"]["aliases"]) & set(services)


def test_bucket_init_reaches_minio_by_its_service_name(config):
    services = compose(config)["services"]
    endpoint = services[BUCKET_INIT]["environment"]["S3_ENDPOINT_URL"]
    assert endpoint == config.s3_internal_endpoint == f"http://minio:{config.minio_api_port}"


def test_template_context_has_the_network_values(config):
    from mlflow_stack.steps.stack_files import template_context

    context = template_context(config)
    assert context["s3_internal_endpoint"] == config.s3_internal_endpoint
    assert context["minio_network_aliases"] == list(config.minio_network_aliases)


def test_non_default_minio_ports_everywhere():
    config = make_config(minio_api_port=19000, minio_console_port=19001, mlflow_public_host="s3.lab.example.org",
                         tls="off")
    minio = compose(config)["services"]["minio"]
    assert minio["command"] == ["server", "/data", "--address", ":19000", "--console-address", ":19001"]
    assert minio["ports"] == ["0.0.0.0:19000:19000", "127.0.0.1:19001:19001"]
    assert minio["environment"]["MC_HOST_local"] == "http://127.0.0.1:19000"
    assert compose(config)["services"][BUCKET_INIT]["environment"]["S3_ENDPOINT_URL"] == "http://minio:19000"
    text = compose_file(config)
    assert ":9000" not in text and ":9001" not in text


# --- the TLS proxy ------------------------------------------------------------------------------


def test_nginx_conf_serves_both_ports_with_tls_and_keeps_the_host_header():
    config = make_config(mlflow_port=8443, minio_api_port=9443, minio_console_port=9444)
    text = render("nginx.conf.j2", config)
    assert "listen 8443 ssl;" in text and "listen 9443 ssl;" in text
    assert "set $mlflow mlflow:5000;" in text and "set $minio minio:9443;" in text
    # SigV4 signs the Host header of a presigned URL; MLflow checks it against --allowed-hosts.
    assert "proxy_set_header Host $http_host;" in text
    assert "ssl_certificate /etc/nginx/tls/server.crt;" in text and "ssl_certificate_key /etc/nginx/tls/server.key;" in text
    assert "client_max_body_size 0;" in text and "proxy_request_buffering off;" in text
    # Runs as the stack account: nothing written outside /tmp.
    assert "pid /tmp/nginx.pid;" in text
    assert "{%" not in (REPO / "templates" / "nginx.conf.j2").read_text()  # a template without logic


def test_the_proxy_s_health_check_asks_both_of_its_ports():
    config = make_config(mlflow_port=8443, minio_api_port=9443, minio_console_port=9444)
    test = compose(config)["services"]["proxy"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "bash", "-c"] and "/dev/tcp/127.0.0.1/8443" in test[3] and "/dev/tcp/127.0.0.1/9443" in test[3]


def test_pools_beyond_the_bundled_database_s_connections_are_refused():
    from mlflow_stack.config import ConfigError, load_config

    from .helpers import HOST_NAME, host_data

    with pytest.raises(ConfigError) as caught:
        load_config(host_data(mlflow_workers=None, mlflow_db_pool_size=7), HOST_NAME, environ={})
    # The tracking API's 4 workers and the UI's 1 (TLS on) each hold pools.
    assert "5 workers x 3 stores x 7 = 105 database connections" in str(caught.value)
    load_config(host_data(mlflow_workers=None, mlflow_db_pool_size=6), HOST_NAME, environ={})  # 90
    load_config(host_data(mlflow_workers=2, mlflow_ui_workers=1, mlflow_db_pool_size=10), HOST_NAME, environ={})  # 90
    load_config(host_data(mlflow_workers=None, tls="off", mlflow_db_pool_size=10), HOST_NAME, environ={})  # 30
