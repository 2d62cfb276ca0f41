"""External PostgreSQL and S3: the service model per topology, the files rendered for it, the
settings refused, and the plan (facts in, commands out)."""

from __future__ import annotations

import re

import pytest
import yaml

from mlflow_stack.verbs import backup
from mlflow_stack.verbs import restore
from mlflow_stack.steps import schedules
from mlflow_stack.steps import stack
from mlflow_stack.config import ConfigError
from mlflow_stack.services import data_dirs, port_settings, secret_keys, stack_services
from mlflow_stack.steps.stack_files import compose_file, render

from .helpers import make_config
from .plan import plan
from .test_plan import all_steps, converged_facts, fresh_facts

DB = dict(postgres_external_host="db.example.org", postgres_external_port=6432, postgres_db="lab",
          postgres_user="lab_mlflow", postgres_password="Db-Given.Secret_0123")
S3 = dict(s3_endpoint_url="https://s3.example.org", s3_region="eu-central-1", s3_access_key="LABKEY",
          s3_secret_access_key="abc/DEF+ghi=123", minio_bucket="lab-artifacts", minio_bucket_prefix="mlflow",
          tls="off")  # the TLS proxy fronts the bundled MinIO only (refused with an external S3)
START = "Build the MLflow image and start the stack"
TOPOLOGIES = {"bundled": {}, "external-db": DB, "external-s3": S3, "both": {**DB, **S3}}


def short(name: str) -> str:
    """An operation's own name, without its deploy's."""
    return name.rsplit(" | ", 1)[-1]


# --- The service model per topology ------------------------------------------------------------


@pytest.mark.parametrize("database, s3, names, ports, secrets, dirs", [
    (False, False, ["postgres", "minio", "create-bucket", "migrate-db", "mlflow", "jobs"],
     ["minio_api_port", "minio_console_port", "mlflow_port"],
     ["POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"],
     {"postgres": "700", "minio": "750", "mlruns": "750"}),
    (True, False, ["minio", "create-bucket", "migrate-db", "mlflow", "jobs"],
     ["minio_api_port", "minio_console_port", "mlflow_port"],
     ["MINIO_ROOT_PASSWORD", "POSTGRES_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"],
     {"minio": "750", "mlruns": "750"}),
    (False, True, ["postgres", "migrate-db", "mlflow", "jobs"], ["mlflow_port"],
     ["POSTGRES_PASSWORD", "S3_SECRET_ACCESS_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"],
     {"postgres": "700", "mlruns": "750"}),
    (True, True, ["migrate-db", "mlflow", "jobs"], ["mlflow_port"],
     ["POSTGRES_PASSWORD", "S3_SECRET_ACCESS_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"],
     {"mlruns": "750"}),
])
def test_service_model_per_topology(database, s3, names, ports, secrets, dirs):
    services = stack_services(external_database=database, external_s3=s3)
    assert [service.name for service in services] == names
    assert list(port_settings(services)) == ports
    assert list(secret_keys(services)) == secrets
    assert data_dirs(services) == dirs


def test_ca_files_are_mounted_where_the_backend_is_reached():
    services = {s.name: s for s in stack_services(True, True, postgres_ca="pg.crt", s3_ca="s3.crt")}
    assert [(f.name, f.mount) for f in services["migrate-db"].config_files] == [
        ("pg.crt", "/etc/mlflow-stack/postgres-ca.crt")]
    assert [(f.name, f.mount) for f in services["mlflow"].config_files] == [
        ("auth.ini", "/etc/mlflow-stack/auth.ini"), ("pg.crt", "/etc/mlflow-stack/postgres-ca.crt"),
        ("s3.crt", "/etc/mlflow-stack/s3-ca.crt")]
    # a CA file without its external backend mounts nothing
    bundled = {s.name: s for s in stack_services(postgres_ca="pg.crt", s3_ca="s3.crt")}
    assert [f.name for f in bundled["mlflow"].config_files] == ["auth.ini"]


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_config_picks_the_topology_by_its_switches(topology):
    config = make_config(**TOPOLOGIES[topology])
    assert config.external_database == (topology in ("external-db", "both"))
    assert config.external_s3 == (topology in ("external-s3", "both"))
    assert config.services == stack_services(config.external_database, config.external_s3, tls=config.tls != "off")


# --- Rendered files --------------------------------------------------------------------------


def compose(config) -> dict:
    return yaml.safe_load(compose_file(config))


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_compose_has_the_topology_services_and_only_their_dependencies(topology):
    config = make_config(**TOPOLOGIES[topology])
    services = compose(config)["services"]
    assert list(services) == list(config.service_names)
    for name, service in services.items():
        assert set(service.get("depends_on", {})) <= set(services), name


def test_external_database_uri_in_compose_and_auth_ini():
    config = make_config(**DB, postgres_sslmode="require")
    uri = ("postgresql+psycopg2://lab_mlflow:${POSTGRES_PASSWORD:?missing in .env; rerun the deploy}"
           "@db.example.org:6432/lab?sslmode=require")
    services = compose(config)["services"]
    assert services["migrate-db"]["environment"]["MLFLOW_BACKEND_STORE_URI"] == uri
    assert services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"] == uri
    assert "depends_on" not in services["migrate-db"]
    assert list(services["mlflow"]["depends_on"]) == ["create-bucket", "migrate-db"]
    assert "database_uri = postgresql+psycopg2://lab_mlflow@db.example.org:6432/lab?sslmode=require\n" in \
        render("auth.ini.j2", config)


def test_external_database_with_a_ca_verifies_it(tmp_path):
    ca = tmp_path / "db-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    config = make_config(**DB, postgres_sslmode="verify-full", postgres_ca_file=str(ca))
    services = compose(config)["services"]
    assert services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].endswith(
        "/lab?sslmode=verify-full&sslrootcert=/etc/mlflow-stack/postgres-ca.crt")
    mount = f"{config.stack_dir}/{config.postgres_ca_name}:/etc/mlflow-stack/postgres-ca.crt:ro"
    assert mount in services["migrate-db"]["volumes"] and mount in services["mlflow"]["volumes"]
    # named by content: another CA is another file (and mount), never an edit of the one in use
    first = config.postgres_ca_name
    assert re.fullmatch(r"postgres-ca-[0-9a-f]{12}\.crt", first)
    ca.write_text("-----BEGIN CERTIFICATE-----\nother\n")
    assert make_config(**DB, postgres_sslmode="verify-full", postgres_ca_file=str(ca)).postgres_ca_name != first


def test_external_s3_in_compose_and_mlflow_env(tmp_path):
    ca = tmp_path / "s3-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    config = make_config(**S3, s3_addressing_style="virtual", s3_ca_file=str(ca))
    services = compose(config)["services"]
    mlflow = services["mlflow"]
    assert mlflow["environment"]["AWS_SECRET_ACCESS_KEY"] == "${S3_SECRET_ACCESS_KEY:?missing in .env; rerun the deploy}"
    assert "--artifacts-destination=s3://lab-artifacts/mlflow" in mlflow["command"]
    assert list(mlflow["depends_on"]) == ["postgres", "migrate-db"]
    assert f"{config.stack_dir}/{config.s3_ca_name}:/etc/mlflow-stack/s3-ca.crt:ro" in mlflow["volumes"]
    env = render("mlflow.env.j2", config).splitlines()
    for line in ("MLFLOW_S3_ENDPOINT_URL=https://s3.example.org", "AWS_ACCESS_KEY_ID=LABKEY",
                 "AWS_DEFAULT_REGION=eu-central-1", "MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE=virtual",
                 "AWS_CA_BUNDLE=/etc/mlflow-stack/s3-ca.crt"):
        assert line in env
    assert S3["s3_secret_access_key"] not in compose_file(config) + "\n".join(env)


# --- Settings refused ------------------------------------------------------------------------


def config_error(environ=None, **overrides) -> str:
    with pytest.raises(ConfigError) as error:
        make_config(environ=environ, **overrides)
    return str(error.value)


@pytest.mark.parametrize("overrides, expected", [
    ({"postgres_external_host": "db.example.org"}, "postgres_password: required with postgres_external_host"),
    ({**DB, "postgres_sslmode": "verify-full"}, "postgres_sslmode = 'verify-full' needs postgres_ca_file"),
    ({**DB, "postgres_sslmode": "on"}, "postgres_sslmode = 'on': must be one of 'disable'"),
    ({**DB, "postgres_external_host": "db example"}, "postgres_external_host = 'db example': must be a DNS name"),
    ({"postgres_ca_file": __file__}, "postgres_ca_file: only used with postgres_external_host"),
    ({**DB, "postgres_ca_file": "/no/such/ca.pem"}, "not found: /no/such/ca.pem"),
    ({"s3_endpoint_url": "https://s3.example.org"}, "s3_access_key: required with s3_endpoint_url"),
    ({"s3_endpoint_url": "https://s3.example.org", "s3_access_key": "K3Y"},
     "s3_secret_access_key: required with s3_endpoint_url"),
    ({**S3, "s3_endpoint_url": "s3.example.org"}, "s3_endpoint_url = 's3.example.org': must be None or an http://"),
    ({**S3, "s3_addressing_style": "auto"}, "s3_addressing_style = 'auto': must be one of 'path', 'virtual'"),
    ({**S3, "s3_region": "EU"}, "s3_region = 'EU': must be a region name"),
    ({"s3_access_key": "K3Y"}, "s3_access_key: only used with s3_endpoint_url"),
    ({**DB, "postgres_external_host": "127.0.0.1"}, "postgres_external_host names '127.0.0.1': inside the stack's"),
    ({**S3, "s3_endpoint_url": "http://localhost:9000"}, "s3_endpoint_url names 'localhost': inside the stack's"),
    ({**S3, "tls": "self-signed"}, "tls = 'self-signed' with s3_endpoint_url: the TLS proxy fronts the bundled MinIO"),
])
def test_bad_external_settings_are_refused_with_what_is_wrong(overrides, expected):
    assert expected in config_error(**overrides)


def test_bad_s3_secret_key_is_never_shown():
    secret = "has space$"
    message = config_error(**{**S3, "s3_secret_access_key": secret})
    assert "s3_secret_access_key = <hidden>" in message and secret not in message
    message = config_error(environ={"MLFLOW_STACK_S3_SECRET_ACCESS_KEY": secret},
                           **{**S3, "s3_secret_access_key": None})
    assert "$MLFLOW_STACK_S3_SECRET_ACCESS_KEY" in message and secret not in message


def test_secrets_from_the_environment_satisfy_the_external_backends():
    environ = {"MLFLOW_STACK_POSTGRES_PASSWORD": "Env-Db.Secret_0123", "MLFLOW_STACK_S3_SECRET_ACCESS_KEY": "env/Key+1"}
    config = make_config(environ=environ, **{**DB, **S3, "postgres_password": None, "s3_secret_access_key": None})
    assert config.postgres_password == "Env-Db.Secret_0123" and config.s3_secret_access_key == "env/Key+1"


def test_published_ports_of_an_absent_minio_may_clash():
    make_config(**S3, minio_api_port=5000)  # MinIO is not run: its port is not published
    assert "minio_api_port = 5000: clashes with mlflow_port" in config_error(minio_api_port=5000)


# --- The plan: facts in, commands out ---------------------------------------------------------


def converged(config) -> dict:
    """As a run leaves the host; with an external backend there is no backup timer."""
    facts = converged_facts(config)
    for unit in ("service", "timer"):
        facts["File"].pop(f"/etc/systemd/system/mlflow-backup.{unit}")
    facts["SystemdStatus"].pop("mlflow-backup.timer")
    facts["SystemdEnabled"].pop("mlflow-backup.timer")
    return facts


@pytest.mark.parametrize("topology", ("external-db", "external-s3", "both"))
def test_fresh_host_checks_the_backends_before_it_starts_the_stack(topology):
    config = make_config(**TOPOLOGIES[topology])
    result = plan(all_steps, config, fresh_facts())
    names = [short(op.name) for op in result.ops if op.commands]
    check = names.index("Check the external backends from the host")
    assert check < names.index("Start the stack (a service is not healthy)")
    command = result.op(f"{START} | Check the external backends from the host").commands[0]
    assert command.startswith(f"sh {config.stack_dir}/check-backends.sh --stack-dir {config.stack_dir} --project mlflow")
    assert ("--database yes" in command) == config.external_database
    assert ("--s3 " + config.minio_bucket in command) == config.external_s3
    text = result.text()
    assert DB["postgres_password"] not in text and S3["s3_secret_access_key"] not in text
    assert f"{config.stack_dir}/check_backends.py" in result.uploads
    if config.external_database:
        assert f"sh {config.stack_dir}/apply-db-password.sh" not in text
        assert f"{config.data_dir}/postgres" not in text
    if config.external_s3:
        assert f"{config.data_dir}/minio" not in text
    # the backup timer covers the bundled backends only
    assert "Stop and disable mlflow-backup.timer (no schedule set)" in names or \
        "mlflow-backup.timer" not in " ".join(names)


@pytest.mark.parametrize("topology", ("external-db", "external-s3", "both"))
def test_converged_host_plans_nothing(topology):
    config = make_config(**TOPOLOGIES[topology])
    result = plan(all_steps, config, converged(config))
    assert result.changing == {}


@pytest.mark.parametrize("topology", ("external-db", "both"))
def test_unchecked_inputs_are_checked_then_the_stack_brought_up(topology):
    """.backends-checked stale (a failed check left new secrets behind): check, then start."""
    config = make_config(**TOPOLOGIES[topology])
    facts = {**converged(config), "BackendsChecked": False}
    result = plan(all_steps, config, facts)
    assert [short(name) for name in result.changing] == [
        "Check the external backends from the host", "Start the stack", "Wait until every service is healthy"]
    wait = result.op(f"{START} | Wait until every service is healthy").commands[0]
    assert wait.endswith("".join(f" --oneshot {name}" for name in config.started_oneshots)
                         + "".join(f" --service {name}" for name in config.started_long_running))
    assert "postgres" not in wait


def test_bundled_host_is_never_checked():
    config = make_config()
    result = plan(stack.start_stack, config, fresh_facts())
    assert "Check the external backends from the host" not in [short(op.name) for op in result.ops]
    assert ("BackendsChecked", None) not in result.asked


@pytest.mark.parametrize("topology", ("external-db", "external-s3"))
@pytest.mark.parametrize("step", ("backup", "restore"))
def test_backup_and_restore_refuse_external_backends(topology, step):
    config = make_config(**TOPOLOGIES[topology], restore_from="host:/srv/backups/x")
    with pytest.raises(Exception) as error:
        if step == "backup":
            plan(backup.back_up, config, converged_facts(config))
        else:
            plan(restore.refuse_to_overwrite, config, converged_facts(config))
    message = str(error.value)
    assert f"{step}.py covers the bundled PostgreSQL and MinIO only" in message
    assert "Nothing was changed" in message


def test_schedule_is_off_with_an_external_backend():
    config = make_config(**DB)
    result = plan(schedules.schedule_backups, config, converged(config))
    assert "Stop and disable mlflow-backup.timer (no schedule set)" in [short(op.name) for op in result.ops]
