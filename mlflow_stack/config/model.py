"""StackConfig: every setting of one host, validated (config/load.py), frozen, typed.

Its fields: every setting (config/settings.py's Settings, typed and documented there), the
inventory name, what the load reads once from local files; then values derived from them. Derived
values never touch a file or a host: a template or step reading one costs nothing.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from mlflow_stack.config.cluster import STANDALONE, Cluster
from mlflow_stack.config.releases import SCHEMA_REVISIONS
from mlflow_stack.config.settings import AuthUser, Settings
from mlflow_stack.services import BUILT_IMAGE, POSTGRES_CA_MOUNT, S3_CA_MOUNT, Service, Topology, stack_services
from mlflow_stack.services.mlflow import s3_secret
from mlflow_stack.services.model import secret


def worker_count(workers: int | None, proxied: bool) -> int:
    """Behind this host's TLS proxy (`proxied`), which opens a connection per request, several
    workers serve in parallel; clients keeping connections to uvicorn itself (no proxy, or a
    cluster's balancer) hit its ~44 ms delay with more than one."""
    return workers if workers is not None else (4 if proxied else 1)


@dataclass(frozen=True, kw_only=True)
class StackConfig(Settings):
    # Every setting is a field of Settings (config/settings.py), typed there.
    inventory_name: str

    # Read once by the load from local files (config/load.py)
    mlflow_lock: bytes = field(repr=False, default=b"")  # the release's hash-locked requirements
    postgres_ca_name: str | None = None  # the uploaded name of postgres_ca_file, by its content
    s3_ca_name: str | None = None  # the same for s3_ca_file
    image_archive_names: tuple[str, ...] = ()  # docker_image_archives' names on the host, by content
    cluster: Cluster = field(default=Cluster(STANDALONE))

    @property
    def data_dir(self) -> str:
        return f"{self.stack_dir}/data"

    @property
    def build_dir(self) -> str:
        return f"{self.stack_dir}/build"


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
        return worker_count(self.mlflow_workers, self.proxied)

    @property
    def proxied(self) -> bool:
        """TLS terminated here by the proxy: a standalone host with TLS (a cluster's is its balancer's)."""
        return self.tls != "off" and self.role == "standalone"

    @property
    def scheme(self) -> str:
        """With TLS the proxy (or a cluster's balancer) answers on the published ports, under the
        same names; a tracking server of a cluster serves plain HTTP to its balancer."""
        return "https" if self.tls != "off" and self.role in ("standalone", "balancer") else "http"

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
        """The services this host runs (mlflow_stack/services/), by which backends are external."""
        return stack_services(self.external_database, self.external_s3, postgres_ca=self.postgres_ca_name,
                              s3_ca=self.s3_ca_name, tls=self.tls != "off", role=self.role,
                              metrics=bool(self.metrics_networks))

    @property
    def builds_mlflow_image(self) -> bool:
        return any(service.image == BUILT_IMAGE for service in self.services)

    @property
    def role(self) -> str:
        """standalone, or the host's part of a cluster (config/cluster.py)."""
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
    def started_services(self) -> tuple[Service, ...]:
        """The services `compose up` starts: all but the on-demand job runner."""
        return tuple(service for service in self.services if not service.on_demand)

    @property
    def service_names(self) -> tuple[str, ...]:
        return tuple(service.name for service in self.services)

    @property
    def started_oneshots(self) -> tuple[str, ...]:
        """The one-shots `compose up` runs: healthy when they exited 0."""
        return tuple(service.name for service in self.started_services if service.oneshot)

    @property
    def started_long_running(self) -> tuple[str, ...]:
        """The services `compose up` keeps running: healthy when their check passes."""
        return tuple(service.name for service in self.started_services if not service.oneshot)

    @property
    def mlflow_servers(self) -> tuple[str, ...]:
        """The MLflow servers this host runs (the API's own behind the TLS proxy): what holds the
        database's connections and the credential cache, and stops while a backup is restored."""
        return tuple(service.name for service in self.started_services
                     if service.image == BUILT_IMAGE and not service.oneshot)

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
        """The compose interpolation of the S3 secret key (kept in the secrets file; which key: the
        MLflow service's decision)."""
        return secret(s3_secret(Topology(external_s3=self.external_s3)))

    @property
    def mlflow_s3_env(self) -> tuple[str, ...]:
        """Extra mlflow.env lines for MLflow's own S3 client: an external S3's addressing and CA;
        for the bundled MinIO with TLS, the proxy's CA, and a cluster's balancer's
        (mlflow_tls_env)."""
        if not self.external_s3:
            return self.mlflow_tls_env
        lines = [f"MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE={self.s3_addressing_style}"]
        if self.s3_ca_file:
            lines.append(f"AWS_CA_BUNDLE={S3_CA_MOUNT}")
        elif self.role == "tracking" and self.cluster.data_host:  # the data host's MinIO, through the balancer
            lines += self.mlflow_tls_env
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
        return () if self.proxied else self.public_name_aliases

    @property
    def proxy_network_aliases(self) -> tuple[str, ...]:
        return self.public_name_aliases if self.proxied else ()

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


def _url_host(name: str) -> str:
    return f"[{name}]" if ":" in name else name


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


