"""The TLS proxy (nginx): terminates TLS for the tracking API and the presigned S3 traffic,
under the public name, on the ports MLflow and MinIO publish without TLS (templates/nginx.conf.j2)."""

from __future__ import annotations

from .migrate_db import runs_mlflow
from .model import ComposeContext, ConfigFile, Port, Service, Topology, base, healthcheck, listens, mounts_and_ports

ORDER = 60


def service(topology: Topology) -> Service | None:
    if not runs_mlflow(topology):
        return None
    return Service("proxy", image="proxy_image", tls_only=True,
                   config_files=(ConfigFile("nginx.conf", "/etc/nginx/nginx.conf"),
                                 ConfigFile("tls/server.crt", "/etc/nginx/tls/server.crt"),
                                 ConfigFile("tls/server.key", "/etc/nginx/tls/server.key")),
                   ports=(Port("mlflow_port", "mlflow_bind_address"), Port("minio_api_port", "minio_api_bind_address")),
                   compose=compose)


def compose(service: Service, context: ComposeContext) -> dict:
    config = context.config
    return {
        **base(service, context, restart="unless-stopped"),
        "command": ["nginx", "-g", "daemon off;"],
        # The public name resolves to the proxy on the compose network: MLflow's own S3
        # traffic goes through it by the name its presigned URLs carry.
        "networks": {"default": {"aliases": list(config.proxy_network_aliases)}},
        **mounts_and_ports(service, context),
        "healthcheck": healthcheck(listens(config.mlflow_port, config.minio_api_port), config),
    }


def metrics_locations(networks: tuple[str, ...], services: tuple[Service, ...]) -> str:
    """nginx.conf's /metrics block: each of `services`' metrics route (MetricsRoute), to `networks`
    only ("" without metrics). Every path under /metrics stops in it, whatever its spelling
    (MLflow's own /metrics too)."""
    routes = [(s.metrics.path, f"{s.name}:{s.metrics.port}") for s in services if s.metrics]
    if not networks or not routes:
        return ""
    lines = ["", "        # Prometheus metrics, for metrics_networks only (MLflow's also ask for an MLflow user).",
             "        location ^~ /metrics {", *(f"            allow {network};" for network in networks),
             "            deny all;"]
    for path, upstream in routes:
        variable = f"${upstream.split(':')[0].replace('-', '_')}_metrics"  # not $host_...: nginx has $host
        lines += [f"            location = {path} {{", f"                set {variable} {upstream};",
                  f"                proxy_pass http://{variable}/metrics;", "            }"]
    return "\n".join([*lines, "            return 404;", "        }", ""])
