"""The rules that tie several settings together (one setting's own rule is its check in
config/settings.py). Each returns the problems found, one line each, naming the key, the bad
value and what is allowed; config/load.py reports them all at once."""

from __future__ import annotations

import difflib
import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from mlflow_stack.config.certificates import certificate_problem, tls_errors
from mlflow_stack.config.checks import is_database_uri
from mlflow_stack.config.cluster import SHARED_SECRETS, STANDALONE, Cluster
from mlflow_stack.config.model import _is_ip, worker_count
from mlflow_stack.config.releases import AUTH_PASSWORD_FROM_ENVIRONMENT_SINCE, lock_file, version_key
from mlflow_stack.config.settings import SECRET_ENV_VARS, SETTINGS
from mlflow_stack.services import SERVICE_NAMES, port_settings, stack_services

CONFIG_KEYS = tuple(setting.name for setting in SETTINGS)
# MLflow opens a pool per store (tracking, model registry, users) in each worker.
STORES_PER_WORKER = 3
# The bundled PostgreSQL's max_connections (its default), less room for backups, gc and the deploy.
BUNDLED_DATABASE_CONNECTIONS = 90


def cluster_errors(data: dict[str, Any], values: dict[str, Any], cluster: Cluster) -> list[str]:
    if cluster.role == STANDALONE:
        return []
    errors = []
    if values.get("tls") == "files" and values.get("tls_cert_file") and cluster.public_host:
        # Every member's certificate is the balancer's (the tracking servers' S3 calls go to it).
        problem = certificate_problem(values["tls_cert_file"], cluster.public_host)
        if problem:
            errors.append(f"tls_cert_file = {values['tls_cert_file']!r}: {problem} (the cluster's balancer)")
    if values.get("tls") == "self-signed":
        # Every tracking server must trust the balancer's CA while the run that would make it plans.
        errors.append("tls = 'self-signed' in a cluster: the balancer needs a certificate every tracking server "
                      "trusts before the run; use tls = 'files' with the lab's certificate for the balancer's "
                      f"name ({cluster.public_host or 'its mlflow_public_host'}), its key and CA (docs/cluster.md)")
    for key in SHARED_SECRETS.get(cluster.role, ()):
        if key in values and values[key] is None:
            errors.append(f"{key}: required in a cluster (every member needs the same value, none can be generated "
                          f"on one host); set it in group_data or ${SECRET_ENV_VARS[key]}")
    if cluster.role == "data":
        for key in ("postgres_external_host", "s3_endpoint_url"):
            if data.get(key) is not None:
                errors.append(f"{key}: a data host runs the bundled PostgreSQL and MinIO; leave it unset there")
    if cluster.role == "tracking" and cluster.data_host:
        for key in ("postgres_external_host", "s3_endpoint_url", "s3_access_key", "s3_secret_access_key"):
            if data.get(key) is not None:
                errors.append(f"{key}: set by the cluster (the data host {cluster.data_host.name}); leave it unset, "
                              "or take the host out of mlflow_data_hosts to use external backends")
    if cluster.role == "tracking" and not cluster.data_host:
        for key in ("postgres_external_host", "s3_endpoint_url"):
            if values.get(key) is None:
                errors.append(f"{key}: required for a tracking server when the inventory has no data host "
                              "(mlflow_data_hosts)")
    return errors


def typo_errors(data: dict[str, Any]) -> list[str]:
    """Unknown keys close to a known one are almost always typos that would be ignored silently."""
    errors = []
    for key in data:
        if key in CONFIG_KEYS or key.startswith("_"):
            continue
        close = difflib.get_close_matches(key, CONFIG_KEYS, n=1, cutoff=0.85)
        if close:
            errors.append(f"{key}: unknown setting; did you mean {close[0]!r}?")
    return errors


def cross_errors(values: dict[str, Any], inventory_name: str, role: str = STANDALONE) -> list[str]:
    errors = external_errors(values, role)
    published = port_settings(stack_services(values.get("postgres_external_host") is not None,
                                             values.get("s3_endpoint_url") is not None, role=role))
    # In the order of the settings: the later of two equal ports is the one reported.
    ports = [(key, port) for key, port in values.items() if key in published]
    seen: dict[int, str] = {}
    for key, port in ports:
        if port in seen:
            errors.append(f"{key} = {port}: clashes with {seen[port]} = {port}; each published port must differ")
        seen.setdefault(port, key)
    if values.get("stack_user") == "root":
        errors.append("stack_user = 'root': must be a dedicated unprivileged account")
    if values.get("uninstall_data") is True and values.get("uninstall_confirm") != inventory_name:
        errors.append(f"uninstall_data = True deletes the database, objects, backups and secrets of {inventory_name}: "
                      f"confirm with uninstall_confirm = {inventory_name!r}")
    if values.get("postgres_external_host") is None and isinstance(values.get("mlflow_db_pool_size"), int) \
            and isinstance(values.get("mlflow_workers", 1), (int, type(None))) \
            and isinstance(values.get("mlflow_ui_workers", 1), int):
        proxied = values.get("tls", "off") != "off" and role == STANDALONE
        # Behind the TLS proxy the tracking API's workers and the UI's each hold their own pools.
        workers = (worker_count(values.get("mlflow_workers"), proxied)
                   + (values.get("mlflow_ui_workers", 1) if proxied else 0))
        connections = workers * STORES_PER_WORKER * values["mlflow_db_pool_size"]
        if connections > BUNDLED_DATABASE_CONNECTIONS:
            errors.append(f"mlflow_db_pool_size = {values['mlflow_db_pool_size']}: {workers} workers x "
                          f"{STORES_PER_WORKER} stores x {values['mlflow_db_pool_size']} = {connections} database "
                          f"connections, more than the bundled PostgreSQL allows MLflow "
                          f"({BUNDLED_DATABASE_CONNECTIONS}); lower it, mlflow_workers or mlflow_ui_workers")
    # A public name equal to a service name would shadow that service on the compose network.
    public_host = values.get("mlflow_public_host") or inventory_name
    if public_host.lower() in (*SERVICE_NAMES, "localhost"):
        errors.append(f"mlflow_public_host = {public_host!r} (or the inventory name): clients on other machines "
                      "cannot use it, and on the compose network it names a container; use the server's DNS name "
                      "or IP address")
    if "mlflow_version" in values:
        pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", lock_file(values["mlflow_version"]).read_text(), re.M))
        for key, package in (("mlflow_psycopg2_version", "psycopg2-binary"), ("mlflow_boto3_version", "boto3")):
            if key in values and pins.get(package) != values[key]:
                errors.append(f"{key} = {values[key]!r}: locks/mlflow-{values['mlflow_version']}.txt pins {package} "
                              f"{pins.get(package)}; regenerate the lock with that version (locks/README.md) or "
                              "keep the pinned one")
    if values.get("mlflow_auth") is True and "mlflow_version" in values \
            and version_key(values["mlflow_version"]) < version_key(AUTH_PASSWORD_FROM_ENVIRONMENT_SINCE):
        errors.append(f"mlflow_version = {values['mlflow_version']!r} with mlflow_auth = True: MLflow's basic-auth "
                      f"before {AUTH_PASSWORD_FROM_ENVIRONMENT_SINCE} reads the admin password only from its config "
                      f"file, where this deploy keeps none (it would crash at start); use "
                      f"{AUTH_PASSWORD_FROM_ENVIRONMENT_SINCE} or newer, or mlflow_auth = False")
    admin = values.get("mlflow_auth_admin_user")
    if admin and any(user.name == admin for user in values.get("mlflow_auth_users", ())):
        errors.append(f"mlflow_auth_users names {admin!r}, the mlflow_auth_admin_user: the deploy keeps that account "
                      "through mlflow_auth_admin_password; list other users only")
    # MLflow (3.17) treats default_permission as a floor under every grant: a lower grant does nothing.
    ranks = {name: rank for rank, name in enumerate(("NO_PERMISSIONS", "READ", "EDIT", "MANAGE"))}
    default = values.get("mlflow_auth_default_permission")
    for user in values.get("mlflow_auth_users", ()):
        if default and user.permission in ranks and ranks[user.permission] < ranks[default]:
            errors.append(f"mlflow_auth_users gives {user.name!r} {user.permission}, less than "
                          f"mlflow_auth_default_permission = {default!r}: MLflow never grants less than the default; "
                          f"lower the default (e.g. 'NO_PERMISSIONS') or raise the user's permission")
    if values.get("metrics_networks") and not (values.get("tls", "off") != "off" and role == STANDALONE):
        # Only the proxy can hold the metrics to the listed networks (and to TLS).
        fix = "set tls = 'self-signed' or 'files'" if role == STANDALONE else "a cluster's members export none yet"
        errors.append(f"metrics_networks = {list(values['metrics_networks'])!r}: the metrics are served by a single "
                      f"server's TLS proxy; {fix}, or set metrics_networks = []")
    # In a cluster the certificate is the balancer's: cluster_errors checks its name.
    errors += tls_errors(values, public_host if role == STANDALONE else None)
    if is_database_uri(values.get("classic_backend_store")) and values.get("classic_artifact_root") is None:
        errors.append("classic_artifact_root: required when classic_backend_store is a database URI (the old "
                      "server's artifact directory on this host)")
    for key in values.get("rotate_secrets", ()):
        if values.get(key) is not None:
            errors.append(f"rotate_secrets names {key!r}, which is given (in the config or ${SECRET_ENV_VARS[key]}): "
                          f"rotate it by giving a new value, or set {key} = None to have one generated")
    return errors


def external_errors(values: dict[str, Any], role: str = STANDALONE) -> list[str]:
    """An external backend needs its credentials given (nothing can be generated for a server
    the deploy does not run); its TLS and CA settings mean nothing without it."""
    errors = []
    # Inside a container, loopback is the container itself, not the host or the backend.
    for key, name in (("postgres_external_host", values.get("postgres_external_host")),
                      ("s3_endpoint_url", urlsplit(values["s3_endpoint_url"]).hostname
                       if values.get("s3_endpoint_url") else None)):
        if name is not None and (name.lower() == "localhost" or (_is_ip(name) and ipaddress.ip_address(name).is_loopback)):
            errors.append(f"{key} names {name!r}: inside the stack's containers that is the container itself; use "
                          "the backend's DNS name or an address the server reaches it on")
    if values.get("postgres_external_host") is not None:
        if "postgres_password" in values and values["postgres_password"] is None:
            errors.append("postgres_password: required with postgres_external_host (the password of postgres_user "
                          "at the external database); set it, or $MLFLOW_STACK_POSTGRES_PASSWORD")
        if values.get("postgres_sslmode") in ("verify-ca", "verify-full") and values.get("postgres_ca_file") is None:
            errors.append(f"postgres_sslmode = {values['postgres_sslmode']!r} needs postgres_ca_file (the CA that "
                          "signed the database's certificate)")
    else:
        for key in ("postgres_ca_file",):
            if values.get(key) is not None:
                errors.append(f"{key}: only used with postgres_external_host, which is not set")
    if values.get("s3_endpoint_url") is not None:
        # The proxy terminates TLS for the bundled MinIO's presigned traffic; an external S3's
        # presigned URLs go to that store itself, which the proxy does not front.
        if values.get("tls", "off") != "off" and role == STANDALONE:
            errors.append(f"tls = {values['tls']!r} with s3_endpoint_url: the TLS proxy fronts the bundled MinIO "
                          "only; set tls = 'off' (the external S3 serves its own https) or use the bundled MinIO")
        if "s3_access_key" in values and values["s3_access_key"] is None:
            errors.append("s3_access_key: required with s3_endpoint_url (the access key ID at the external S3)")
        if "s3_secret_access_key" in values and values["s3_secret_access_key"] is None:
            errors.append("s3_secret_access_key: required with s3_endpoint_url; set it, or "
                          "$MLFLOW_STACK_S3_SECRET_ACCESS_KEY")
    else:
        for key in ("s3_access_key", "s3_secret_access_key", "s3_ca_file"):
            if values.get(key) is not None:
                errors.append(f"{key}: only used with s3_endpoint_url, which is not set")
    return errors
