"""The MLflow tracking server: basic-auth, artifacts proxied to the bucket."""

from __future__ import annotations

from .migrate_db import database_ca, database_uri, runs_mlflow
from .model import (BUILT_IMAGE, S3_CA_MOUNT, ComposeContext, ConfigFile, DataDir, MetricsRoute, Port, Service,
                    Topology, answers_http, base, healthcheck, mounts_and_ports, secret)

ORDER = 50
PORT = 5000  # MLflow's inside its container (the proxy, the balancer and the exporters' route reach it there)
# MLflow's Prometheus files (--expose-prometheus, with metrics_networks): a tmpfs of each server's
# own, empty at every start (prometheus_client names them by PID, which two containers share).
METRICS_DIR = "/run/mlflow-metrics"


def s3_secret(topology: Topology) -> str:
    """The secrets file's key of the S3 secret: an external S3's, or the bundled MinIO's root password."""
    return "S3_SECRET_ACCESS_KEY" if topology.external_s3 else "MINIO_ROOT_PASSWORD"


def s3_ca(topology: Topology) -> tuple[ConfigFile, ...]:
    return (ConfigFile(topology.s3_ca, S3_CA_MOUNT),) if topology.external_s3 and topology.s3_ca else ()


def service(topology: Topology) -> Service | None:
    if not runs_mlflow(topology):
        return None
    return server_service("mlflow", topology, compose,
                          # With TLS the proxy publishes the port instead: plain HTTP stays in the compose network.
                          ports=(Port("mlflow_port", "mlflow_bind_address", container_port=PORT, plain_only=True),))


def server_service(name: str, topology: Topology, compose, ports: tuple[Port, ...] = (), tls_only: bool = False) -> Service:
    """An MLflow server: this one, or the tracking API's (mlflow_api.py), alike but for ports and server."""
    # The admin password creates the admin on the first start only (auth.py keeps it current).
    return Service(name, image=BUILT_IMAGE,
                   secrets=("POSTGRES_PASSWORD", s3_secret(topology), "MLFLOW_AUTH_ADMIN_PASSWORD",
                            "MLFLOW_FLASK_SERVER_SECRET_KEY"),
                   data_dirs=(DataDir("mlruns", "750", "/mlflow"),),
                   # MLflow's auth config (MLFLOW_AUTH_CONFIG_PATH in mlflow.env names the mount).
                   # ca.crt: its own S3 calls go to the public name, through the proxy (AWS_CA_BUNDLE).
                   config_files=(ConfigFile("auth.ini", "/etc/mlflow-stack/auth.ini"), *database_ca(topology),
                                 *s3_ca(topology), ConfigFile("tls/ca.crt", "/etc/mlflow-stack/ca.crt", tls_only=True)),
                   ports=ports, tls_only=tls_only, compose=compose,
                   # --expose-prometheus (server_entry) serves them at the server's own /metrics.
                   metrics=MetricsRoute(f"/metrics/{name}", PORT) if topology.metrics else None)


def compose(service: Service, context: ComposeContext) -> dict:
    config = context.config
    # Behind the TLS proxy the tracking API has its own server (mlflow_api.py); this one serves the rest.
    workers = config.mlflow_ui_workers if "mlflow-api" in config.service_names else config.mlflow_worker_count
    return server_entry(service, context, workers, [f"--allowed-hosts={','.join(config.allowed_hosts)}"])


def server_entry(service: Service, context: ComposeContext, workers: int, server_options: list[str],
                 environment: dict[str, str] | None = None) -> dict:
    """The compose entry of an MLflow server; `server_options`: which server, and its checks."""
    config = context.config
    entry = {
        **base(service, context, restart="unless-stopped"),
        "env_file": ["mlflow.env"],
        # auth.ini is read at start only: a new digest recreates MLflow.
        "labels": {"mlflow-stack.auth-ini-sha256": context.auth_ini_digest},
    }
    if config.cluster_extra_hosts:
        # The balancer's name, where MLflow's own S3 calls go (they carry it, like presigned URLs).
        entry["extra_hosts"] = list(config.cluster_extra_hosts)
    entry["environment"] = {
        # Passed by environment, never on the command line (ps would show it).
        "MLFLOW_BACKEND_STORE_URI": database_uri(context),
        "AWS_SECRET_ACCESS_KEY": config.s3_secret_reference,
        # The user store's URI in auth.ini holds no password: libpq takes it from PGPASSWORD.
        "PGPASSWORD": secret("POSTGRES_PASSWORD"),
        # Used by MLflow only to create the admin on the first start; the deploy keeps it current.
        "MLFLOW_AUTH_ADMIN_PASSWORD": secret("MLFLOW_AUTH_ADMIN_PASSWORD"),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret("MLFLOW_FLASK_SERVER_SECRET_KEY"),
        **(environment or {}),
    }
    metrics = [f"--expose-prometheus={METRICS_DIR}"] if config.metrics_networks else []
    entry["command"] = [
        "mlflow", "server", "--host=0.0.0.0", f"--port={PORT}", f"--workers={workers}",
        "--serve-artifacts", f"--artifacts-destination={config.artifacts_destination}", *server_options,
        *config.mlflow_app_options, *metrics,
    ]
    if metrics:
        entry["tmpfs"] = [METRICS_DIR]
    entry.update(mounts_and_ports(service, context))
    entry["healthcheck"] = healthcheck(answers_http(PORT, "/health"), config)
    # It starts once the database is up, the bucket exists and the schema is this MLflow's.
    waits_for = {"postgres": "service_healthy", "create-bucket": "service_completed_successfully"}
    entry["depends_on"] = {name: {"condition": condition} for name, condition in waits_for.items()
                           if name in config.service_names}
    entry["depends_on"]["migrate-db"] = {"condition": "service_completed_successfully"}
    return entry
