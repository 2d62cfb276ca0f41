"""Which part of an MLflow cluster a host plays, from the inventory groups it is in.

A host in none of the cluster groups (e.g. `mlflow_servers`) runs the whole stack alone. In a
cluster the data host runs the bundled PostgreSQL and MinIO for the tracking servers, the
tracking servers run MLflow only against them (or against external backends), and the
balancer spreads clients over the tracking servers and fronts the data host's S3 API for
presigned URLs. Each host's config knows the others' addresses (resolved here, on the control
machine, once) and is checked against the settings every member must share.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

# Inventory group -> the role of its hosts (documented in inventory.py).
ROLE_GROUPS = {"mlflow_data_hosts": "data", "mlflow_tracking_servers": "tracking", "mlflow_balancers": "balancer"}
STANDALONE = "standalone"

# Settings every member of a cluster must agree on: the shared database, bucket, ports, image
# version (one schema) and the secrets each member must know.
SHARED_SETTINGS = ("mlflow_version", "postgres_db", "postgres_user", "postgres_password", "postgres_port",
                   "minio_root_user", "minio_root_password", "minio_bucket", "minio_bucket_prefix", "minio_api_port",
                   "mlflow_port", "mlflow_auth", "mlflow_auth_admin_user", "mlflow_auth_admin_password",
                   "mlflow_flask_server_secret_key", "postgres_external_host", "s3_endpoint_url", "tls")
# Secrets the deploy cannot generate per host in a cluster: every member needs the same value.
SHARED_SECRETS = {"data": ("postgres_password", "minio_root_password"),
                  "tracking": ("postgres_password", "minio_root_password", "mlflow_auth_admin_password",
                               "mlflow_flask_server_secret_key")}


@dataclass(frozen=True)
class Member:
    name: str     # inventory name
    address: str  # IPv4 address the other members reach it by


@dataclass(frozen=True)
class Cluster:
    role: str
    data_host: Member | None = None
    tracking_servers: tuple[Member, ...] = ()
    balancers: tuple[Member, ...] = ()
    # The name clients use: the balancer's public host (its mlflow_public_host or inventory name).
    public_host: str | None = None

    @property
    def leader(self) -> Member | None:
        """The tracking server that migrates the schema and keeps the users, once per cluster."""
        return self.tracking_servers[0] if self.tracking_servers else None


class ClusterError(ValueError):
    pass


def role_of(groups) -> str:
    """The host's role by its groups; ClusterError if it is in two role groups."""
    roles = sorted({ROLE_GROUPS[group] for group in groups if group in ROLE_GROUPS})
    if len(roles) > 1:
        raise ClusterError(f"in the groups of {', '.join(roles)} at once: a host plays one part of a cluster "
                           "(inventory.py)")
    return roles[0] if roles else STANDALONE


def member_address(name: str, data: dict, resolve=socket.gethostbyname) -> str:
    """`cluster_address`, else the SSH host name or inventory name, as an IPv4 address."""
    given = data.get("cluster_address") or data.get("ssh_hostname") or name
    try:
        ipaddress.IPv4Address(given)
        return given
    except ValueError:
        pass
    try:
        return resolve(given)
    except OSError as error:
        raise ClusterError(f"{name}: cannot resolve {given!r} on this machine ({error}); set cluster_address "
                           "to the IPv4 address the other members reach it by") from None


def cluster_of(host, inventory, resolve=socket.gethostbyname) -> Cluster:
    """The cluster `host` is part of, from pyinfra's inventory (role standalone: no members)."""
    role = role_of(host.groups)
    if role == STANDALONE:
        return Cluster(role)
    members = {group: [h for h in inventory.get_group(group, [])] for group in ROLE_GROUPS}
    errors = []
    for group in ("mlflow_data_hosts", "mlflow_balancers"):
        if len(members[group]) > 1:
            errors.append(f"{group} has {len(members[group])} hosts: a cluster has at most one")
    if not members["mlflow_tracking_servers"]:
        errors.append("mlflow_tracking_servers is empty: a cluster needs at least one tracking server")
    if members["mlflow_data_hosts"] and not members["mlflow_balancers"]:
        errors.append("mlflow_data_hosts needs a host in mlflow_balancers: clients reach the data host's S3 API "
                      "(presigned URLs) through the balancer, the data host itself is open to the cluster only")
    everyone = [h for group in ROLE_GROUPS for h in members[group]]
    for key in SHARED_SETTINGS:
        values = {h.name: h.data.get(key) for h in everyone}
        if len({repr(v) for v in values.values()}) > 1:
            hidden = "password" in key or "secret" in key
            shown = ", ".join(f"{name}: {'<hidden>' if hidden else repr(v)}" for name, v in values.items())
            errors.append(f"{key} differs between the members of the cluster ({shown}); set it once for all "
                          "(group_data/all.py or the environment)")
    if errors:
        raise ClusterError("; ".join(errors))

    def member(h) -> Member:
        return Member(h.name, member_address(h.name, h.data.dict(), resolve))

    balancers = tuple(member(h) for h in members["mlflow_balancers"])
    public_host = None
    if members["mlflow_balancers"]:
        balancer = members["mlflow_balancers"][0]
        public_host = balancer.data.get("mlflow_public_host") or balancer.name
    return Cluster(role=role,
                   data_host=member(members["mlflow_data_hosts"][0]) if members["mlflow_data_hosts"] else None,
                   tracking_servers=tuple(member(h) for h in members["mlflow_tracking_servers"]),
                   balancers=balancers, public_host=public_host)
