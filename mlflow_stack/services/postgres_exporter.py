"""The bundled database's metrics for the lab's Prometheus (postgres-exporter): up or down,
connections by state, database size, transactions, locks. Runs with metrics_networks beside the
bundled PostgreSQL; the proxy serves it as /metrics/database to those networks only."""

from __future__ import annotations

from .model import ComposeContext, MetricsRoute, Service, Topology, base, healthcheck, secret

ORDER = 59
PORT = 9187


def service(topology: Topology) -> Service | None:
    # An external database is the institute's to watch; metrics are a single server's (proxied).
    if not (topology.metrics and topology.proxied) or topology.external_database:
        return None
    return Service("postgres-exporter", image="postgres_exporter_image", secrets=("POSTGRES_PASSWORD",), tls_only=True,
                   metrics=MetricsRoute("/metrics/database", PORT), compose=compose)


def compose(service: Service, context: ComposeContext) -> dict:
    config = context.config
    return {
        **base(service, context, restart="unless-stopped"),
        # The stack's own role (it owns the database): no second account to keep in step.
        "environment": {
            "DATA_SOURCE_URI": f"postgres:5432/{config.postgres_db}?sslmode=disable",
            "DATA_SOURCE_USER": config.postgres_user,
            "DATA_SOURCE_PASS": secret("POSTGRES_PASSWORD"),
        },
        # No depends_on postgres: with the database down it must keep answering (pg_up 0 is what
        # the lab's alert fires on), and compose stops a service's dependents along with it.
        "command": [f"--web.listen-address=:{PORT}"],
        # The official image is busybox-based: wget, no bash.
        "healthcheck": healthcheck(["CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{PORT}/"], config),
    }
