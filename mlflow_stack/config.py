"""Turn pyinfra host data into one validated, typed StackConfig before any operation runs.

Defaults live only in group_data/all.py; this module knows the rules, not the values.
Every problem is reported at once, each naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pyinfra.api import DeployError

from mlflow_stack.services import PORT_SETTINGS, SECRET_FILE_KEYS, SERVICE_NAMES

SUPPORTED_DOCKER_SOURCES = ("official", "distro")
# One hash-locked requirements file per supported MLflow release, and the schema revision
# each release expects (tools/lock_mlflow.py, tools/schema_revisions.py; locks/README.md).
LOCK_DIR = Path(__file__).resolve().parent.parent / "locks"
SCHEMA_REVISIONS: dict[str, str] = json.loads((LOCK_DIR / "schema-revisions.json").read_text())


def lock_file(version: str) -> Path:
    return LOCK_DIR / f"mlflow-{version}.txt"


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


# Releases with both a lock and a known schema revision, oldest first.
SUPPORTED_MLFLOW_VERSIONS = tuple(sorted((v for v in SCHEMA_REVISIONS if lock_file(v).is_file()), key=_version_key))
# Secret setting -> the environment variable that may carry it into a run without putting it
# in a file. The secret settings are the secrets file's keys (services.py) in lower case.
SECRET_ENV_VARS = {key.lower(): f"MLFLOW_STACK_{key}" for key in SECRET_FILE_KEYS}


class ConfigError(DeployError, ValueError):
    """Raised with every problem found in the configuration, one per line. A DeployError,
    so pyinfra prints the message alone instead of a traceback."""


@dataclass(frozen=True)
class StackConfig:
    inventory_name: str
    docker_source: str
    docker_apt_url: str
    docker_log_max_size: str
    docker_log_max_file: int
    docker_live_restore: bool
    docker_image_archives: tuple[str, ...]
    extra_ca_certificates: tuple[str, ...]
    stack_dir: str
    compose_project: str
    stack_user: str
    stack_uid: int
    stack_gid: int
    mlflow_version: str
    mlflow_psycopg2_version: str
    mlflow_boto3_version: str
    mlflow_image: str
    python_image: str
    pip_index_url: str
    mlflow_bind_address: str
    mlflow_port: int
    mlflow_public_host: str
    mlflow_public_names: tuple[str, ...]
    mlflow_workers: int
    mlflow_disable_telemetry: bool
    mlflow_health_timeout: int
    postgres_image: str
    postgres_db: str
    postgres_user: str
    postgres_password: str | None
    minio_image: str
    minio_root_user: str
    minio_root_password: str | None
    minio_api_bind_address: str
    minio_api_port: int
    minio_console_port: int
    minio_bucket: str
    minio_bucket_prefix: str
    rotate_secrets: tuple[str, ...]

    # Derived values, so templates and steps never compute them twice.
    @property
    def data_dir(self) -> str:
        return f"{self.stack_dir}/data"

    @property
    def build_dir(self) -> str:
        return f"{self.stack_dir}/build"

    @property
    def mlflow_lock(self) -> bytes:
        return lock_file(self.mlflow_version).read_bytes()

    @property
    def mlflow_schema_revision(self) -> str:
        """The tracking-database schema revision this MLflow release expects."""
        return SCHEMA_REVISIONS[self.mlflow_version]

    @property
    def backups_dir(self) -> str:
        return f"{self.stack_dir}/backups"

    @property
    def secrets_file(self) -> str:
        # Compose reads .env in the project directory for ${...} interpolation.
        return f"{self.stack_dir}/.env"

    @property
    def tracking_uri(self) -> str:
        return f"http://{_url_host(self.mlflow_public_host)}:{self.mlflow_port}"

    @property
    def s3_public_endpoint(self) -> str:
        return f"http://{_url_host(self.mlflow_public_host)}:{self.minio_api_port}"

    @property
    def s3_internal_endpoint(self) -> str:
        """Where the bucket init reaches MinIO: over the compose network, by service name."""
        return f"http://minio:{self.minio_api_port}"

    @property
    def minio_network_aliases(self) -> tuple[str, ...]:
        """Inside the compose network the public name resolves to MinIO itself, so the MLflow
        server signs URLs for the public endpoint but sends its own S3 traffic straight to the
        container, whatever the name resolves to on the host (or if it resolves nowhere
        there). An IP address cannot be an alias: the server then reaches MinIO through the
        host's published port."""
        return () if _is_ip(self.mlflow_public_host) else (self.mlflow_public_host,)

    @property
    def artifacts_destination(self) -> str:
        return f"s3://{self.minio_bucket}/{self.minio_bucket_prefix}"

    @property
    def allowed_hosts(self) -> tuple[str, ...]:
        """Host headers MLflow accepts: every public name, bare and with the port."""
        names = [self.mlflow_public_host, self.inventory_name, *self.mlflow_public_names]
        names += ["localhost", "127.0.0.1"]
        out: list[str] = []
        for name in names:
            for value in (_url_host(name), f"{_url_host(name)}:{self.mlflow_port}"):
                if value not in out:
                    out.append(value)
        return tuple(out)


def _url_host(name: str) -> str:
    return f"[{name}]" if ":" in name else name


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


# --- validators: each returns an error text (what is allowed) or None ----------------------

Validator = Callable[[Any], "str | None"]

_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?([ab]|rc)?\d*$")
_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_PROJECT = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_IMAGE = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
_REPOSITORY = re.compile(r"^(?:[a-zA-Z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_SIZE = re.compile(r"^\d+[kmg]$")
_PASSWORD = re.compile(r"^[A-Za-z0-9._~-]{12,128}$")
_PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()-]+(?:/[A-Za-z0-9!_.*'()-]+)*$")
# Directories the stack must never be put in (it chowns and fills what it is given).
_UNSAFE_DIRS = {"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc",
                "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib"}


def _typed(kind: type, allowed: str) -> Validator:
    def check(value):
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            return allowed
        if not isinstance(value, kind):
            return allowed
        return None
    return check


def _pattern(regex: re.Pattern, allowed: str) -> Validator:
    return lambda v: None if isinstance(v, str) and regex.match(v) else allowed


def _int_range(low: int, high: int, allowed: str | None = None) -> Validator:
    text = allowed or f"an integer from {low} to {high}"
    return lambda v: None if isinstance(v, int) and not isinstance(v, bool) and low <= v <= high else text


def _one_of(*choices: str) -> Validator:
    text = "one of " + ", ".join(repr(c) for c in choices)
    return lambda v: None if v in choices else text


def _absolute_safe_dir(value) -> str | None:
    allowed = "an absolute path below a dedicated directory, e.g. '/srv/mlflow' (not a system directory, no '..', no trailing '/')"
    if not isinstance(value, str) or not value.startswith("/") or "//" in value or value.endswith("/"):
        return allowed
    parts = value.rstrip("/").split("/")
    if any(p in (".", "..") for p in parts) or not re.match(r"^[A-Za-z0-9/._-]+$", value):
        return allowed
    if value.rstrip("/") in _UNSAFE_DIRS or value == "/":
        return allowed
    return None


def _address(value) -> str | None:
    try:
        ipaddress.ip_address(value)
    except (ValueError, TypeError):
        return "an IP address to bind to, e.g. '0.0.0.0' or '127.0.0.1'"
    return None


def _host_name(value) -> str | None:
    if isinstance(value, str):
        try:
            ipaddress.ip_address(value)
            return None
        except ValueError:
            if _HOSTNAME.match(value):
                return None
    return "a DNS name or IP address"


def _url(value) -> str | None:
    if isinstance(value, str) and re.match(r"^https?://[^\s/$.?#][^\s]*$", value):
        return None
    return "an http:// or https:// URL"


def _bucket(value) -> str | None:
    allowed = ("an S3 bucket name: 3-63 characters of lowercase letters, digits, '.' and '-', "
               "starting and ending with a letter or digit, not an IP address, no '..'")
    if not isinstance(value, str) or not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", value):
        return allowed
    if ".." in value or ".-" in value or "-." in value or value.startswith("xn--"):
        return allowed
    if re.match(r"^\d+\.\d+\.\d+\.\d+$", value):
        return allowed
    return None


def _optional_password(value) -> str | None:
    if value is None:
        return None
    return _pattern(_PASSWORD, "None (generate on the host) or 12-128 characters of A-Z a-z 0-9 . _ ~ -")(value)


def _list_of(item: Validator, allowed: str) -> Validator:
    def check(value):
        if not isinstance(value, (list, tuple)) or any(item(v) for v in value):
            return allowed
        return None
    return check


def _local_files(value) -> str | None:
    allowed = "a list of paths to existing local files"
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        return allowed
    missing = [v for v in value if not Path(v).is_file()]
    if missing:
        return f"{allowed} (not found: {', '.join(missing)})"
    return None


ROTATABLE_SECRETS = tuple(SECRET_ENV_VARS)


def _split_names(value) -> list | None:
    """A list, or the comma-separated string `pyinfra --data key=a,b` passes."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    return None


def _rotate_list(value) -> str | None:
    names = _split_names(value)
    if names is None or any(name not in ROTATABLE_SECRETS for name in names):
        return "a list (or comma-separated string) of " + ", ".join(repr(n) for n in ROTATABLE_SECRETS)
    return None


RULES: dict[str, Validator] = {
    "docker_source": _one_of(*SUPPORTED_DOCKER_SOURCES),
    "docker_apt_url": _url,
    "docker_log_max_size": _pattern(_SIZE, "a size like '10m' (digits then k, m or g)"),
    "docker_log_max_file": _int_range(1, 100),
    "docker_live_restore": _typed(bool, "True or False"),
    "docker_image_archives": _local_files,
    "extra_ca_certificates": _local_files,
    "stack_dir": _absolute_safe_dir,
    "compose_project": _pattern(_PROJECT, "lowercase letters, digits, '_' and '-', starting with a letter or digit"),
    "stack_user": _pattern(_NAME, "a user name: lowercase letter or '_' first, then lowercase letters, digits, '_' or '-' (max 32)"),
    "stack_uid": _int_range(1000, 59999, "an integer from 1000 to 59999 (outside system and reserved ranges)"),
    "stack_gid": _int_range(1000, 59999, "an integer from 1000 to 59999 (outside system and reserved ranges)"),
    "mlflow_version": lambda v: None if v in SUPPORTED_MLFLOW_VERSIONS else (
        f"a supported release from {SUPPORTED_MLFLOW_VERSIONS[0]} to {SUPPORTED_MLFLOW_VERSIONS[-1]}, one of "
        f"{', '.join(SUPPORTED_MLFLOW_VERSIONS)} (each has a lock in locks/; locks/README.md says how to add one)"),
    "mlflow_psycopg2_version": _pattern(_VERSION, "a release version like '2.9.11'"),
    "mlflow_boto3_version": _pattern(_VERSION, "a release version like '1.44.8'"),
    "mlflow_image": _pattern(_REPOSITORY, "an image repository without tag, e.g. 'mlflow-stack/mlflow'"),
    "python_image": _pattern(_IMAGE, "an image reference like 'python:3.12-slim'"),
    "pip_index_url": _url,
    "mlflow_bind_address": _address,
    "mlflow_port": _int_range(1, 65535),
    "mlflow_public_host": lambda v: None if v is None else _host_name(v),
    "mlflow_public_names": _list_of(_host_name, "a list of DNS names or IP addresses"),
    "mlflow_workers": _int_range(1, 64),
    "mlflow_disable_telemetry": _typed(bool, "True or False"),
    "mlflow_health_timeout": _int_range(10, 3600),
    "postgres_image": _pattern(_IMAGE, "an image reference like 'postgres:17'"),
    "postgres_db": _pattern(_IDENT, "letters, digits and '_', starting with a letter or '_' (max 63)"),
    "postgres_user": _pattern(_IDENT, "letters, digits and '_', starting with a letter or '_' (max 63)"),
    "postgres_password": _optional_password,
    "minio_image": _pattern(_IMAGE, "an image reference like 'minio/minio:RELEASE.2025-09-07T16-13-09Z'"),
    "minio_root_user": _pattern(re.compile(r"^[A-Za-z0-9_-]{3,64}$"), "3-64 characters of letters, digits, '_' and '-'"),
    "minio_root_password": _optional_password,
    "minio_api_bind_address": _address,
    "minio_api_port": _int_range(1, 65535),
    "minio_console_port": _int_range(1, 65535),
    "minio_bucket": _bucket,
    "minio_bucket_prefix": _pattern(_PREFIX, "a key prefix like 'artifacts' (no leading or trailing '/', no empty parts)"),
    "rotate_secrets": _rotate_list,
}
CONFIG_KEYS = tuple(RULES)
_TUPLE_KEYS = {"docker_image_archives", "extra_ca_certificates", "mlflow_public_names", "rotate_secrets"}


def load_config(data: dict[str, Any], inventory_name: str, environ: dict[str, str] | None = None) -> StackConfig:
    """Validate host data (all keys of group_data/all.py plus overrides) into a StackConfig."""
    environ = os.environ if environ is None else environ
    errors: list[str] = []
    values: dict[str, Any] = {}

    for key, rule in RULES.items():
        if key not in data:
            errors.append(f"{key}: missing (is group_data/all.py in place next to the inventory?)")
            continue
        value = data[key]
        if key in SECRET_ENV_VARS and value is None and environ.get(SECRET_ENV_VARS[key]):
            value = environ[SECRET_ENV_VARS[key]]
            problem = rule(value)
            if problem:  # never echo a secret
                errors.append(f"{key} (from ${SECRET_ENV_VARS[key]}): invalid; must be {problem}")
                continue
        else:
            problem = rule(value)
            if problem:
                shown = "<hidden>" if key in SECRET_ENV_VARS else repr(value)
                errors.append(f"{key} = {shown}: must be {problem}")
                continue
        if key == "rotate_secrets":
            value = _split_names(value)
        values[key] = tuple(value) if key in _TUPLE_KEYS else value

    errors += _typo_errors(data)
    errors += _cross_errors(values, inventory_name)
    if errors:
        raise ConfigError("invalid MLflow stack configuration:\n  - " + "\n  - ".join(errors))

    values["mlflow_public_host"] = values["mlflow_public_host"] or inventory_name
    return StackConfig(inventory_name=inventory_name, **values)


def _typo_errors(data: dict[str, Any]) -> list[str]:
    """Unknown keys close to a known one are almost always typos that would be ignored silently."""
    errors = []
    for key in data:
        if key in RULES or key.startswith("_"):
            continue
        close = difflib.get_close_matches(key, CONFIG_KEYS, n=1, cutoff=0.85)
        if close:
            errors.append(f"{key}: unknown setting; did you mean {close[0]!r}?")
    return errors


def _cross_errors(values: dict[str, Any], inventory_name: str) -> list[str]:
    errors = []
    # In the order of the settings: the later of two equal ports is the one reported.
    ports = [(key, port) for key, port in values.items() if key in PORT_SETTINGS]
    seen: dict[int, str] = {}
    for key, port in ports:
        if port in seen:
            errors.append(f"{key} = {port}: clashes with {seen[port]} = {port}; each published port must differ")
        seen.setdefault(port, key)
    if values.get("stack_user") == "root":
        errors.append("stack_user = 'root': must be a dedicated unprivileged account")
    # A public name equal to a service name would shadow that service on the compose network.
    public_host = values.get("mlflow_public_host") or inventory_name
    if public_host.lower() in (*SERVICE_NAMES, "localhost"):
        errors.append(f"mlflow_public_host = {public_host!r} (or the inventory name): clients on other machines "
                      "cannot use it, and on the compose network it names a container; use the server's DNS name "
                      "or IP address")
    if "mlflow_version" in values:
        pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", lock_file(values["mlflow_version"]).read_text(), re.M))
        for key, package in (("mlflow_psycopg2_version", "psycopg2-binary"), ("mlflow_boto3_version", "boto3")):
            if key in values and pins.get(package) != values[key]:
                errors.append(f"{key} = {values[key]!r}: locks/mlflow-{values['mlflow_version']}.txt pins {package} "
                              f"{pins.get(package)}; regenerate the lock with that version (locks/README.md) or "
                              "keep the pinned one")
    for key in values.get("rotate_secrets", ()):
        if values.get(key) is not None:
            errors.append(f"rotate_secrets names {key!r}, which is given (in the config or ${SECRET_ENV_VARS[key]}): "
                          f"rotate it by giving a new value, or set {key} = None to have one generated")
    return errors


def config_from_host() -> StackConfig:
    """The validated config of the host being planned (for steps run on their own)."""
    from pyinfra import host

    return load_config(host.data.dict(), host.name)
