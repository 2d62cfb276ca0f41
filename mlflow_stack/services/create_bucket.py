"""The bucket init: a one-shot that creates the artifact bucket in the bundled MinIO."""

from __future__ import annotations

from .minio import bundled_s3
from .model import BUILT_IMAGE, ComposeContext, Service, Topology, base, secret

ORDER = 30


def service(topology: Topology) -> Service | None:
    if not bundled_s3(topology):
        return None  # an external bucket must exist
    return Service("create-bucket", image=BUILT_IMAGE, oneshot=True, secrets=("MINIO_ROOT_PASSWORD",),
                   compose=compose)


def compose(service: Service, context: ComposeContext) -> dict:
    config = context.config
    return {
        **base(service, context, restart="no"),
        "command": ["python", "/opt/mlflow-stack/create_bucket.py"],
        "environment": {
            "ARTIFACT_BUCKET": config.minio_bucket,
            "S3_ENDPOINT_URL": config.s3_internal_endpoint,
            "AWS_ACCESS_KEY_ID": config.minio_root_user,
            "AWS_SECRET_ACCESS_KEY": secret("MINIO_ROOT_PASSWORD"),
        },
        "depends_on": {"minio": {"condition": "service_healthy"}},
    }
