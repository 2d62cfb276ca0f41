"""Turn pyinfra host data into one validated, frozen StackConfig before any operation runs.

Each setting's default, rule and doc live in config/settings.py; a key the host data leaves out
takes its default. This module applies those rules, then the ones across settings
(config/rules.py). Every problem is reported at once, each naming the key, the bad value and
what is allowed.
"""

from __future__ import annotations

import os
import re
from typing import Any

from pyinfra.api import DeployError

from mlflow_stack.config.cluster import STANDALONE, Cluster, ClusterError, cluster_of
from mlflow_stack.config.local_files import content_name, sha256_of
from mlflow_stack.config.model import StackConfig, _url_host
from mlflow_stack.config.releases import lock_file
from mlflow_stack.config.rules import cluster_errors, cross_errors, typo_errors
from mlflow_stack.config.settings import HIDDEN_SETTINGS, PASSED_SECRET_ENV_VARS, SECRET_ENV_VARS, SETTINGS


class ConfigError(DeployError, ValueError):
    """Raised with every problem found in the configuration, one per line. A DeployError,
    so pyinfra prints the message alone instead of a traceback."""


def load_config(data: dict[str, Any], inventory_name: str, environ: dict[str, str] | None = None,
                cluster: Cluster | None = None) -> StackConfig:
    """Validate host data (overrides of the settings' defaults) into a StackConfig; `cluster`:
    the host's part of a cluster (cluster.py), None for a server of its own."""
    environ = os.environ if environ is None else environ
    cluster = cluster or Cluster(STANDALONE)
    errors: list[str] = []
    values: dict[str, Any] = {}
    env_vars = {**SECRET_ENV_VARS, **PASSED_SECRET_ENV_VARS}

    for setting in SETTINGS:
        key = setting.name
        value = data.get(key, setting.default)
        if key in env_vars and value is None and environ.get(env_vars[key]):
            value = environ[env_vars[key]]
            problem = setting.check(value)
            if problem:  # never echo a secret
                errors.append(f"{key} (from ${env_vars[key]}): invalid; must be {problem}")
                continue
        else:
            problem = setting.check(value)
            if problem:
                # A URI with a password in it (user:password@) is never echoed either.
                hidden = key in HIDDEN_SETTINGS or re.search(r"://[^/@\s]*:[^/@\s]*@", str(value))
                shown = "<hidden>" if hidden else repr(value)
                errors.append(f"{key} = {shown}: must be {problem}")
                continue
        values[key] = setting.read(value) if setting.read else value

    errors += typo_errors(data)
    errors += cluster_errors(data, values, cluster)
    if not errors and cluster.role == "tracking" and cluster.data_host:
        values.update(_data_host_backends(values, cluster))
    errors += cross_errors(values, inventory_name, cluster.role)
    if errors:
        raise ConfigError("invalid MLflow stack configuration:\n  - " + "\n  - ".join(errors))

    values["mlflow_public_host"] = values["mlflow_public_host"] or inventory_name
    return StackConfig(inventory_name=inventory_name, cluster=cluster, **values,
                       mlflow_lock=lock_file(values["mlflow_version"]).read_bytes(),
                       postgres_ca_name=_content_name("postgres-ca", values["postgres_ca_file"]),
                       s3_ca_name=_content_name("s3-ca", values["s3_ca_file"]),
                       image_archive_names=tuple(content_name(a) for a in values["docker_image_archives"]))


def _data_host_backends(values: dict[str, Any], cluster: Cluster) -> dict[str, Any]:
    """A tracking server's backends are the data host's PostgreSQL and MinIO, the latter by the
    balancer's name, as clients see it in presigned URLs (cluster_extra_hosts)."""
    return {"postgres_external_host": cluster.data_host.address, "postgres_external_port": values["postgres_port"],
            # With TLS the balancer speaks it on that port too (the tracking servers trust its CA).
            "s3_endpoint_url": f"{'http' if values['tls'] == 'off' else 'https'}://{_url_host(cluster.public_host)}"
                               f":{values['minio_api_port']}",
            "s3_access_key": values["minio_root_user"], "s3_secret_access_key": values["minio_root_password"]}


def _content_name(stem: str, path: str | None) -> str | None:
    """The name a local file is uploaded under, by its content: a new CA is a new file and a new
    mount (so only a restart after the backend check uses it), never an edit of the file the
    running containers read."""
    if path is None:
        return None
    return f"{stem}-{sha256_of(path)[:12]}.crt"


def config_from_host() -> StackConfig:
    """The validated config of the host being planned (for steps run on their own)."""
    from pyinfra import host, inventory

    try:
        cluster = cluster_of(host, inventory)
    except ClusterError as error:
        raise ConfigError(f"invalid MLflow cluster in the inventory:\n  - {error}") from None
    return load_config(host.data.dict(), host.name, cluster=cluster)
