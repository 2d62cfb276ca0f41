"""MLflow's basic authentication: the listed users' passwords on the host, and MLflow's user
store kept equal to the config (the admin and mlflow_auth_users).

MLflow reads the configured admin password only when it creates the admin on its first
start; later changes reach its store through this step, like every listed user's.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import server
from pyinfra.operations.util import any_changed

from mlflow_stack.config import StackConfig, config_from_host
from mlflow_stack.facts import AuthUsersState
from mlflow_stack.secrets import env_secrets


def users_argument(config: StackConfig) -> str:
    """`name=PERMISSION ...` for templates/auth_users.py (names and permissions are validated)."""
    return " ".join(f"{user.name}={user.permission}" for user in config.mlflow_auth_users)


def sync_command(config: StackConfig, mode: str) -> str:
    """Pipe the admin's and the users' passwords from the root-only files into the script."""
    return (
        f"{{ sed -n 's/^MLFLOW_AUTH_ADMIN_PASSWORD=/{config.mlflow_auth_admin_user}=/p' {config.secrets_file}; "
        f"cat {config.users_file} 2>/dev/null; }} | "
        f"docker compose --project-directory {config.stack_dir} --project-name {config.compose_project} "
        f"exec -T mlflow python /opt/mlflow-stack/auth_users.py {mode} {config.mlflow_auth_admin_user} "
        f"{users_argument(config)}"
    ).rstrip()


@deploy("Ensure the MLflow users' passwords exist on the host")
def ensure_user_passwords(config: StackConfig | None = None):
    """Returns the operation (None when authentication is off), whose change means MLflow's
    user store must be updated."""
    config = config or config_from_host()
    if not config.mlflow_auth or not config.keeps_cluster_state:  # one tracking server keeps a cluster's users
        return None
    return env_secrets(
        name=f"Ensure a password for each of mlflow_auth_users in {config.users_file}",
        path=config.users_file,
        values={user.name: user.password for user in config.mlflow_auth_users},
    )


@deploy("Keep MLflow's users")
def sync_users(config: StackConfig | None = None, changed=()):
    """After the stack is up: create missing users and bring passwords, admin flags and
    permissions to the config's, when the store differs (asked while planning) or a password
    changed on this run (`changed`: the secrets operations)."""
    config = config or config_from_host()
    if not config.mlflow_auth or not config.keeps_cluster_state:  # one tracking server keeps a cluster's users
        return None
    state = host.get_fact(AuthUsersState, stack_dir=config.stack_dir, project=config.compose_project,
                          admin=config.mlflow_auth_admin_user, users=users_argument(config))
    passwords_changed = any_changed(*(op for op in changed if op is not None))
    return server.shell(
        name="Make MLflow's user store match the admin and mlflow_auth_users",
        commands=[sync_command(config, "apply")],
        _if=lambda: state != "in-sync" or passwords_changed(),
    )
