"""The bundled MinIO: the artifact store, reached by clients through presigned URLs."""

from __future__ import annotations

from .model import ComposeContext, DataDir, Port, Service, Topology, base, healthcheck, mounts_and_ports, secret

ORDER = 20


def bundled_s3(topology: Topology) -> bool:
    """A data host runs it for the cluster; a single server unless its S3 is external."""
    return topology.role == "data" or (topology.role == "standalone" and not topology.external_s3)


def service(topology: Topology) -> Service | None:
    if not bundled_s3(topology):
        return None
    return Service("minio", image="minio_image", secrets=("MINIO_ROOT_PASSWORD",),
                   data_dirs=(DataDir("minio", "750", "/data"),),
                   # The console only on loopback (an SSH tunnel reaches it).
                   ports=(Port("minio_api_port", "minio_api_bind_address", plain_only=True),
                          Port("minio_console_port")),
                   compose=compose)


def compose(service: Service, context: ComposeContext) -> dict:
    config = context.config
    return {
        **base(service, context, restart="unless-stopped"),
        # Inside the network MinIO listens on the published ports, so the public endpoint URL
        # is valid both for clients and, through the alias, for the MLflow server.
        "command": ["server", "/data", "--address", f":{config.minio_api_port}",
                    "--console-address", f":{config.minio_console_port}"],
        "environment": {
            "MINIO_ROOT_USER": config.minio_root_user,
            "MINIO_ROOT_PASSWORD": secret("MINIO_ROOT_PASSWORD"),
            # `mc ready local` (the health check) asks this address.
            "MC_HOST_local": f"http://127.0.0.1:{config.minio_api_port}",
        },
        # The public name resolves to this container on the compose network: the MLflow
        # server's own S3 traffic never leaves it, and presigned URLs carry the public name.
        # (With TLS the proxy takes the name and publishes the API port instead: no alias here.)
        "networks": {"default": {"aliases": list(config.minio_network_aliases)}},
        # Clients fetch artifacts with presigned URLs that point here (no credentials needed).
        **mounts_and_ports(service, context),
        "healthcheck": healthcheck(["CMD", "mc", "ready", "local"], config),
    }
