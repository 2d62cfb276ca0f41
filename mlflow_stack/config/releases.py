"""The MLflow releases the stack supports: each has a hash-locked requirements file and a
known tracking-database schema revision (tools/lock_mlflow.py, tools/schema_revisions.py;
locks/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

LOCK_DIR = Path(__file__).resolve().parents[2] / "locks"
SCHEMA_REVISIONS: dict[str, str] = json.loads((LOCK_DIR / "schema-revisions.json").read_text())


# MLflow's Prometheus exporter (an optional import of MLflow's), installed into every image.
EXPORTER_LOCK = LOCK_DIR / "prometheus-exporter.txt"


def lock_file(version: str) -> Path:
    return LOCK_DIR / f"mlflow-{version}.txt"


def version_key(version: str) -> tuple[int, ...]:
    """'3.16.1' -> (3, 16, 1): releases compare by this."""
    return tuple(int(part) for part in version.split("."))


# Releases with both a lock and a known schema revision, oldest first.
SUPPORTED_MLFLOW_VERSIONS = tuple(sorted((v for v in SCHEMA_REVISIONS if lock_file(v).is_file()), key=version_key))

# MLflow's basic-auth takes the admin's password from MLFLOW_AUTH_ADMIN_PASSWORD since 3.16.1
# (read from mlflow/server/auth/config.py of every locked release); before, only from its config
# file, which holds no password here: those releases crash at start (KeyError: 'admin_password').
AUTH_PASSWORD_FROM_ENVIRONMENT_SINCE = "3.16.1"
