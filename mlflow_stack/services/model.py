"""What a service is: the parts every service has (image, user, data, config files, secrets,
ports) that the directories, secrets, port-clash and health steps read, and the compose entry
its own module writes from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping

if TYPE_CHECKING:
    from mlflow_stack.config import StackConfig

LOOPBACK = "127.0.0.1"
# The image built on the host (its tag: stack_files.mlflow_image_ref).
BUILT_IMAGE = "mlflow_image_ref"
# Where a service reads the CA file the deploy uploads for an external backend (stack_files.py).
POSTGRES_CA_MOUNT = "/etc/mlflow-stack/postgres-ca.crt"
S3_CA_MOUNT = "/etc/mlflow-stack/s3-ca.crt"


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
    # With TLS the proxy publishes this port (TLS) and the service publishes nothing:
    # plain HTTP to it never leaves the compose network.
    plain_only: bool = False


@dataclass(frozen=True)
class MetricsRoute:
    """Prometheus metrics a service serves at /metrics on `port`, which the TLS proxy serves at
    `path` to metrics_networks only (services/proxy.py)."""
    path: str
    port: int


@dataclass(frozen=True)
class Topology:
    """What decides which services a host runs and how they are wired."""
    role: str = "standalone"  # config/cluster.py: standalone, data, tracking or balancer
    external_database: bool = False
    external_s3: bool = False
    postgres_ca: str | None = None  # the CA file's name in the stack directory, if given
    s3_ca: str | None = None
    tls: bool = False
    metrics: bool = False  # metrics_networks given: exporters run, the proxy serves them

    @property
    def proxied(self) -> bool:
        """TLS terminated on this host by the proxy (a standalone host; a cluster's is its balancer)."""
        return self.tls and self.role == "standalone"


@dataclass(frozen=True)
class ComposeContext:
    """What a service's compose entry is written from: the config, and the two values the
    deploy computes from files (the built image's tag, auth.ini's digest)."""
    config: StackConfig
    mlflow_image: str
    auth_ini_digest: str


@dataclass(frozen=True)
class Service:
    name: str
    image: str  # the setting naming its image, or BUILT_IMAGE
    # Healthy: a one-shot has exited 0; any other service is running and passes its health check.
    oneshot: bool = False
    # Never started by `compose up`: run on demand (`compose run --rm NAME ...`) by a job.
    on_demand: bool = False
    data_dirs: tuple[DataDir, ...] = ()
    config_files: tuple[ConfigFile, ...] = ()
    secrets: tuple[str, ...] = ()  # keys of the secrets file compose interpolates into it
    ports: tuple[Port, ...] = ()
    tls_only: bool = False  # present only behind this host's TLS proxy (the proxy, the tracking API's server)
    metrics: MetricsRoute | None = None  # with metrics_networks: its Prometheus page, through the proxy
    # Its whole compose entry (the service's module); the parts above are filled in by `entry`.
    compose: Callable[[Service, ComposeContext], dict] | None = field(default=None, compare=False, repr=False)

    def is_healthy(self, status: Mapping) -> bool:
        """`status`: the service's entry of the ComposeServices fact ({} when it has no container)."""
        if self.on_demand:
            return True
        if self.oneshot:
            return status.get("state") == "exited" and status.get("exit_code") == 0
        return status.get("state") == "running" and status.get("health") == "healthy"

    def entry(self, context: ComposeContext) -> dict:
        """The service's compose entry: its module's, with image, user, volumes and ports from the table."""
        assert self.compose is not None, f"{self.name}: no compose entry"
        return self.compose(self, context)


def secret(key: str) -> str:
    """A password in the compose file: interpolated by compose from .env (root-only), never written."""
    return f"${{{key}:?missing in .env; rerun the deploy}}"


def image(service: Service, context: ComposeContext) -> str:
    return context.mlflow_image if service.image == BUILT_IMAGE else getattr(context.config, service.image)


def user(context: ComposeContext) -> str:
    # Every service runs as the stack account, which owns data/.
    return f"{context.config.stack_uid}:{context.config.stack_gid}"


def volumes(service: Service, context: ComposeContext) -> list[str]:
    config = context.config
    return ([f"{config.data_dir}/{d.name}:{d.mount}" for d in service.data_dirs]
            + [f"{config.stack_dir}/{f.name}:{f.mount}:ro" for f in service.config_files])


def ports(service: Service, context: ComposeContext) -> list[str]:
    published = []
    for port in service.ports:
        address = getattr(context.config, port.address_setting) if port.address_setting else LOOPBACK
        host_port = getattr(context.config, port.setting)
        published.append(f"{address}:{host_port}:{port.container_port or host_port}")
    return published


def base(service: Service, context: ComposeContext, restart: str) -> dict:
    """The keys every entry starts with."""
    return {"image": image(service, context), "user": user(context), "restart": restart}


def mounts_and_ports(service: Service, context: ComposeContext) -> dict:
    """volumes and ports, each only when it has any."""
    parts = {"volumes": volumes(service, context), "ports": ports(service, context)}
    return {key: value for key, value in parts.items() if value}


# Probes of a started service: each is a process started in the container (runc), about 0.06 s of
# CPU on a server and 1.3 s in a software-emulated VM; every 5 s, the idle stack took 80 % of a core
# in the VM (docs/dev/measured.md). Unhealthy after RETRIES failures in a row: 2 minutes, as long as
# a probe may time out on a loaded host and pass again.
PROBE_INTERVAL = "30s"
RETRIES = 4


def healthcheck(test: list[str], config: StackConfig) -> dict:
    # A starting service is probed often (mlflow_health_start_interval), so a start is seen at once;
    # it is "starting" until its first passing probe or the deploy's wait (mlflow_health_timeout) is
    # over. start_interval needs Docker Engine 25 (every docker_source installs 26 or later).
    return {"test": test, "interval": PROBE_INTERVAL, "timeout": "5s", "retries": RETRIES,
            "start_period": f"{config.mlflow_health_timeout}s",
            "start_interval": f"{config.mlflow_health_start_interval}s"}


def answers_http(port: int, path: str) -> list[str]:
    """A health check that GET http://127.0.0.1:PORT/PATH answers 200, in bash (/dev/tcp): a Python
    probe cost 0.06-0.07 s of CPU each time against ~0.005 s (docs/dev/measured.md)."""
    request = f"GET {path} HTTP/1.0\\r\\nHost: 127.0.0.1:{port}\\r\\n\\r\\n"
    return ["CMD", "bash", "-c",
            f"exec 3<>/dev/tcp/127.0.0.1/{port} && printf '{request}' >&3 && head -n 1 <&3 | grep -q ' 200 '"]


def listens(*ports: int) -> list[str]:
    """A health check that the ports accept connections (bash: in the official Debian-based
    nginx image, and its stand-in)."""
    opens = " && ".join(f"exec {fd}<>/dev/tcp/127.0.0.1/{port}" for fd, port in enumerate(ports, start=3))
    return ["CMD", "bash", "-c", opens]
