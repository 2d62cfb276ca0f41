"""Turn pyinfra host data into one validated, frozen StackConfig before any operation runs.

Each setting's default, rule and doc live in settings.py; a key the host data leaves out takes
its default. This module applies those rules and the ones that tie several settings together.
Every problem is reported at once, each naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import os
import re
from dataclasses import field, make_dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pyinfra.api import DeployError

from mlflow_stack.cluster import SHARED_SECRETS, STANDALONE, Cluster, ClusterError, cluster_of
from mlflow_stack.releases import SCHEMA_REVISIONS, lock_file
from mlflow_stack.services import BUILT_IMAGE, POSTGRES_CA_MOUNT, S3_CA_MOUNT, SERVICE_NAMES, Service, port_settings, stack_services
from mlflow_stack.settings import HIDDEN_SETTINGS, PASSED_SECRET_ENV_VARS, SECRET_ENV_VARS, SETTINGS
from mlflow_stack.certificates import tls_errors
from mlflow_stack.checks import is_database_uri

CONFIG_KEYS = tuple(setting.name for setting in SETTINGS)


# MLflow opens a pool per store (tracking, model registry, users) in each worker.
STORES_PER_WORKER = 3
# The bundled PostgreSQL's max_connections (its default), less room for backups, gc and the deploy.
BUNDLED_DATABASE_CONNECTIONS = 90


def worker_count(workers: int | None, tls: str) -> int:
    """Behind the TLS proxy, which opens a connection per request, several workers serve in
    parallel; clients keeping connections to uvicorn itself (no proxy, or a cluster's balancer)
    hit its ~44 ms delay with more than one."""
    return workers if workers is not None else (4 if tls != "off" else 1)


class ConfigError(DeployError, ValueError):
    """Raised with every problem found in the configuration, one per line. A DeployError,
    so pyinfra prints the message alone instead of a traceback."""


class _DerivedValues:
    """Values derived from the settings, so templates and steps never compute them twice."""

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
        return self.backup_dir or f"{self.stack_dir}/backups"

    @property
    def secrets_file(self) -> str:
        # Compose reads .env in the project directory for ${...} interpolation.
        return f"{self.stack_dir}/.env"

    @property
    def auth_config_file(self) -> str:
        return f"{self.stack_dir}/auth.ini"

    @property
    def users_file(self) -> str:
        """Passwords of mlflow_auth_users, by user name (root, 0600; compose does not read it)."""
        return f"{self.stack_dir}/users.env"

    @property
    def mlflow_app_options(self) -> tuple[str, ...]:
        return ("--app-name=basic-auth",) if self.mlflow_auth else ()

    @property
    def mlflow_worker_count(self) -> int:
        return worker_count(self.mlflow_workers, self.tls)

    @property
    def scheme(self) -> str:
        """With TLS the proxy answers on the published ports, under the same names."""
        return "http" if self.tls == "off" else "https"

    @property
    def tracking_uri(self) -> str:
        return f"{self.scheme}://{_url_host(self.mlflow_public_host)}:{self.mlflow_port}"

    @property
    def external_database(self) -> bool:
        return self.postgres_external_host is not None

    @property
    def external_s3(self) -> bool:
        return self.s3_endpoint_url is not None

    @property
    def services(self) -> tuple[Service, ...]:
        """The services this host runs (services.py), by which backends are external."""
        return stack_services(self.external_database, self.external_s3, postgres_ca=self.postgres_ca_name,
                              s3_ca=self.s3_ca_name, tls=self.tls != "off", role=self.role)

    @property
    def builds_mlflow_image(self) -> bool:
        return any(service.image == BUILT_IMAGE for service in self.services)

    @property
    def role(self) -> str:
        """standalone, or the host's part of a cluster (cluster.py)."""
        return self.cluster.role

    @property
    def keeps_cluster_state(self) -> bool:
        """Whether this host runs what a cluster must run once: the user store's sync, gc (a
        standalone server, or the cluster's first tracking server)."""
        return self.role == STANDALONE or (self.role == "tracking" and self.cluster.leader.name == self.inventory_name)

    @property
    def cluster_extra_hosts(self) -> tuple[str, ...]:
        """compose `extra_hosts` of a tracking server: the balancer's public name, where MLflow's
        own S3 calls go (the name need not be in the DNS the containers ask)."""
        if self.role != "tracking" or not self.cluster.balancers or _is_ip(self.cluster.public_host):
            return ()
        return (f"{self.cluster.public_host}:{self.cluster.balancers[0].address}",)

    @property
    def balancer_upstreams(self) -> tuple[str, ...]:
        """address:port of each tracking server, for the balancer."""
        return tuple(f"{member.address}:{self.mlflow_port}" for member in self.cluster.tracking_servers)

    @property
    def balancer_s3_upstream(self) -> str | None:
        """The data host's S3 API, which the balancer fronts (None: no data host)."""
        data_host = self.cluster.data_host
        return f"{data_host.address}:{self.minio_api_port}" if data_host else None

    @property
    def firewall_sources(self) -> tuple[str, ...]:
        """Who may reach a data host's published ports: the tracking servers and the balancer."""
        return tuple(dict.fromkeys(m.address for m in (*self.cluster.tracking_servers, *self.cluster.balancers)))

    @property
    def firewall_ports(self) -> tuple[int, ...]:
        """The host ports a data host publishes to the cluster."""
        return (self.postgres_port, self.minio_api_port) if self.role == "data" else ()

    @property
    def postgres_ca_name(self) -> str | None:
        return _content_name("postgres-ca", self.postgres_ca_file)

    @property
    def s3_ca_name(self) -> str | None:
        return _content_name("s3-ca", self.s3_ca_file)

    @property
    def service_names(self) -> tuple[str, ...]:
        return tuple(service.name for service in self.services)

    @property
    def database_address(self) -> str:
        """host:port of the database as MLflow reaches it: the compose service, or the external server."""
        if self.external_database:
            return f"{_url_host(self.postgres_external_host)}:{self.postgres_external_port}"
        return "postgres:5432"

    @property
    def database_uri_without_password(self) -> str:
        """The tracking database for tools run inside the MLflow container (gc): libpq takes the
        password from PGPASSWORD there, so no command line carries it."""
        return f"postgresql+psycopg2://{self.postgres_user}@{self.database_address}/{self.postgres_db}{self.database_uri_options}"

    @property
    def database_uri_options(self) -> str:
        """The backend URI's query: TLS to an external database (the bundled one is on the compose network)."""
        if not self.external_database:
            return ""
        ca = f"&sslrootcert={POSTGRES_CA_MOUNT}" if self.postgres_ca_file else ""
        return f"?sslmode={self.postgres_sslmode}{ca}"

    @property
    def s3_access_key_id(self) -> str:
        return self.s3_access_key if self.external_s3 else self.minio_root_user

    @property
    def s3_secret_reference(self) -> str:
        """The compose interpolation of the S3 secret key (kept in the secrets file)."""
        key = "S3_SECRET_ACCESS_KEY" if self.external_s3 else "MINIO_ROOT_PASSWORD"
        return f"${{{key}:?missing in .env; rerun the deploy}}"

    @property
    def mlflow_s3_env(self) -> tuple[str, ...]:
        """Extra mlflow.env lines for MLflow's own S3 client: an external S3's addressing and CA;
        for the bundled MinIO with TLS, the proxy's CA (mlflow_tls_env)."""
        if not self.external_s3:
            return self.mlflow_tls_env
        lines = [f"MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE={self.s3_addressing_style}"]
        if self.s3_ca_file:
            lines.append(f"AWS_CA_BUNDLE={S3_CA_MOUNT}")
        return tuple(lines)

    @property
    def internal_tracking_uri(self) -> str:
        """Where a one-off container on the compose network (the classic import) reaches MLflow."""
        return "http://mlflow:5000"

    @property
    def s3_public_endpoint(self) -> str:
        if self.external_s3:
            return self.s3_endpoint_url
        return f"{self.scheme}://{_url_host(self.mlflow_public_host)}:{self.minio_api_port}"

    @property
    def tls_dir(self) -> str:
        """The proxy's certificate and key, and the CA certificate MLflow trusts."""
        return f"{self.stack_dir}/tls"

    @property
    def ca_dir(self) -> str:
        """The self-signed CA's key (root, 0700): mounted into no container."""
        return f"{self.stack_dir}/ca"

    @property
    def tls_names(self) -> tuple[str, ...]:
        """Names the server certificate covers: the public host first."""
        return tuple(dict.fromkeys((self.mlflow_public_host, *self.mlflow_public_names)))

    @property
    def ca_local_path(self) -> str | None:
        """The CA certificate on the control machine that clients (and the smoke test) trust."""
        if self.tls == "self-signed":
            return os.path.join(self.tls_ca_local_dir, self.inventory_name, "ca.crt")
        return self.tls_ca_file if self.tls == "files" else None

    @property
    def mlflow_tls_env(self) -> tuple[str, ...]:
        """mlflow.env lines: with TLS, MLflow's own S3 calls go to the public name through the
        proxy and trust its CA."""
        return () if self.tls == "off" else ("AWS_CA_BUNDLE=/etc/mlflow-stack/ca.crt",)

    @property
    def s3_internal_endpoint(self) -> str:
        """Where the bucket init reaches MinIO: over the compose network, by service name."""
        return f"http://minio:{self.minio_api_port}"

    @property
    def public_name_aliases(self) -> tuple[str, ...]:
        """Inside the compose network the public name resolves to MinIO itself (with TLS: to
        the proxy in front of it), so the MLflow server signs URLs for the public endpoint but
        sends its own S3 traffic to the container, whatever the name resolves to on the host
        (or if it resolves nowhere there). An IP address cannot be an alias: the server then
        reaches MinIO through the host's published port."""
        return () if _is_ip(self.mlflow_public_host) else (self.mlflow_public_host,)

    @property
    def minio_network_aliases(self) -> tuple[str, ...]:
        return self.public_name_aliases if self.tls == "off" else ()

    @property
    def proxy_network_aliases(self) -> tuple[str, ...]:
        return () if self.tls == "off" else self.public_name_aliases

    @property
    def artifacts_destination(self) -> str:
        return f"s3://{self.minio_bucket}/{self.minio_bucket_prefix}"

    @property
    def allowed_hosts(self) -> tuple[str, ...]:
        """Host headers MLflow accepts: every public name, bare and with the port."""
        names = [self.mlflow_public_host, self.inventory_name, *self.mlflow_public_names]
        if self.role == "tracking" and self.cluster.public_host:  # the balancer keeps the Host header
            names.append(self.cluster.public_host)
        # "mlflow": the service's name on the compose network (internal_tracking_uri).
        names += ["localhost", "127.0.0.1", "mlflow"]
        out: list[str] = []
        for name in names:
            for value in (_url_host(name), f"{_url_host(name)}:{self.mlflow_port}"):
                if value not in out:
                    out.append(value)
        return tuple(out)


# One field per setting, in the table's order, plus the inventory name: a new setting needs no
# edit here. Frozen: no step can change what was validated.
StackConfig = make_dataclass("StackConfig", ["inventory_name", *CONFIG_KEYS,
                                            ("cluster", Cluster, field(default=Cluster(STANDALONE)))],
                             bases=(_DerivedValues,), frozen=True, namespace={"__module__": __name__})


def _content_name(stem: str, path: str | None) -> str | None:
    """The name a local file is uploaded under, by its content: a new CA is a new file and a new
    mount (so only a restart after the backend check uses it), never an edit of the file the
    running containers read."""
    if path is None:
        return None
    return f"{stem}-{hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]}.crt"


def _url_host(name: str) -> str:
    return f"[{name}]" if ":" in name else name


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def load_config(data: dict[str, Any], inventory_name: str, environ: dict[str, str] | None = None,
                cluster: Cluster | None = None) -> StackConfig:
    """Validate host data (overrides of the settings' defaults) into a StackConfig; `cluster`:
    the host's part of a cluster (cluster.py), None for a server of its own."""
    environ = os.environ if environ is None else environ
    cluster = cluster or Cluster(STANDALONE)
    errors: list[str] = []
    values: dict[str, Any] = {}
    env_vars = {**SECRET_ENV_VARS, **PASSED_SECRET_ENV_VARS}

    for setting in SETTINGS:
        key = setting.name
        value = data.get(key, setting.default)
        if key in env_vars and value is None and environ.get(env_vars[key]):
            value = environ[env_vars[key]]
            problem = setting.check(value)
            if problem:  # never echo a secret
                errors.append(f"{key} (from ${env_vars[key]}): invalid; must be {problem}")
                continue
        else:
            problem = setting.check(value)
            if problem:
                # A URI with a password in it (user:password@) is never echoed either.
                hidden = key in HIDDEN_SETTINGS or re.search(r"://[^/@\s]*:[^/@\s]*@", str(value))
                shown = "<hidden>" if hidden else repr(value)
                errors.append(f"{key} = {shown}: must be {problem}")
                continue
        values[key] = setting.read(value) if setting.read else value

    errors += _typo_errors(data)
    errors += _cluster_errors(data, values, cluster)
    if not errors and cluster.role == "tracking" and cluster.data_host:
        values.update(_data_host_backends(values, cluster))
    errors += _cross_errors(values, inventory_name, cluster.role)
    if errors:
        raise ConfigError("invalid MLflow stack configuration:\n  - " + "\n  - ".join(errors))

    values["mlflow_public_host"] = values["mlflow_public_host"] or inventory_name
    return StackConfig(inventory_name=inventory_name, cluster=cluster, **values)


def _data_host_backends(values: dict[str, Any], cluster: Cluster) -> dict[str, Any]:
    """A tracking server's backends are the data host's PostgreSQL and MinIO, the latter by the
    balancer's name, as clients see it in presigned URLs (cluster_extra_hosts)."""
    return {"postgres_external_host": cluster.data_host.address, "postgres_external_port": values["postgres_port"],
            "s3_endpoint_url": f"http://{_url_host(cluster.public_host)}:{values['minio_api_port']}",
            "s3_access_key": values["minio_root_user"], "s3_secret_access_key": values["minio_root_password"]}


def _cluster_errors(data: dict[str, Any], values: dict[str, Any], cluster: Cluster) -> list[str]:
    if cluster.role == STANDALONE:
        return []
    errors = []
    if values.get("tls", "off") != "off":
        errors.append(f"tls = {values['tls']!r} in a cluster: TLS at the balancer is not built yet; set tls = 'off' "
                      "for the cluster's groups (group_data/<group>.py) and keep the cluster on a trusted network")
    for key in SHARED_SECRETS.get(cluster.role, ()):
        if key in values and values[key] is None:
            errors.append(f"{key}: required in a cluster (every member needs the same value, none can be generated "
                          f"on one host); set it in group_data or ${SECRET_ENV_VARS[key]}")
    if cluster.role == "data":
        for key in ("postgres_external_host", "s3_endpoint_url"):
            if data.get(key) is not None:
                errors.append(f"{key}: a data host runs the bundled PostgreSQL and MinIO; leave it unset there")
    if cluster.role == "tracking" and cluster.data_host:
        for key in ("postgres_external_host", "s3_endpoint_url", "s3_access_key", "s3_secret_access_key"):
            if data.get(key) is not None:
                errors.append(f"{key}: set by the cluster (the data host {cluster.data_host.name}); leave it unset, "
                              "or take the host out of mlflow_data_hosts to use external backends")
    if cluster.role == "tracking" and not cluster.data_host:
        for key in ("postgres_external_host", "s3_endpoint_url"):
            if values.get(key) is None:
                errors.append(f"{key}: required for a tracking server when the inventory has no data host "
                              "(mlflow_data_hosts)")
    return errors


def _typo_errors(data: dict[str, Any]) -> list[str]:
    """Unknown keys close to a known one are almost always typos that would be ignored silently."""
    errors = []
    for key in data:
        if key in CONFIG_KEYS or key.startswith("_"):
            continue
        close = difflib.get_close_matches(key, CONFIG_KEYS, n=1, cutoff=0.85)
        if close:
            errors.append(f"{key}: unknown setting; did you mean {close[0]!r}?")
    return errors


def _cross_errors(values: dict[str, Any], inventory_name: str, role: str = STANDALONE) -> list[str]:
    errors = _external_errors(values)
    published = port_settings(stack_services(values.get("postgres_external_host") is not None,
                                             values.get("s3_endpoint_url") is not None, role=role))
    # In the order of the settings: the later of two equal ports is the one reported.
    ports = [(key, port) for key, port in values.items() if key in published]
    seen: dict[int, str] = {}
    for key, port in ports:
        if port in seen:
            errors.append(f"{key} = {port}: clashes with {seen[port]} = {port}; each published port must differ")
        seen.setdefault(port, key)
    if values.get("stack_user") == "root":
        errors.append("stack_user = 'root': must be a dedicated unprivileged account")
    if values.get("uninstall_data") is True and values.get("uninstall_confirm") != inventory_name:
        errors.append(f"uninstall_data = True deletes the database, objects, backups and secrets of {inventory_name}: "
                      f"confirm with uninstall_confirm = {inventory_name!r}")
    if values.get("postgres_external_host") is None and isinstance(values.get("mlflow_db_pool_size"), int) \
            and isinstance(values.get("mlflow_workers", 1), (int, type(None))):
        workers = worker_count(values.get("mlflow_workers"), values.get("tls", "off"))
        connections = workers * STORES_PER_WORKER * values["mlflow_db_pool_size"]
        if connections > BUNDLED_DATABASE_CONNECTIONS:
            errors.append(f"mlflow_db_pool_size = {values['mlflow_db_pool_size']}: {workers} workers x "
                          f"{STORES_PER_WORKER} stores x {values['mlflow_db_pool_size']} = {connections} database "
                          f"connections, more than the bundled PostgreSQL allows MLflow "
                          f"({BUNDLED_DATABASE_CONNECTIONS}); lower it or mlflow_workers")
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
    admin = values.get("mlflow_auth_admin_user")
    if admin and any(user.name == admin for user in values.get("mlflow_auth_users", ())):
        errors.append(f"mlflow_auth_users names {admin!r}, the mlflow_auth_admin_user: the deploy keeps that account "
                      "through mlflow_auth_admin_password; list other users only")
    # MLflow (3.17) treats default_permission as a floor under every grant: a lower grant does nothing.
    ranks = {name: rank for rank, name in enumerate(("NO_PERMISSIONS", "READ", "EDIT", "MANAGE"))}
    default = values.get("mlflow_auth_default_permission")
    for user in values.get("mlflow_auth_users", ()):
        if default and user.permission in ranks and ranks[user.permission] < ranks[default]:
            errors.append(f"mlflow_auth_users gives {user.name!r} {user.permission}, less than "
                          f"mlflow_auth_default_permission = {default!r}: MLflow never grants less than the default; "
                          f"lower the default (e.g. 'NO_PERMISSIONS') or raise the user's permission")
    errors += tls_errors(values, public_host)
    if is_database_uri(values.get("classic_backend_store")) and values.get("classic_artifact_root") is None:
        errors.append("classic_artifact_root: required when classic_backend_store is a database URI (the old "
                      "server's artifact directory on this host)")
    for key in values.get("rotate_secrets", ()):
        if values.get(key) is not None:
            errors.append(f"rotate_secrets names {key!r}, which is given (in the config or ${SECRET_ENV_VARS[key]}): "
                          f"rotate it by giving a new value, or set {key} = None to have one generated")
    return errors


def _external_errors(values: dict[str, Any]) -> list[str]:
    """An external backend needs its credentials given (nothing can be generated for a server
    the deploy does not run); its TLS and CA settings mean nothing without it."""
    errors = []
    # Inside a container, loopback is the container itself, not the host or the backend.
    for key, name in (("postgres_external_host", values.get("postgres_external_host")),
                      ("s3_endpoint_url", urlsplit(values["s3_endpoint_url"]).hostname
                       if values.get("s3_endpoint_url") else None)):
        if name is not None and (name.lower() == "localhost" or (_is_ip(name) and ipaddress.ip_address(name).is_loopback)):
            errors.append(f"{key} names {name!r}: inside the stack's containers that is the container itself; use "
                          "the backend's DNS name or an address the server reaches it on")
    if values.get("postgres_external_host") is not None:
        if "postgres_password" in values and values["postgres_password"] is None:
            errors.append("postgres_password: required with postgres_external_host (the password of postgres_user "
                          "at the external database); set it, or $MLFLOW_STACK_POSTGRES_PASSWORD")
        if values.get("postgres_sslmode") in ("verify-ca", "verify-full") and values.get("postgres_ca_file") is None:
            errors.append(f"postgres_sslmode = {values['postgres_sslmode']!r} needs postgres_ca_file (the CA that "
                          "signed the database's certificate)")
    else:
        for key in ("postgres_ca_file",):
            if values.get(key) is not None:
                errors.append(f"{key}: only used with postgres_external_host, which is not set")
    if values.get("s3_endpoint_url") is not None:
        # The proxy terminates TLS for the bundled MinIO's presigned traffic; an external S3's
        # presigned URLs go to that store itself, which the proxy does not front.
        if values.get("tls", "off") != "off":
            errors.append(f"tls = {values['tls']!r} with s3_endpoint_url: the TLS proxy fronts the bundled MinIO "
                          "only; set tls = 'off' (the external S3 serves its own https) or use the bundled MinIO")
        if "s3_access_key" in values and values["s3_access_key"] is None:
            errors.append("s3_access_key: required with s3_endpoint_url (the access key ID at the external S3)")
        if "s3_secret_access_key" in values and values["s3_secret_access_key"] is None:
            errors.append("s3_secret_access_key: required with s3_endpoint_url; set it, or "
                          "$MLFLOW_STACK_S3_SECRET_ACCESS_KEY")
    else:
        for key in ("s3_access_key", "s3_secret_access_key", "s3_ca_file"):
            if values.get(key) is not None:
                errors.append(f"{key}: only used with s3_endpoint_url, which is not set")
    return errors


def config_from_host() -> StackConfig:
    """The validated config of the host being planned (for steps run on their own)."""
    from pyinfra import host, inventory

    try:
        cluster = cluster_of(host, inventory)
    except ClusterError as error:
        raise ConfigError(f"invalid MLflow cluster in the inventory:\n  - {error}") from None
    return load_config(host.data.dict(), host.name, cluster=cluster)
