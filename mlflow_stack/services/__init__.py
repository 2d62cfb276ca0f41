"""The services a host runs, one module each in this package.

A module says when its service runs (`service(topology)`, None: not on this host), what the
deploy must prepare for it (data directories, config files, secrets, ports: model.Service) and
its whole compose entry (`compose`). The compose file is written from them (`compose_file`);
the directories, secrets, port-clash and health steps read the same table. A new service is a
new module here (its ORDER places it), its settings (config/settings.py) and its test.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import replace
from typing import Mapping

import yaml

from .model import (BUILT_IMAGE, LOOPBACK, POSTGRES_CA_MOUNT, S3_CA_MOUNT, ComposeContext, ConfigFile, DataDir,
                    MetricsRoute, Port, Service, Topology)

__all__ = ["BUILT_IMAGE", "LOOPBACK", "POSTGRES_CA_MOUNT", "S3_CA_MOUNT", "ComposeContext", "ConfigFile", "DataDir",
           "MetricsRoute", "Port", "Service", "Topology", "stack_services", "compose_document", "compose_file"]

# Every module of this package but the model, in compose order (a one-shot's dependencies first).
_MODULES = sorted((importlib.import_module(f"{__name__}.{module.name}") for module in pkgutil.iter_modules(__path__)
                   if module.name != "model"), key=lambda module: module.ORDER)


def stack_services(external_database: bool = False, external_s3: bool = False,
                   postgres_ca: str | None = None, s3_ca: str | None = None, tls: bool = False,
                   role: str = "standalone", metrics: bool = False) -> tuple[Service, ...]:
    """The services a host runs, in compose order. An external database drops the postgres
    container and its data directory; an external S3 drops MinIO and the bucket init (the
    bucket must exist). `postgres_ca` / `s3_ca`: the file name (in the stack directory) of a CA
    for the external backend, mounted into the services that connect to it. `tls`: the proxy
    runs in front of MLflow and MinIO (a cluster: the balancer speaks TLS, and the tracking
    servers trust its CA). `role` (config/cluster.py): a data host runs the
    database and MinIO only, publishing both to the cluster; a tracking server runs MLflow only;
    a balancer runs the balancer only. `metrics`: metrics_networks is given (a proxied host's)."""
    topology = Topology(role, external_database, external_s3, postgres_ca, s3_ca, bool(tls), metrics)
    found = [service for service in (module.service(topology) for module in _MODULES) if service is not None]
    # With TLS a standalone host's proxy publishes MLflow's and MinIO's ports (a cluster's TLS is
    # its balancer's); without TLS, no certificate is mounted.
    proxied = topology.proxied
    return tuple(replace(service, ports=tuple(port for port in service.ports if not (proxied and port.plain_only)),
                         config_files=tuple(f for f in service.config_files if tls or not f.tls_only))
                 for service in found if proxied or not service.tls_only)


# Every service the model knows, everything bundled, the proxy and exporters too (config.services: a host's).
SERVICES = stack_services(tls=True, metrics=True)
# Every topology's services and secrets: names a public host must not take, secrets a setting may give.
_EVERY_TOPOLOGY = (SERVICES, stack_services(external_database=True, external_s3=True),
                   stack_services(role="data"), stack_services(role="balancer", tls=True))

SERVICE_NAMES = tuple(dict.fromkeys(service.name for services in _EVERY_TOPOLOGY for service in services))
ONESHOT_SERVICES = tuple(service.name for service in SERVICES if service.oneshot)
LONG_RUNNING_SERVICES = tuple(service.name for service in SERVICES if not (service.oneshot or service.on_demand))
ON_DEMAND_SERVICES = tuple(service.name for service in SERVICES if service.on_demand)
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
    return tuple(service.name for service in active_services(tls) if not (service.oneshot or service.on_demand))


def stack_is_healthy(statuses: Mapping[str, Mapping], services: tuple[Service, ...]) -> bool:
    """Every service of `services` (the host's: config.services) healthy by its rule;
    `statuses`: the ComposeServices fact."""
    return all(service.is_healthy(statuses.get(service.name, {})) for service in services)


HEADER = """\
# Written by the deploy from mlflow_stack/services/ (one module per service): edit those, not this file.
# ${...} values are passwords that compose reads from .env (root-only, mode 0600).
"""


def compose_document(context: ComposeContext) -> dict:
    config = context.config
    return {"name": config.compose_project,
            "services": {service.name: service.entry(context) for service in config.services}}


def compose_file(context: ComposeContext) -> str:
    # width: never fold a long value (a database URI) over lines.
    return HEADER + yaml.safe_dump(compose_document(context), sort_keys=False, width=1_000_000)
