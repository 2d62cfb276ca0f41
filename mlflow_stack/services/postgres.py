"""The bundled PostgreSQL: MLflow's tracking database and user store."""

from __future__ import annotations

from .model import ComposeContext, DataDir, Port, Service, Topology, base, healthcheck, mounts_and_ports, secret

ORDER = 10


def service(topology: Topology) -> Service | None:
    if topology.role not in ("standalone", "data") or (topology.role == "standalone" and topology.external_database):
        return None
    # A data host publishes it to the cluster's tracking servers (the firewall keeps others
    # out); on a single server only MLflow talks to it, over the compose network.
    published = (Port("postgres_port", "postgres_bind_address", container_port=5432),) if topology.role == "data" else ()
    return Service("postgres", image="postgres_image", secrets=("POSTGRES_PASSWORD",),
                   data_dirs=(DataDir("postgres", "700", "/var/lib/postgresql/data"),), ports=published,
                   compose=compose)


def compose(service: Service, context: ComposeContext) -> dict:
    config = context.config
    return {
        **base(service, context, restart="unless-stopped"),
        "environment": {
            "POSTGRES_USER": config.postgres_user,
            "POSTGRES_DB": config.postgres_db,
            "POSTGRES_PASSWORD": secret("POSTGRES_PASSWORD"),
            "PGDATA": "/var/lib/postgresql/data",
        },
        **mounts_and_ports(service, context),
        "healthcheck": healthcheck(["CMD", "pg_isready", "-U", config.postgres_user, "-d", config.postgres_db], config),
    }
