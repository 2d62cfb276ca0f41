"""A cluster's balancer (nginx): spreads the tracking API over the tracking servers; with a data
host it also fronts its S3 API, where presigned URLs point (templates/balancer.conf.j2). With
TLS it speaks TLS on both ports (the lab's certificate, tls = 'files')."""

from __future__ import annotations

from .model import ComposeContext, ConfigFile, Port, Service, Topology, base, healthcheck, listens, mounts_and_ports

ORDER = 70


def service(topology: Topology) -> Service | None:
    if topology.role != "balancer":
        return None
    s3_port = (Port("minio_api_port", "minio_api_bind_address"),) if not topology.external_s3 else ()
    return Service("balancer", image="proxy_image",
                   # With TLS it terminates it, for the tracking API and the presigned S3 traffic.
                   config_files=(ConfigFile("balancer.conf", "/etc/nginx/nginx.conf"),
                                 ConfigFile("tls/server.crt", "/etc/nginx/tls/server.crt", tls_only=True),
                                 ConfigFile("tls/server.key", "/etc/nginx/tls/server.key", tls_only=True)),
                   ports=(Port("mlflow_port", "mlflow_bind_address"), *s3_port), compose=compose)


def compose(service: Service, context: ComposeContext) -> dict:
    return {
        **base(service, context, restart="unless-stopped"),
        "command": ["nginx", "-g", "daemon off;"],
        **mounts_and_ports(service, context),
        # It listens; the tracking servers' own health is the balancer's business per request.
        "healthcheck": healthcheck(listens(context.config.mlflow_port), context.config),
    }
