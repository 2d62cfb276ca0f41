"""The one system account all containers run as, and the directories it owns."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import DeployError, deploy
from pyinfra.operations import files, server

from mlflow_stack.config import StackConfig, config_from_host
from mlflow_stack.facts.host import IdOwners
from mlflow_stack.services import data_dirs


def check_ids_free(config: StackConfig) -> None:
    """Refuse ids that belong to another name (chowning data to them would hand the data to
    that account) and an existing account whose ids differ from the config (pyinfra would
    keep its ids while the containers run as the configured ones)."""
    owners = host.get_fact(IdOwners, uid=config.stack_uid, gid=config.stack_gid, account=config.stack_user)
    problems = []
    if owners.get("name_uid") not in (None, config.stack_uid):
        problems.append(f"user {config.stack_user!r} already exists with uid {owners['name_uid']}, not stack_uid = {config.stack_uid}")
    if owners.get("name_gid") not in (None, config.stack_gid):
        problems.append(f"group {config.stack_user!r} already exists with gid {owners['name_gid']}, not stack_gid = {config.stack_gid}")
    if owners["user"] not in (None, config.stack_user):
        problems.append(f"stack_uid = {config.stack_uid} already belongs to user {owners['user']!r}")
    if owners["group"] not in (None, config.stack_user):
        problems.append(f"stack_gid = {config.stack_gid} already belongs to group {owners['group']!r}")
    if problems:
        raise DeployError(f"on {host.name}: " + "; ".join(problems) + "; choose free ids, or the existing account's name and ids")


@deploy("Create the service account and stack directories")
def create_service_account(config: StackConfig | None = None):
    config = config or config_from_host()
    check_ids_free(config)
    server.group(name=f"Create group {config.stack_user}", group=config.stack_user, gid=config.stack_gid, system=True)
    server.user(
        name=f"Create user {config.stack_user}",
        user=config.stack_user,
        uid=config.stack_uid,
        group=config.stack_user,
        home=config.stack_dir,
        shell="/usr/sbin/nologin",
        system=True,
        ensure_home=False,
        comment="MLflow stack containers",
    )
    # Written by root (pyinfra) only: compose file, build context, secrets.
    for path, mode in ((config.stack_dir, "755"), (config.build_dir, "755"), (config.data_dir, "755")):
        files.directory(name=f"Ensure {path} exists", path=path, user="root", group="root", mode=mode)
    # Written by the containers, so owned by the user they run as.
    for subdir, mode in data_dirs(config.services).items():
        files.directory(
            name=f"Ensure {config.data_dir}/{subdir} is owned by {config.stack_user}",
            path=f"{config.data_dir}/{subdir}",
            user=config.stack_user,
            group=config.stack_user,
            mode=mode,
        )
