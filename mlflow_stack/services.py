"""The services this host runs, in one place.

The compose file, the directories step, the secrets step, the port-clash check and the wait
for health read this table. What depends on the config (images, ids, addresses, port
numbers) is named here by the template value that holds it and looked up by `compose_entries`.
"""

from __future__ import annotations

from dataclasses import dataclass
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


# In compose order: a one-shot's dependencies come before it, MLflow last.
SERVICES = (
    Service("postgres", image="postgres_image", secrets=("POSTGRES_PASSWORD",),
            data_dirs=(DataDir("postgres", "700", "/var/lib/postgresql/data"),)),
    Service("minio", image="minio_image", secrets=("MINIO_ROOT_PASSWORD",),
            data_dirs=(DataDir("minio", "750", "/data"),),
            # The console only on loopback (an SSH tunnel reaches it).
            ports=(Port("minio_api_port", "minio_api_bind_address", plain_only=True), Port("minio_console_port"))),
    Service("create-bucket", image=BUILT_IMAGE, oneshot=True, secrets=("MINIO_ROOT_PASSWORD",)),
    Service("migrate-db", image=BUILT_IMAGE, oneshot=True, secrets=("POSTGRES_PASSWORD",)),
    # The admin password creates the admin on the first start only (auth.py keeps it current).
    Service("mlflow", image=BUILT_IMAGE, secrets=("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD",
                                                  "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"),
            data_dirs=(DataDir("mlruns", "750", "/mlflow"),),
            # MLflow's auth config (MLFLOW_AUTH_CONFIG_PATH in mlflow.env names the mount).
            # ca.crt: its own S3 calls go to the public name, through the proxy (AWS_CA_BUNDLE).
            config_files=(ConfigFile("auth.ini", "/etc/mlflow-stack/auth.ini"),
                          ConfigFile("tls/ca.crt", "/etc/mlflow-stack/ca.crt", tls_only=True)),
            ports=(Port("mlflow_port", "mlflow_bind_address", container_port=5000, plain_only=True),)),
    # Terminates TLS for the tracking API and the presigned S3 traffic, under the public name,
    # on the ports MLflow and MinIO publish without TLS. nginx.conf: templates/nginx.conf.j2.
    Service("proxy", image="proxy_image", tls_only=True,
            config_files=(ConfigFile("nginx.conf", "/etc/nginx/nginx.conf"),
                          ConfigFile("tls/server.crt", "/etc/nginx/tls/server.crt"),
                          ConfigFile("tls/server.key", "/etc/nginx/tls/server.key")),
            ports=(Port("mlflow_port", "mlflow_bind_address"), Port("minio_api_port", "minio_api_bind_address"))),
)

SERVICE_NAMES = tuple(service.name for service in SERVICES)
ONESHOT_SERVICES = tuple(service.name for service in SERVICES if service.oneshot)
# Every one the model knows (the proxy too); long_running_services(tls) gives those of a host.
LONG_RUNNING_SERVICES = tuple(service.name for service in SERVICES if not service.oneshot)
DATA_DIRS = {data_dir.name: data_dir.mode for service in SERVICES for data_dir in service.data_dirs}
SECRET_FILE_KEYS = tuple(dict.fromkeys(key for service in SERVICES for key in service.secrets))
PORT_SETTINGS = tuple(dict.fromkeys(port.setting for service in SERVICES for port in service.ports))


def active_services(tls: str) -> tuple[Service, ...]:
    """The services this host runs with the `tls` setting's value."""
    return tuple(service for service in SERVICES if tls != "off" or not service.tls_only)


def long_running_services(tls: str) -> tuple[str, ...]:
    return tuple(service.name for service in active_services(tls) if not service.oneshot)


def stack_is_healthy(statuses: Mapping[str, Mapping], tls: str) -> bool:
    """Every service healthy by its rule; `statuses`: the ComposeServices fact."""
    return all(service.is_healthy(statuses.get(service.name, {})) for service in active_services(tls))


def compose_entries(values: Mapping) -> dict[str, dict]:
    """Service name -> what compose.yaml says of it that the table decides, from the
    template values: image, user, volumes and published ports, in compose's short syntax."""
    tls_on = values["tls"] != "off"
    entries = {}
    for service in active_services(values["tls"]):
        ports = []
        for port in service.ports:
            if tls_on and port.plain_only:
                continue
            address = values[port.address_setting] if port.address_setting else LOOPBACK
            host_port = values[port.setting]
            ports.append(f"{address}:{host_port}:{port.container_port or host_port}")
        config_files = [f for f in service.config_files if tls_on or not f.tls_only]
        entries[service.name] = {
            "image": values[service.image],
            # Every service runs as the stack account, which owns data/.
            "user": f"{values['stack_uid']}:{values['stack_gid']}",
            "volumes": [f"{values['data_dir']}/{d.name}:{d.mount}" for d in service.data_dirs]
            + [f"{values['stack_dir']}/{f.name}:{f.mount}:ro" for f in config_files],
            "ports": ports,
        }
    return entries
