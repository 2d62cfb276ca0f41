"""MLflow's tracking API behind the TLS proxy (/api/2.0/mlflow/: runs, metrics, params,
experiments, registry): the same app, under gunicorn.

Under uvicorn every call also crosses MLflow's ASGI layers (FastAPI middleware, the bridge to
its Flask app), about three quarters of its CPU per tracking call here; gunicorn serves the
Flask app directly: `make bench` went from 125 to 176-188 req/s and from 10.3 to 7.6 ms per
`log_metric` (docs/dev/measured.md). The routes only MLflow's FastAPI app has (artifacts,
/v1/traces, server-info, the gateway, the UI's jobs) stay on `mlflow`: the proxy sends this
service only the prefix no FastAPI route uses (tests/unit/test_mlflow_api_routes.py checks that
for the installed MLflow). Without TLS there is no
proxy to split the paths, and `mlflow` serves everything."""

from __future__ import annotations

from .migrate_db import runs_mlflow
from .mlflow import server_entry, server_service
from .model import ComposeContext, Service, Topology

ORDER = 55
# The proxy's location for this service (templates/nginx.conf.j2).
PATH_PREFIX = "/api/2.0/mlflow/"


def service(topology: Topology) -> Service | None:
    if not runs_mlflow(topology):
        return None
    return server_service("mlflow-api", topology, compose, tls_only=True)


def compose(service: Service, context: ComposeContext) -> dict:
    config = context.config
    # gunicorn: MLflow takes the Host check from the environment (its --allowed-hosts is uvicorn's).
    # Its workers are killed after 30 s on one request by default: a search over a large
    # experiment may take longer.
    return server_entry(service, context, config.mlflow_worker_count, ["--gunicorn-opts=--timeout 600"],
                        environment={"MLFLOW_SERVER_ALLOWED_HOSTS": ",".join(config.allowed_hosts)})
