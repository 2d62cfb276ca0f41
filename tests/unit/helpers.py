"""Shared helpers: the project's defaults and validated configs built from them."""

from __future__ import annotations

from pathlib import Path

from mlflow_stack.config import StackConfig, load_config
from mlflow_stack.config.releases import AUTH_PASSWORD_FROM_ENVIRONMENT_SINCE, version_key
from mlflow_stack.config.settings import DEFAULTS

REPO = Path(__file__).resolve().parents[2]
HOST_NAME = "mlflow.example.org"
# Marks a key to leave out of the host data (it then takes its default).
MISSING = object()


def defaults() -> dict:
    """A fresh copy of every setting's default (mlflow_stack/config/settings.py) as host data."""
    return {key: (list(value) if isinstance(value, list) else value) for key, value in DEFAULTS.items()}


def host_data(**overrides) -> dict:
    """Defaults with overrides applied; an override of MISSING removes the key."""
    data = defaults()
    for key, value in overrides.items():
        if value is MISSING:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def make_config(inventory_name: str = HOST_NAME, environ: dict | None = None, **overrides) -> StackConfig:
    """A validated config: defaults + overrides, with an empty environment unless given."""
    return load_config(host_data(**overrides), inventory_name, environ=environ or {})


# A config that differs from the defaults in every value the templates use.
NON_DEFAULT = dict(
    stack_dir="/opt/mlflow-stack",
    compose_project="mlops",
    stack_user="mlstack",
    stack_uid=20001,
    stack_gid=20002,
    # an older supported release with another database schema; the companions are its lock's pins
    mlflow_version="3.16.1",
    mlflow_psycopg2_version="2.9.11",
    mlflow_boto3_version="1.44.8",
    mlflow_image="registry.example.org:5000/team/mlflow",
    python_image="python:3.11-slim-bookworm",
    pip_index_url="https://pypi.mirror.example.org/simple",
    mlflow_bind_address="127.0.0.1",
    mlflow_port=8080,
    mlflow_public_host="tracking.example.com",
    mlflow_public_names=["10.0.0.5", "mlflow", "2001:db8::5"],
    mlflow_workers=4,
    mlflow_health_timeout=120,
    mlflow_health_start_interval=7,
    postgres_image="registry.example.org/library/postgres:16.4",
    postgres_db="tracking",
    postgres_user="tracker",
    minio_image="quay.io/minio/minio:RELEASE.2025-01-01T00-00-00Z",
    minio_root_user="admin_user",
    minio_api_bind_address="10.0.0.5",
    minio_api_port=9100,
    minio_console_port=9101,
    minio_bucket="ml-artifacts.team1",
    minio_bucket_prefix="runs/v1",
    tls="off",
)


def without_auth_before_the_environment_password(version: str) -> dict:
    """The settings that make `version` a valid config: authentication off before 3.16.1."""
    return {"mlflow_auth": False} if version_key(version) < version_key(AUTH_PASSWORD_FROM_ENVIRONMENT_SINCE) else {}
