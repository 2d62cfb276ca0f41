"""Keep MLflow's user store equal to the deploy's users: the admin and mlflow_auth_users.

Run by the deploy inside the MLflow container, against the store the server uses (the auth
config file named by MLFLOW_AUTH_CONFIG_PATH). Passwords come on stdin, one `name=password`
line per user, never in argv; only names are printed.

    python auth_users.py check|apply|digest ADMIN NAME=PERMISSION...

check: prints `in-sync`, or one `differs: <name>: <what>` line per difference.
apply: makes the store match (creates users, resets passwords, sets the admin flag and each
listed user's permission on every experiment and registered model), prints what it did.
digest: prints a digest of what the store holds for these users (their rows and grants on
every resource), read with psycopg2 alone in a fraction of a second: the deploy keeps the
digest of the last sync and runs check/apply (which import MLflow, seconds) only when it moved.
MLflow keeps a password only as a hash: the store is asked whether it accepts a password,
and a changed password is set through the store, as MLflow's update-password API does.
"""

import configparser
import hashlib
import os
import sys

# A listed user's permission applies to every resource of these types ("*": any id).
RESOURCE_TYPES = ("experiment", "registered_model")


def wanted_users(argv: list[str], stdin_lines: list[str]) -> list[tuple[str, str, str]]:
    """(name, permission or ADMIN, password) for the admin and each listed user."""
    passwords = dict(line.rstrip("\n").split("=", 1) for line in stdin_lines if "=" in line)
    admin, listed = argv[0], [arg.split("=", 1) for arg in argv[1:]]
    missing = [name for name in [admin, *(name for name, _ in listed)] if not passwords.get(name)]
    if missing:
        sys.exit(f"no password on stdin for: {', '.join(missing)}")
    return [(admin, "ADMIN", passwords[admin])] + [(name, perm, passwords[name]) for name, perm in listed]


def grant(store, name: str, resource_type: str) -> str | None:
    permission = store.get_role_permission_for_resource(
        store.get_user(name).id, resource_type, "*", store._get_active_workspace_name())
    return permission.name if permission is not None else None


def differences(store, name: str, permission: str, password: str) -> list[str]:
    if not store.has_user(name):
        return ["missing"]
    found = []
    if not store.authenticate_user(name, password):
        found.append("password")
    if store.get_user(name).is_admin != (permission == "ADMIN"):
        found.append("admin flag")
    if permission != "ADMIN":
        found += [f"{resource_type} permission" for resource_type in RESOURCE_TYPES
                  if grant(store, name, resource_type) != permission]
    return found


def apply(store, name: str, permission: str, password: str, found: list[str]) -> None:
    if "missing" in found:
        store.create_user(name, password, is_admin=permission == "ADMIN")
    elif "password" in found or "admin flag" in found:
        store.update_user(name, password=password, is_admin=permission == "ADMIN")
    if permission != "ADMIN":
        for resource_type in RESOURCE_TYPES:
            current = grant(store, name, resource_type)
            if current == permission:
                continue
            if current is not None:
                store.revoke_user_resource_permission(name, resource_type, "*")
            store.grant_user_resource_permission(name, resource_type, "*", permission)


# The users' rows and their grants on every resource ("*"), in MLflow's role tables (3.17).
# Another schema makes the query fail: the deploy then asks `check`.
DIGEST_QUERIES = (
    "select username, password_hash, is_admin from users where username = any(%s) order by username",
    "select u.username, r.workspace, p.resource_type, p.resource_pattern, p.permission from users u "
    "join user_role_assignments a on a.user_id = u.id join roles r on r.id = a.role_id "
    "join role_permissions p on p.role_id = r.id where u.username = any(%s) and p.resource_pattern = '*' "
    "order by 1, 2, 3, 4, 5",
)


def store_digest(names: list[str]) -> str:
    import psycopg2

    config = configparser.ConfigParser()
    config.read(os.environ["MLFLOW_AUTH_CONFIG_PATH"])
    uri = config["mlflow"]["database_uri"].replace("postgresql+psycopg2://", "postgresql://", 1)
    digest = hashlib.sha256()
    with psycopg2.connect(uri) as connection, connection.cursor() as cursor:  # the password: PGPASSWORD
        for query in DIGEST_QUERIES:
            cursor.execute(query, (names,))
            digest.update(repr(cursor.fetchall()).encode())
    return digest.hexdigest()


def main() -> int:
    mode, argv = sys.argv[1], sys.argv[2:]
    # Without it MLflow would fall back to a SQLite store in the working directory.
    if not os.environ.get("MLFLOW_AUTH_CONFIG_PATH"):
        sys.exit("MLFLOW_AUTH_CONFIG_PATH is not set: this MLflow runs without authentication")
    if mode == "digest":
        print(store_digest([argv[0], *(arg.split("=", 1)[0] for arg in argv[1:])]))
        return 0
    from mlflow.server.auth.config import read_auth_config
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    users = wanted_users(argv, sys.stdin.readlines())
    store = SqlAlchemyStore()
    store.init_db(read_auth_config().database_uri)
    in_sync = True
    for name, permission, password in users:
        found = differences(store, name, permission, password)
        if not found:
            continue
        in_sync = False
        if mode == "apply":
            apply(store, name, permission, password, found)
            print(f"updated {name}: {', '.join(found)}")
        else:
            print(f"differs: {name}: {', '.join(found)}")
    if in_sync:
        print("in-sync")
    return 0


if __name__ == "__main__":
    sys.exit(main())
