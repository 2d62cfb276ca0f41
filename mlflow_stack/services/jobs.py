"""The job runner: the MLflow image with the bucket's credentials, never started by `compose
up`; jobs run in it as one-offs (`compose run --rm jobs python /opt/mlflow-stack/...`): the
artifacts' export and import of backup and restore, the classic import. It exists wherever the
MLflow image does, with the bundled MinIO or an external S3."""

from __future__ import annotations

from .minio import bundled_s3
from .mlflow import s3_ca, s3_secret
from .model import BUILT_IMAGE, S3_CA_MOUNT, ComposeContext, Service, Topology, base, mounts_and_ports, secret

ORDER = 80


def service(topology: Topology) -> Service | None:
    if topology.role == "balancer":
        return None
    return Service("jobs", image=BUILT_IMAGE, on_demand=True, secrets=(s3_secret(topology),),
                   config_files=() if bundled_s3(topology) else s3_ca(topology), compose=compose)


def compose(service: Service, context: ComposeContext) -> dict:
    config = context.config
    bundled = "minio" in config.service_names
    environment = {
        "ARTIFACT_BUCKET": config.minio_bucket,
        # The bundled MinIO by its service name; an external S3 where MLflow reaches it.
        "S3_ENDPOINT_URL": config.s3_internal_endpoint if bundled else config.s3_endpoint_url,
        "AWS_ACCESS_KEY_ID": config.minio_root_user if bundled else config.s3_access_key_id,
        "AWS_SECRET_ACCESS_KEY": secret(service.secrets[0]),
    }
    if not bundled and config.s3_ca_file:
        environment["AWS_CA_BUNDLE"] = S3_CA_MOUNT
    return {
        **base(service, context, restart="no"),
        # Only `compose run` starts it: a profile no `compose up` names.
        "profiles": ["jobs"],
        "environment": environment,
        **mounts_and_ports(service, context),
    }
