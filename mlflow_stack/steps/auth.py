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
from mlflow_stack.facts.host import AuthUsersState
from mlflow_stack.steps.secrets import env_secrets


def users_argument(config: StackConfig) -> str:
    """`name=PERMISSION ...` for files/image/auth_users.py (names and permissions are validated)."""
    return " ".join(f"{user.name}={user.permission}" for user in config.mlflow_auth_users)


def passwords_command(stack_dir: str, admin: str) -> str:
    """Shell printing `name=password` for the admin and each listed user, from the root-only files."""
    return (f"{{ sed -n 's/^MLFLOW_AUTH_ADMIN_PASSWORD=/{admin}=/p' {stack_dir}/.env; "
            f"cat {stack_dir}/users.env 2>/dev/null; }}")


def synced_digest_command(stack_dir: str, admin: str, users: str) -> str:
    """Shell printing one digest of what the deploy wants (passwords, users, permissions) and of
    what MLflow's store holds for them (auth_users.py digest, no MLflow import), run where $id is
    the MLflow container; prints nothing when the store cannot be read that way."""
    return (f"rows=$(docker exec $id python /opt/mlflow-stack/auth_users.py digest {admin} {users} 2>/dev/null) "
            f'&& test -n "$rows" && {{ {passwords_command(stack_dir, admin)}; echo "$rows {users}"; }} '
            f"| sha256sum | cut -d' ' -f1")


def sync_command(config: StackConfig, mode: str) -> str:
    """Pipe the admin's and the users' passwords from the root-only files into the script; after
    `apply`, keep the digest of the synced store (`users.synced`: a later run compares it and
    starts no MLflow when nothing moved), or none when the store cannot be digested."""
    admin, users, stack = config.mlflow_auth_admin_user, users_argument(config), config.stack_dir
    command = (
        f"{passwords_command(stack, admin)} | "
        f"docker compose --project-directory {stack} --project-name {config.compose_project} "
        f"exec -T mlflow python /opt/mlflow-stack/auth_users.py {mode} {admin} {users}"
    ).rstrip()
    if mode != "apply":
        return command
    return (f"{command} && id=$(docker compose --project-directory {stack} --project-name {config.compose_project} "
            f"ps -q mlflow) && {{ digest=$({synced_digest_command(stack, admin, users)}); "
            f'if [ -n "$digest" ]; then (umask 077; echo "$digest" > {stack}/users.synced); '
            f"else rm -f {stack}/users.synced; fi; }}")


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
