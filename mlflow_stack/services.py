"""The services this host runs, in one place.

Which ones depends on the config: `stack_services` leaves out the bundled database and MinIO
when they are external, and adds the TLS proxy when TLS is on (config.services is the host's).
The compose file, the directories step, the secrets step, the port-clash check and the wait
for health read that table. What depends on the config (images, ids, addresses, port
numbers) is named here by the template value that holds it and looked up by `compose_entries`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

LOOPBACK = "127.0.0.1"
# The image built on the host (its tag: stack_files.mlflow_image_ref).
BUILT_IMAGE = "mlflow_image_ref"


@dataclass(frozen=True)
class DataDir:
    name: str   # under data/, owned by the stack account
    mode: str   # what the service writing it needs (PostgreSQL insists on 0700)
    mount: str  # where the service sees it


@dataclass(frozen=True)
class ConfigFile:
    name: str   # in the stack directory, written by the deploy (rendered files: root, 0644, no secret)
    mount: str  # where the service reads it, read-only
    tls_only: bool = False  # mounted only when TLS is on (the certificate files of tls.py)


@dataclass(frozen=True)
class Port:
    setting: str                        # holds the host port; named when two ports clash
    address_setting: str | None = None  # holds the host address; None: loopback only
    container_port: int | None = None   # None: the host port, which the service listens on inside
    # With TLS on the proxy publishes this port (TLS) and the service publishes nothing:
    # plain HTTP to it never leaves the compose network.
    plain_only: bool = False


@dataclass(frozen=True)
class Service:
    name: str
    image: str  # the setting naming its image, or BUILT_IMAGE
    # Healthy: a one-shot has exited 0; any other service is running and passes its health check.
    oneshot: bool = False
    data_dirs: tuple[DataDir, ...] = ()
    config_files: tuple[ConfigFile, ...] = ()
    secrets: tuple[str, ...] = ()  # keys of the secrets file compose interpolates into it
    ports: tuple[Port, ...] = ()
    tls_only: bool = False  # present only when TLS is on (the proxy)

    def is_healthy(self, status: Mapping) -> bool:
        """`status`: the service's entry of the ComposeServices fact ({} when it has no container)."""
        if self.oneshot:
            return status.get("state") == "exited" and status.get("exit_code") == 0
        return status.get("state") == "running" and status.get("health") == "healthy"


# Where a service reads the CA file the deploy uploads for an external backend (stack_files.py).
POSTGRES_CA_MOUNT = "/etc/mlflow-stack/postgres-ca.crt"
S3_CA_MOUNT = "/etc/mlflow-stack/s3-ca.crt"


def stack_services(external_database: bool = False, external_s3: bool = False,
                   postgres_ca: str | None = None, s3_ca: str | None = None, tls: bool = False,
                   role: str = "standalone") -> tuple[Service, ...]:
    """The services this host runs, in compose order (a one-shot's dependencies before it,
    MLflow last). An external database drops the postgres container and its data directory;
    an external S3 drops MinIO, its data directory and the bucket init (the bucket must
    exist). `postgres_ca` / `s3_ca`: the file name (in the stack directory) of a CA for the
    external backend, mounted into the services that connect to it. `tls`: the proxy runs in
    front of MLflow and MinIO (config refuses TLS with an external S3). `role` (config/cluster.py): a
    data host runs the database and MinIO only, publishing both to the cluster; a tracking server
    runs MLflow only (its backends are external to it); a balancer runs the balancer only."""
    if role == "balancer":
        return (balancer_service(fronts_s3=not external_s3),)
    if role == "data":
        return tuple(_data_services(published=True))
    s3_secret = "S3_SECRET_ACCESS_KEY" if external_s3 else "MINIO_ROOT_PASSWORD"
    db_ca = (ConfigFile(postgres_ca, POSTGRES_CA_MOUNT),) if external_database and postgres_ca else ()
    object_ca = (ConfigFile(s3_ca, S3_CA_MOUNT),) if external_s3 and s3_ca else ()
    services = [service for service in _data_services(published=False)
                if (service.name != "postgres" or not external_database)
                and (service.name not in ("minio", "create-bucket") or not external_s3)]
    services += [
        Service("migrate-db", image=BUILT_IMAGE, oneshot=True, secrets=("POSTGRES_PASSWORD",), config_files=db_ca),
        # The admin password creates the admin on the first start only (auth.py keeps it current).
        Service("mlflow", image=BUILT_IMAGE, secrets=("POSTGRES_PASSWORD", s3_secret,
                                                      "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"),
                data_dirs=(DataDir("mlruns", "750", "/mlflow"),),
                # MLflow's auth config (MLFLOW_AUTH_CONFIG_PATH in mlflow.env names the mount).
                # ca.crt: its own S3 calls go to the public name, through the proxy (AWS_CA_BUNDLE).
                config_files=(ConfigFile("auth.ini", "/etc/mlflow-stack/auth.ini"), *db_ca, *object_ca,
                              ConfigFile("tls/ca.crt", "/etc/mlflow-stack/ca.crt", tls_only=True)),
                ports=(Port("mlflow_port", "mlflow_bind_address", container_port=5000, plain_only=True),)),
        # Terminates TLS for the tracking API and the presigned S3 traffic, under the public name,
        # on the ports MLflow and MinIO publish without TLS. nginx.conf: templates/nginx.conf.j2.
        Service("proxy", image="proxy_image", tls_only=True,
                config_files=(ConfigFile("nginx.conf", "/etc/nginx/nginx.conf"),
                              ConfigFile("tls/server.crt", "/etc/nginx/tls/server.crt"),
                              ConfigFile("tls/server.key", "/etc/nginx/tls/server.key")),
                ports=(Port("mlflow_port", "mlflow_bind_address"), Port("minio_api_port", "minio_api_bind_address"))),
    ]
    # With TLS the proxy publishes MLflow's and MinIO's ports; without it, no certificate is mounted.
    return tuple(replace(service, ports=tuple(port for port in service.ports if not (tls and port.plain_only)),
                         config_files=tuple(f for f in service.config_files if tls or not f.tls_only))
                 for service in services if tls or not service.tls_only)


def _data_services(published: bool) -> list[Service]:
    """The bundled database and object store; `published`: the database's port too (a data host's)."""
    database_ports = (Port("postgres_port", "postgres_bind_address", container_port=5432),) if published else ()
    return [
        Service("postgres", image="postgres_image", secrets=("POSTGRES_PASSWORD",),
                data_dirs=(DataDir("postgres", "700", "/var/lib/postgresql/data"),), ports=database_ports),
        Service("minio", image="minio_image", secrets=("MINIO_ROOT_PASSWORD",),
                data_dirs=(DataDir("minio", "750", "/data"),),
                # The console only on loopback (an SSH tunnel reaches it).
                ports=(Port("minio_api_port", "minio_api_bind_address", plain_only=True),
                       Port("minio_console_port"))),
        Service("create-bucket", image=BUILT_IMAGE, oneshot=True, secrets=("MINIO_ROOT_PASSWORD",)),
    ]


def balancer_service(fronts_s3: bool) -> Service:
    """Spreads the tracking API over the cluster's tracking servers; with a data host it also
    fronts its S3 API, where presigned URLs point (templates/balancer.conf.j2)."""
    s3_port = (Port("minio_api_port", "minio_api_bind_address"),) if fronts_s3 else ()
    return Service("balancer", image="proxy_image",
                   config_files=(ConfigFile("balancer.conf", "/etc/nginx/nginx.conf"),),
                   ports=(Port("mlflow_port", "mlflow_bind_address"), *s3_port))


# Every service the model knows, everything bundled, the proxy too (config.services: a host's).
SERVICES = stack_services(tls=True)
# Every topology's services and secrets: names a public host must not take, secrets a setting may give.
_EVERY_TOPOLOGY = (SERVICES, stack_services(external_database=True, external_s3=True),
                   stack_services(role="data"), stack_services(role="balancer"))

SERVICE_NAMES = tuple(dict.fromkeys(service.name for services in _EVERY_TOPOLOGY for service in services))
ONESHOT_SERVICES = tuple(service.name for service in SERVICES if service.oneshot)
LONG_RUNNING_SERVICES = tuple(service.name for service in SERVICES if not service.oneshot)
DATA_DIRS = {data_dir.name: data_dir.mode for service in SERVICES for data_dir in service.data_dirs}
SECRET_FILE_KEYS = tuple(dict.fromkeys(key for services in _EVERY_TOPOLOGY for service in services
                                       for key in service.secrets))
PORT_SETTINGS = tuple(dict.fromkeys(port.setting for service in SERVICES for port in service.ports))


def data_dirs(services: tuple[Service, ...]) -> dict[str, str]:
    return {data_dir.name: data_dir.mode for service in services for data_dir in service.data_dirs}


def secret_keys(services: tuple[Service, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(key for service in services for key in service.secrets))


def port_settings(services: tuple[Service, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(port.setting for service in services for port in service.ports))


def active_services(tls: str) -> tuple[Service, ...]:
    """The services of an all-bundled host with the `tls` setting's value."""
    return stack_services(tls=tls != "off")


def long_running_services(tls: str) -> tuple[str, ...]:
    return tuple(service.name for service in active_services(tls) if not service.oneshot)


def stack_is_healthy(statuses: Mapping[str, Mapping], services: tuple[Service, ...]) -> bool:
    """Every service of `services` (the host's: config.services) healthy by its rule;
    `statuses`: the ComposeServices fact."""
    return all(service.is_healthy(statuses.get(service.name, {})) for service in services)


def compose_entries(values: Mapping, services: tuple[Service, ...]) -> dict[str, dict]:
    """Service name -> what compose.yaml says of it that the table decides, from the
    template values: image, user, volumes and published ports, in compose's short syntax."""
    entries = {}
    for service in services:
        ports = []
        for port in service.ports:
            address = values[port.address_setting] if port.address_setting else LOOPBACK
            host_port = values[port.setting]
            ports.append(f"{address}:{host_port}:{port.container_port or host_port}")
        entries[service.name] = {
            "image": values[service.image],
            # Every service runs as the stack account, which owns data/.
            "user": f"{values['stack_uid']}:{values['stack_gid']}",
            "volumes": [f"{values['data_dir']}/{d.name}:{d.mount}" for d in service.data_dirs]
            + [f"{values['stack_dir']}/{f.name}:{f.mount}:ro" for f in service.config_files],
            "ports": ports,
        }
    return entries
