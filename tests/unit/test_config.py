"""Config validation: the defaults load, and every bad value is named, shown and explained."""

from __future__ import annotations

import ast
import re
import runpy

import pytest

from mlflow_stack.config import CONFIG_KEYS, ConfigError, StackConfig, load_config
from mlflow_stack.config.settings import SECRET_ENV_VARS
from mlflow_stack.config.releases import (AUTH_PASSWORD_FROM_ENVIRONMENT_SINCE, SCHEMA_REVISIONS, SUPPORTED_MLFLOW_VERSIONS,
                                         lock_file, version_key)
from mlflow_stack.services import SERVICE_NAMES
from mlflow_stack.config.settings import DEFAULTS

from .helpers import (HOST_NAME, MISSING, REPO, defaults, host_data, make_config,
                      without_auth_before_the_environment_password)

PORT_RANGE = "an integer from 1 to 65535"
ID_RANGE = "an integer from 1000 to 59999"
SAFE_DIR = "an absolute path below a dedicated directory"
BUCKET = "an S3 bucket name: 3-63 characters"
PASSWORD_RULE = "12-128 characters of A-Z a-z 0-9 . _ ~ -"
VERSION_RULE = "a supported release from 3.5.0 to 3.17.2"
ROTATE_RULE = "a list (or comma-separated string) of 'postgres_password', 'minio_root_password'"


def config_error(overrides: dict, environ: dict | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(host_data(**overrides), HOST_NAME, environ=environ or {})
    return str(caught.value)


# --- the defaults ----------------------------------------------------------------------------


def group_data_examples() -> dict:
    """The commented-out `# key = value` lines of group_data/all.py."""
    lines = (REPO / "group_data" / "all.py").read_text().splitlines()
    pairs = (re.fullmatch(r"# ([a-z0-9_]+) = (.+)", line) for line in lines)
    return {m[1]: ast.literal_eval(m[2]) for m in pairs if m}


def test_group_data_all_ships_without_overrides():
    # the defaults are the package's (mlflow_stack/config/settings.py, docs/configuration.md); a fresh checkout runs them
    namespace = runpy.run_path(str(REPO / "group_data" / "all.py"))
    assert {key for key in namespace if not key.startswith("_")} == set()


def test_group_data_examples_are_settings_and_together_a_valid_config():
    examples = group_data_examples()
    assert len(examples) >= 5 and set(examples) <= set(CONFIG_KEYS), examples
    config = make_config(**examples)
    for key, value in examples.items():
        assert getattr(config, key) == (tuple(value) if isinstance(value, list) else value) != DEFAULTS[key], key


def test_defaults_load_into_a_stack_config():
    data = defaults()
    config = load_config(data, HOST_NAME, environ={})
    assert isinstance(config, StackConfig)
    assert config.inventory_name == HOST_NAME
    for key in CONFIG_KEYS:
        value = getattr(config, key)
        if key == "mlflow_public_host" and data[key] is None:
            assert value == HOST_NAME  # None means: the inventory name
        elif isinstance(data[key], list):
            assert value == tuple(data[key])  # frozen: lists become tuples
        else:
            assert value == data[key], key


def test_a_key_the_host_data_leaves_out_takes_its_default_and_a_given_one_wins():
    config = load_config(host_data(postgres_user=MISSING, mlflow_port=8080), HOST_NAME, environ={})
    assert config.postgres_user == DEFAULTS["postgres_user"] == "mlflow"
    assert config.mlflow_port == 8080 != DEFAULTS["mlflow_port"]


def test_empty_host_data_is_the_defaults(default_config):
    assert load_config({}, HOST_NAME, environ={}) == default_config


def test_config_is_frozen(default_config):
    with pytest.raises(AttributeError):
        default_config.mlflow_port = 1  # type: ignore[misc]


def test_derived_values_follow_the_inputs():
    config = make_config(stack_dir="/opt/stack", minio_bucket="bkt", minio_bucket_prefix="p/q",
                         mlflow_public_host="2001:db8::1", mlflow_port=8080, minio_api_port=9100, tls="off")
    assert config.data_dir == "/opt/stack/data"
    assert config.secrets_file == "/opt/stack/.env"
    assert config.artifacts_destination == "s3://bkt/p/q"
    assert config.tracking_uri == "http://[2001:db8::1]:8080"
    assert config.s3_public_endpoint == "http://[2001:db8::1]:9100"
    # With TLS (the default) the proxy answers on the same ports, under the same names.
    config = make_config(mlflow_public_host="2001:db8::1", mlflow_port=8080, minio_api_port=9100)
    assert config.tracking_uri == "https://[2001:db8::1]:8080"
    assert config.s3_public_endpoint == "https://[2001:db8::1]:9100"
    assert "[2001:db8::1]:8080" in config.allowed_hosts and HOST_NAME in config.allowed_hosts


@pytest.mark.parametrize(
    "overrides",
    [
        dict(mlflow_port=1), dict(mlflow_port=65535), dict(stack_uid=1000, stack_gid=59999),
        dict(minio_bucket="abc"), dict(minio_bucket="a" * 63), dict(minio_bucket="my-bucket.v2"),
        dict(mlflow_version="3.5.0", mlflow_auth=False), dict(mlflow_version="3.17.2"), dict(stack_dir="/srv/mlflow-2"), dict(mlflow_bind_address="::"),
        dict(postgres_image="registry.example.org:5000/lib/postgres:17@sha256:" + "a" * 64),
        dict(mlflow_public_names=["10.1.2.3", "ml.internal"]),
        dict(rotate_secrets=[]), dict(rotate_secrets=["postgres_password"]),
        dict(rotate_secrets=["minio_root_password", "postgres_password"]),
        # a service name is fine as an extra name: only the public host becomes a network alias
        dict(mlflow_public_names=["minio", "postgres"]),
    ],
    ids=str,
)
def test_boundary_values_are_accepted(overrides):
    config = make_config(**overrides)
    for key, value in overrides.items():
        assert getattr(config, key) == (tuple(value) if isinstance(value, list) else value)


# --- one bad value at a time -----------------------------------------------------------------

# (overrides, substrings the message must contain). Each names the key, shows the value and
# says what is allowed.
BAD = {
    "port as str": (dict(mlflow_port="5000"), ["mlflow_port = '5000'", PORT_RANGE]),
    "bool for int": (dict(docker_log_max_file=True), ["docker_log_max_file = True", "an integer from 1 to 100"]),
    "bool for port": (dict(minio_api_port=False), ["minio_api_port = False", PORT_RANGE]),
    "int for str": (dict(postgres_db=5), ["postgres_db = 5", "letters, digits and '_'"]),
    "int for image": (dict(minio_image=17), ["minio_image = 17", "an image reference"]),
    "str for bool": (dict(docker_live_restore="yes"), ["docker_live_restore = 'yes'", "True or False"]),
    "port 0": (dict(mlflow_port=0), ["mlflow_port = 0", PORT_RANGE]),
    "port 70000": (dict(minio_api_port=70000), ["minio_api_port = 70000", PORT_RANGE]),
    "console port 65536": (dict(minio_console_port=65536), ["minio_console_port = 65536", PORT_RANGE]),
    "port clash": (dict(mlflow_port=9000, minio_api_port=9000),
                   ["minio_api_port = 9000", "clashes with mlflow_port = 9000", "must differ"]),
    "console clash": (dict(minio_console_port=5000, mlflow_port=5000),
                      ["minio_console_port = 5000", "clashes with mlflow_port", "must differ"]),
    "docker_source": (dict(docker_source="snap"), ["docker_source = 'snap'", "one of 'official', 'distro'"]),
    "version latest": (dict(mlflow_version="latest"), ["mlflow_version = 'latest'", VERSION_RULE]),
    "version 3.x": (dict(mlflow_version="3.x"), ["mlflow_version = '3.x'", VERSION_RULE]),
    "boto3 version": (dict(mlflow_boto3_version="1"), ["mlflow_boto3_version = '1'", "a release version like"]),
    "relative stack_dir": (dict(stack_dir="srv/mlflow"), ["stack_dir = 'srv/mlflow'", SAFE_DIR]),
    "stack_dir /": (dict(stack_dir="/"), ["stack_dir = '/'", SAFE_DIR]),
    "stack_dir /etc": (dict(stack_dir="/etc"), ["stack_dir = '/etc'", SAFE_DIR, "not a system directory"]),
    "stack_dir /srv/": (dict(stack_dir="/srv/"), ["stack_dir = '/srv/'", SAFE_DIR]),
    "stack_dir ..": (dict(stack_dir="/srv/../etc"), ["stack_dir = '/srv/../etc'", "no '..'"]),
    "stack_dir //": (dict(stack_dir="/srv//x"), ["stack_dir = '/srv//x'", SAFE_DIR]),
    "bucket empty": (dict(minio_bucket=""), ["minio_bucket = ''", BUCKET]),
    "bucket short": (dict(minio_bucket="ab"), ["minio_bucket = 'ab'", BUCKET]),
    "bucket upper": (dict(minio_bucket="Upper"), ["minio_bucket = 'Upper'", "lowercase letters"]),
    "bucket underscore": (dict(minio_bucket="has_underscore"), ["minio_bucket = 'has_underscore'", BUCKET]),
    "bucket ip": (dict(minio_bucket="192.168.1.1"), ["minio_bucket = '192.168.1.1'", "not an IP address"]),
    "bucket ..": (dict(minio_bucket="a..b"), ["minio_bucket = 'a..b'", "no '..'"]),
    "bucket 64": (dict(minio_bucket="b" * 64), [f"minio_bucket = '{'b' * 64}'", BUCKET]),
    "bucket prefix": (dict(minio_bucket_prefix="/artifacts"), ["minio_bucket_prefix = '/artifacts'", "no leading"]),
    "uid 0": (dict(stack_uid=0), ["stack_uid = 0", ID_RANGE]),
    "uid 999": (dict(stack_uid=999), ["stack_uid = 999", ID_RANGE]),
    "uid 70000": (dict(stack_uid=70000), ["stack_uid = 70000", ID_RANGE]),
    "gid 999": (dict(stack_gid=999), ["stack_gid = 999", ID_RANGE]),
    "typo mlflow_prot": (dict(mlflow_prot=5001), ["mlflow_prot: unknown setting", "did you mean 'mlflow_port'"]),
    "typo postgress_image": (dict(postgress_image="postgres:16"),
                             ["postgress_image: unknown setting", "did you mean 'postgres_image'"]),
    "image uppercase": (dict(postgres_image="Postgres:17"), ["postgres_image = 'Postgres:17'", "an image reference"]),
    "image space": (dict(python_image="python:3.12 slim"), ["python_image = 'python:3.12 slim'", "an image reference"]),
    "image empty": (dict(minio_image=""), ["minio_image = ''", "an image reference"]),
    "repository with tag": (dict(mlflow_image="mlflow-stack/mlflow:1.0"),
                            ["mlflow_image = 'mlflow-stack/mlflow:1.0'", "without tag"]),
    "bind hostname": (dict(mlflow_bind_address="localhost"), ["mlflow_bind_address = 'localhost'", "an IP address"]),
    "bind bad ip": (dict(minio_api_bind_address="300.1.1.1"), ["minio_api_bind_address = '300.1.1.1'", "an IP address"]),
    "public names str": (dict(mlflow_public_names="a.example.org"),
                         ["mlflow_public_names = 'a.example.org'", "a list of DNS names"]),
    "public name bad": (dict(mlflow_public_names=["ok.example.org", "bad name"]), ["'bad name'", "a list of DNS names"]),
    "public host": (dict(mlflow_public_host="under_score.example"), ["mlflow_public_host = 'under_score.example'",
                                                                     "a DNS name or IP address"]),
    "apt url": (dict(docker_apt_url="ftp://mirror/docker"), ["docker_apt_url = 'ftp://mirror/docker'", "an http://"]),
    "log size": (dict(docker_log_max_size="10MB"), ["docker_log_max_size = '10MB'", "a size like '10m'"]),
    "workers 0": (dict(mlflow_workers=0), ["mlflow_workers = 0", "an integer from 1 to 64"]),
    "archive missing": (dict(docker_image_archives=["/nonexistent/img.tar"]),
                        ["docker_image_archives", "not found: /nonexistent/img.tar"]),
    "ca missing": (dict(extra_ca_certificates=["/nonexistent/ca.pem"]),
                   ["extra_ca_certificates", "existing local files"]),
    "user root": (dict(stack_user="root"), ["stack_user = 'root'", "dedicated unprivileged account"]),
    "user upper": (dict(stack_user="MLflow"), ["stack_user = 'MLflow'", "a user name"]),
    "project": (dict(compose_project="My Stack"), ["compose_project = 'My Stack'", "lowercase letters"]),
    "rotate unknown name": (dict(rotate_secrets=["postgres"]), ["rotate_secrets = ['postgres']", ROTATE_RULE]),
    "rotate unknown in str": (dict(rotate_secrets="postgres_password,admin_password"),
                              ["rotate_secrets = 'postgres_password,admin_password'", ROTATE_RULE]),
    "rotate int": (dict(rotate_secrets=5), ["rotate_secrets = 5", ROTATE_RULE]),
    "rotate dict": (dict(rotate_secrets={"postgres_password": True}), ["rotate_secrets = {", ROTATE_RULE]),
    "public host minio": (dict(mlflow_public_host="minio"),
                          ["mlflow_public_host = 'minio'", "on the compose network it names a container"]),
    "public host mlflow": (dict(mlflow_public_host="mlflow"),
                           ["mlflow_public_host = 'mlflow'", "on the compose network it names a container"]),
}


@pytest.mark.parametrize("overrides, expected", list(BAD.values()), ids=list(BAD))
def test_bad_value_is_named_shown_and_explained(overrides, expected):
    message = config_error(overrides)
    assert message.startswith("invalid MLflow stack configuration:")
    for text in expected:
        assert text in message, f"{text!r} not in:\n{message}"


def test_table_is_large_enough():
    assert len(BAD) >= 25


# --- secrets -----------------------------------------------------------------------------------

BAD_SECRETS = {
    "postgres too short": ("postgres_password", "Sh0rtSecret"),
    "postgres bad chars": ("postgres_password", "pass word with spaces!"),
    "minio too long": ("minio_root_password", "L" * 129),
    "minio wrong type": ("minio_root_password", 123456789012345),
}


@pytest.mark.parametrize("key, secret", list(BAD_SECRETS.values()), ids=list(BAD_SECRETS))
def test_bad_secret_in_config_is_hidden(key, secret):
    message = config_error({key: secret})
    assert f"{key} = <hidden>" in message
    assert PASSWORD_RULE in message
    assert str(secret) not in message
    assert repr(secret) not in message


# The external S3's secret key has its own rule (tests/unit/test_external.py).
@pytest.mark.parametrize("key", sorted(set(SECRET_ENV_VARS) - {"s3_secret_access_key"}))
def test_bad_secret_from_environment_is_hidden(key):
    variable = SECRET_ENV_VARS[key]
    secret = "tinyS3cret"  # 10 characters: too short
    message = config_error({}, environ={variable: secret})
    assert key in message and f"${variable}" in message
    assert PASSWORD_RULE in message
    assert secret not in message


def test_postgres_env_var_name_is_the_documented_one():
    assert SECRET_ENV_VARS["postgres_password"] == "MLFLOW_STACK_POSTGRES_PASSWORD"
    assert SECRET_ENV_VARS["minio_root_password"] == "MLFLOW_STACK_MINIO_ROOT_PASSWORD"


def test_password_given_in_config_is_used():
    given = "Given-Passw0rd.123"
    config = make_config(postgres_password=given, minio_root_password=given[::-1])
    assert config.postgres_password == given
    assert config.minio_root_password == given[::-1]


def test_config_password_wins_over_environment():
    given = "FromConfigFile123"
    config = make_config(environ={"MLFLOW_STACK_POSTGRES_PASSWORD": "FromEnvironment456"}, postgres_password=given)
    assert config.postgres_password == given


def test_env_var_used_when_config_is_none():
    secret = "FromEnvironment_42"
    config = make_config(environ={"MLFLOW_STACK_POSTGRES_PASSWORD": secret})
    assert config.postgres_password == secret
    assert config.minio_root_password is None  # its variable is unset: generated on the host


def test_no_secret_anywhere_means_generate_on_host(default_config):
    assert default_config.postgres_password is None
    assert default_config.minio_root_password is None


def test_load_config_reads_os_environ_by_default(monkeypatch):
    secret = "OsEnvironSecret99"
    monkeypatch.setenv("MLFLOW_STACK_MINIO_ROOT_PASSWORD", secret)
    config = load_config(host_data(), HOST_NAME)
    assert config.minio_root_password == secret


# --- several problems at once -------------------------------------------------------------------


def test_every_problem_is_reported_at_once():
    overrides = dict(mlflow_port="x", minio_bucket="Bad_Bucket", stack_uid=5, docker_source="snap",
                     mlflow_prot=1, postgres_password="short")
    message = config_error(overrides)
    lines = [line for line in message.splitlines() if line.startswith("  - ")]
    assert len(lines) == len(overrides), message
    for key in overrides:
        assert any(line.startswith(f"  - {key}") for line in lines), f"{key} not reported:\n{message}"
    assert "short" not in message.replace("postgres_password = <hidden>", "")


def test_unrelated_unknown_keys_are_ignored():
    # pyinfra's own host data (ssh_user, ...) sits next to the stack's keys.
    config = make_config(ssh_user="admin", _private=1)
    assert config.mlflow_port == defaults()["mlflow_port"]


# --- rotate_secrets ------------------------------------------------------------------------------


def test_rotate_secrets_defaults_to_nothing(default_config):
    assert defaults()["rotate_secrets"] == []
    assert default_config.rotate_secrets == ()


@pytest.mark.parametrize("value, expected", [
    ("postgres_password", ("postgres_password",)),
    ("postgres_password,minio_root_password", ("postgres_password", "minio_root_password")),
    (" minio_root_password , postgres_password ", ("minio_root_password", "postgres_password")),
    ("", ()),
    (["minio_root_password"], ("minio_root_password",)),
    (("postgres_password",), ("postgres_password",)),
], ids=["one", "comma-separated", "spaces", "empty string", "list", "tuple"])
def test_rotate_secrets_accepts_a_list_or_the_string_pyinfra_data_passes(value, expected):
    # `pyinfra --data rotate_secrets=a,b` hands the deploy the string "a,b"
    assert make_config(rotate_secrets=value).rotate_secrets == expected


@pytest.mark.parametrize("key", sorted(SECRET_ENV_VARS))
def test_rotating_a_given_secret_is_refused(key):
    given = "Given-Secret.0123456"
    message = config_error({key: given, "rotate_secrets": [key]})
    assert f"rotate_secrets names {key!r}, which is given (in the config or" in message
    assert f"set {key} = None" in message
    assert given not in message


def test_rotating_a_secret_given_through_the_environment_is_refused():
    given = "FromEnvironment_42"
    message = config_error({"rotate_secrets": "postgres_password"},
                           environ={"MLFLOW_STACK_POSTGRES_PASSWORD": given})
    assert "rotate_secrets names 'postgres_password'" in message
    assert given not in message


def test_rotating_the_generated_one_next_to_a_given_one_is_fine():
    config = make_config(postgres_password="Given-Secret.0123456", rotate_secrets="minio_root_password")
    assert config.rotate_secrets == ("minio_root_password",)


def test_rotation_errors_come_with_the_others():
    message = config_error(dict(rotate_secrets=["postgres_password"], postgres_password="Given-Secret.0123456",
                                mlflow_public_host="postgres", mlflow_port=0))
    lines = [line for line in message.splitlines() if line.startswith("  - ")]
    assert len(lines) == 3, message


# --- the public host and the compose network -----------------------------------------------------


@pytest.mark.parametrize("name", (*SERVICE_NAMES, "localhost", "MinIO"))
def test_public_host_equal_to_a_service_name_is_refused(name):
    message = config_error({"mlflow_public_host": name})
    assert f"mlflow_public_host = {name!r} (or the inventory name): clients on other machines cannot use it, and on the compose network it names a container" in message


@pytest.mark.parametrize("name", (*SERVICE_NAMES, "localhost", "MinIO"))
def test_inventory_name_equal_to_a_service_name_is_refused_when_it_is_the_public_host(name):
    with pytest.raises(ConfigError, match="on the compose network it names a container"):
        load_config(host_data(), name, environ={})
    # with a public host of its own the inventory name is only a Host header
    config = load_config(host_data(mlflow_public_host="mlflow.lab.example.org"), name, environ={})
    assert config.public_name_aliases == ("mlflow.lab.example.org",)


def test_service_names_are_the_compose_services():
    from mlflow_stack.services import LONG_RUNNING_SERVICES, ON_DEMAND_SERVICES, ONESHOT_SERVICES

    # Every service of a server of its own, and a cluster balancer's.
    assert set(SERVICE_NAMES) == {*ONESHOT_SERVICES, *LONG_RUNNING_SERVICES, *ON_DEMAND_SERVICES, "balancer"}
    assert "migrate-db" in SERVICE_NAMES


@pytest.mark.parametrize("public_host, aliases", [
    (None, (HOST_NAME,)),
    ("mlflow.lab.example.org", ("mlflow.lab.example.org",)),
    ("tracking", ("tracking",)),
    ("192.0.2.10", ()),
    ("2001:db8::1", ()),
], ids=["inventory name", "dns name", "short name", "ipv4", "ipv6"])
def test_minio_network_alias_is_the_public_host_when_it_is_a_name(public_host, aliases):
    assert make_config(mlflow_public_host=public_host, tls="off").minio_network_aliases == aliases
    # With TLS the name is the proxy's, in front of MinIO.
    with_tls = make_config(mlflow_public_host=public_host)
    assert with_tls.proxy_network_aliases == aliases and with_tls.minio_network_aliases == ()


def test_inventory_ip_gives_no_alias():
    config = load_config(host_data(), "192.0.2.7", environ={})
    assert config.mlflow_public_host == "192.0.2.7"
    assert config.minio_network_aliases == ()


@pytest.mark.parametrize("port", [9000, 9100])
def test_s3_internal_endpoint_is_the_minio_service_on_its_api_port(port):
    config = make_config(minio_api_port=port, mlflow_public_host="mlflow.lab.example.org", tls="off")
    assert config.s3_internal_endpoint == f"http://minio:{port}"
    assert config.s3_public_endpoint == f"http://mlflow.lab.example.org:{port}"
    with_tls = make_config(minio_api_port=port, mlflow_public_host="mlflow.lab.example.org")
    assert with_tls.s3_internal_endpoint == f"http://minio:{port}"
    assert with_tls.s3_public_endpoint == f"https://mlflow.lab.example.org:{port}"


# --- supported MLflow releases, their locks and schema revisions ----------------------------------


@pytest.mark.parametrize("version", ["3.4.0", "3.18.0", "2.22.5", "3.1.0", "3.17.3", "3.16"])
def test_mlflow_version_outside_the_supported_range_is_refused_with_the_range(version):
    message = config_error({"mlflow_version": version})
    assert f"mlflow_version = {version!r}: must be {VERSION_RULE}" in message
    assert ", ".join(SUPPORTED_MLFLOW_VERSIONS) in message  # every supported one, listed
    assert "locks/README.md" in message
    # an unsupported version does not also trip the companion check (no lock to read)
    assert len([line for line in message.splitlines() if line.startswith("  - ")]) == 1, message


def test_supported_range_is_the_locks():
    assert SUPPORTED_MLFLOW_VERSIONS[0] == "3.5.0" and SUPPORTED_MLFLOW_VERSIONS[-1] == "3.17.2"
    assert defaults()["mlflow_version"] == SUPPORTED_MLFLOW_VERSIONS[-1]
    keys = [tuple(int(part) for part in v.split(".")) for v in SUPPORTED_MLFLOW_VERSIONS]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)  # oldest first, by number


@pytest.mark.parametrize("version", SUPPORTED_MLFLOW_VERSIONS)
def test_every_supported_release_has_a_lock_and_a_schema_revision(version):
    assert lock_file(version).is_file()
    assert re.fullmatch(r"[0-9a-f]{12,}", SCHEMA_REVISIONS[version]), SCHEMA_REVISIONS[version]
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", lock_file(version).read_text(), re.M))
    assert pins["mlflow"] == version
    config = make_config(mlflow_version=version, **without_auth_before_the_environment_password(version))
    assert config.mlflow_schema_revision == SCHEMA_REVISIONS[version]
    assert config.mlflow_lock == lock_file(version).read_bytes()


def test_every_lock_in_locks_is_supported():
    locks = {path.name[len("mlflow-"):-len(".txt")] for path in (REPO / "locks").glob("mlflow-*.txt")}
    assert locks == set(SUPPORTED_MLFLOW_VERSIONS) == set(SCHEMA_REVISIONS)


@pytest.mark.parametrize("version, revision", [("3.16.1", "b7e2c1a4d9f3"), ("3.17.2", "dc11669786a5")])
def test_schema_revision_of_a_release(version, revision):
    assert make_config(mlflow_version=version).mlflow_schema_revision == revision


@pytest.mark.parametrize("key, package, value", [
    ("mlflow_psycopg2_version", "psycopg2-binary", "2.9.10"),
    ("mlflow_boto3_version", "boto3", "1.44.9"),
])
@pytest.mark.parametrize("version", ["3.16.1", "3.17.2"])
def test_companion_version_differing_from_the_lock_is_refused(key, package, value, version):
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", lock_file(version).read_text(), re.M))[package]
    assert pinned != value
    message = config_error({"mlflow_version": version, key: value})
    assert f"{key} = {value!r}: locks/mlflow-{version}.txt pins {package} {pinned}" in message
    assert "locks/README.md" in message


def test_both_companions_differing_are_reported_at_once():
    message = config_error({"mlflow_psycopg2_version": "2.9.10", "mlflow_boto3_version": "1.40.1"})
    lines = [line for line in message.splitlines() if line.startswith("  - ")]
    assert len(lines) == 2 and "mlflow_psycopg2_version" in lines[0] and "mlflow_boto3_version" in lines[1]


def test_derived_upgrade_paths():
    config = make_config(stack_dir="/opt/stack")
    assert config.backups_dir == "/opt/stack/backups"


@pytest.mark.parametrize("version", [v for v in SUPPORTED_MLFLOW_VERSIONS
                                     if version_key(v) < version_key(AUTH_PASSWORD_FROM_ENVIRONMENT_SINCE)])
def test_a_release_whose_basic_auth_needs_the_password_in_its_file_is_refused_with_auth_on(version):
    # MLflow 3.5.0-3.16.0 crashed at start with KeyError: 'admin_password' (measured 2026-12-06):
    # refused before anything changes, naming both ways out; without authentication it runs.
    with pytest.raises(ConfigError, match=rf"mlflow_version = '{re.escape(version)}' with mlflow_auth = True: .* use "
                                          rf"{re.escape(AUTH_PASSWORD_FROM_ENVIRONMENT_SINCE)} or newer, or mlflow_auth = False"):
        load_config(host_data(mlflow_version=version), HOST_NAME, environ={})
    assert load_config(host_data(mlflow_version=version, mlflow_auth=False), HOST_NAME, environ={}).mlflow_version == version


def test_every_release_since_the_environment_password_keeps_auth_on():
    newer = [v for v in SUPPORTED_MLFLOW_VERSIONS if version_key(v) >= version_key(AUTH_PASSWORD_FROM_ENVIRONMENT_SINCE)]
    assert "3.17.2" in newer and "3.16.1" in newer
    for version in newer:
        assert load_config(host_data(mlflow_version=version), HOST_NAME, environ={}).mlflow_auth is True

