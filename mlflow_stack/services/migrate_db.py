"""The schema migration: a one-shot before MLflow starts. Brings an older schema to this
MLflow's revision (the deploy backs the database up first); refuses a newer one; a no-op when
the schema is current."""

from __future__ import annotations

from .model import (BUILT_IMAGE, POSTGRES_CA_MOUNT, ComposeContext, ConfigFile, Service, Topology, base,
                    mounts_and_ports, secret)

ORDER = 40


def runs_mlflow(topology: Topology) -> bool:
    return topology.role in ("standalone", "tracking")


def database_ca(topology: Topology) -> tuple[ConfigFile, ...]:
    """An external database's CA, where the services that connect to it read it."""
    return (ConfigFile(topology.postgres_ca, POSTGRES_CA_MOUNT),) if topology.external_database and topology.postgres_ca else ()


def database_uri(context: ComposeContext) -> str:
    config = context.config
    return (f"postgresql+psycopg2://{config.postgres_user}:{secret('POSTGRES_PASSWORD')}@{config.database_address}"
            f"/{config.postgres_db}{config.database_uri_options}")


def service(topology: Topology) -> Service | None:
    if not runs_mlflow(topology):
        return None
    return Service("migrate-db", image=BUILT_IMAGE, oneshot=True, secrets=("POSTGRES_PASSWORD",),
                   config_files=database_ca(topology), compose=compose)


def compose(service: Service, context: ComposeContext) -> dict:
    entry = {
        **base(service, context, restart="no"),
        "command": ["python", "/opt/mlflow-stack/migrate_db.py"],
        "environment": {"MLFLOW_BACKEND_STORE_URI": database_uri(context)},
        **mounts_and_ports(service, context),
    }
    if "postgres" in context.config.service_names:
        entry["depends_on"] = {"postgres": {"condition": "service_healthy"}}
    return entry
