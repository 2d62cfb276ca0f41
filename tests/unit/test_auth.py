"""Authentication: its settings, the users' passwords on the host, the user-store step
(facts in, commands out), the compose file and auth.ini, the summary."""

from __future__ import annotations

import configparser
import hashlib

import pytest
import yaml

from mlflow_stack.steps import auth
from mlflow_stack.steps import verify
from mlflow_stack.config import ConfigError, load_config
from mlflow_stack.facts.host import AuthUsersState
from mlflow_stack.steps.stack_files import compose_file, render

from .helpers import HOST_NAME, host_data, make_config
from .plan import plan

SYNC_OP = "Keep MLflow's users | Make MLflow's user store match the admin and mlflow_auth_users"
USERS = [{"name": "alice", "permission": "READ"}, {"name": "bob", "permission": "ADMIN",
                                                    "password": "Bob-Given.Password_1"}]


def config_error(**overrides) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(host_data(**overrides), HOST_NAME, environ={})
    return str(caught.value)


# --- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("users, expected", [
    ([{"name": "alice", "permission": "WRITE"}], "('alice': permission 'WRITE')"),
    ([{"name": "alice", "permission": "read"}], "('alice': permission 'read')"),
    ([{"name": "Alice", "permission": "READ"}], "(entry 1: bad or missing name)"),
    ([{"name": "a=b", "permission": "READ"}], "(entry 1: bad or missing name)"),
    ([{"permission": "READ"}], "(entry 1: bad or missing name)"),
    ([{"name": "alice", "permission": "READ", "role": "x"}], "(entry 1 is not such a mapping)"),
    (["alice"], "(entry 1 is not such a mapping)"),
    ([{"name": "alice", "permission": "READ"}, {"name": "alice", "permission": "EDIT"}], "(a name appears twice)"),
    ("alice", "must be a list of"),
])
def test_bad_users_are_named_without_showing_the_value(users, expected):
    message = config_error(mlflow_auth_users=users)
    assert "mlflow_auth_users = <hidden>: must be a list of" in message
    assert expected in message


def test_a_bad_given_user_password_is_reported_but_never_shown():
    secret = "short~secret"[:8]
    message = config_error(mlflow_auth_users=[{"name": "alice", "permission": "READ", "password": secret}])
    assert "('alice': the given password)" in message
    assert secret not in message


def test_the_admin_cannot_also_be_a_listed_user():
    message = config_error(mlflow_auth_users=[{"name": "admin", "permission": "READ"}])
    assert "mlflow_auth_users names 'admin', the mlflow_auth_admin_user" in message


def test_a_user_permission_below_the_default_is_refused():
    message = config_error(mlflow_auth_default_permission="EDIT", mlflow_auth_users=USERS)
    assert "mlflow_auth_users gives 'alice' READ, less than mlflow_auth_default_permission = 'EDIT'" in message
    assert "'bob'" not in message  # ADMIN is above any default
    make_config(mlflow_auth_default_permission="NO_PERMISSIONS", mlflow_auth_users=USERS)


@pytest.mark.parametrize("overrides, expected", [
    ({"mlflow_auth": "yes"}, "mlflow_auth = 'yes': must be True or False"),
    ({"mlflow_auth_default_permission": "WRITE"},
     "mlflow_auth_default_permission = 'WRITE': must be one of 'READ', 'EDIT', 'MANAGE', 'NO_PERMISSIONS'"),
    ({"mlflow_auth_admin_user": "Root Admin"}, "mlflow_auth_admin_user = 'Root Admin': must be lowercase letters"),
    ({"mlflow_auth_admin_password": "too-short"}, "mlflow_auth_admin_password = <hidden>: must be None"),
    ({"mlflow_flask_server_secret_key": "x y"}, "mlflow_flask_server_secret_key = <hidden>: must be None"),
])
def test_bad_auth_settings(overrides, expected):
    assert expected in config_error(**overrides)


def test_admin_password_and_secret_key_can_be_rotated_or_given_by_environment():
    config = make_config(rotate_secrets="mlflow_auth_admin_password,mlflow_flask_server_secret_key")
    assert config.rotate_secrets == ("mlflow_auth_admin_password", "mlflow_flask_server_secret_key")
    given = "From-The.Environment_1"
    config = make_config(environ={"MLFLOW_STACK_MLFLOW_AUTH_ADMIN_PASSWORD": given})
    assert config.mlflow_auth_admin_password == given


def test_a_given_user_password_is_kept_but_not_shown_in_the_config_repr():
    config = make_config(mlflow_auth_users=USERS)
    assert [(u.name, u.permission, u.password) for u in config.mlflow_auth_users] == [
        ("alice", "READ", None), ("bob", "ADMIN", "Bob-Given.Password_1")]
    assert "Bob-Given.Password_1" not in repr(config)


# --- rendered files ------------------------------------------------------------------------------


def test_auth_ini_names_the_tracking_database_without_a_password():
    config = make_config(mlflow_auth_default_permission="EDIT", postgres_password="Pg-Given.Secret_0123")
    text = render("auth.ini.j2", config)
    ini = configparser.ConfigParser()
    ini.read_string(text)
    assert dict(ini["mlflow"]) == {"default_permission": "EDIT", "admin_username": "admin",
                                   "database_uri": "postgresql+psycopg2://mlflow@postgres:5432/mlflow",
                                   "authorization_function": "cached_basic_auth:authenticate_request"}
    assert dict(ini["mlflow_stack"]) == {"credential_cache_seconds": "300"}
    assert "Pg-Given.Secret_0123" not in text


def test_auth_ini_change_recreates_mlflow():
    """MLflow reads auth.ini at start only: the compose entry carries its digest."""
    def label(**settings):
        mlflow = yaml.safe_load(compose_file(make_config(**settings)))["services"]["mlflow"]
        return mlflow["labels"]["mlflow-stack.auth-ini-sha256"]

    assert label() == label()
    assert label(mlflow_auth_cache_seconds=30) != label()
    assert label(mlflow_auth_default_permission="EDIT") != label()


@pytest.mark.parametrize("value", [-1, 86401, "60", True])
def test_auth_cache_seconds_range(value):
    assert "mlflow_auth_cache_seconds" in config_error(mlflow_auth_cache_seconds=value)


def test_compose_runs_basic_auth_with_its_secrets_from_the_env_file():
    config = make_config()
    mlflow = yaml.safe_load(compose_file(config))["services"]["mlflow"]
    assert "--app-name=basic-auth" in mlflow["command"]
    environment = mlflow["environment"]
    for key in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert environment[key].startswith(f"${{{key}:?")
    assert environment["PGPASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert f"{config.stack_dir}/auth.ini:/etc/mlflow-stack/auth.ini:ro" in mlflow["volumes"]
    assert "MLFLOW_AUTH_CONFIG_PATH=/etc/mlflow-stack/auth.ini" in render("mlflow.env.j2", config).splitlines()


def test_auth_off_is_one_setting_and_drops_the_app():
    mlflow = yaml.safe_load(compose_file(make_config(mlflow_auth=False)))["services"]["mlflow"]
    assert not any(arg.startswith("--app-name") for arg in mlflow["command"])


# --- the users' passwords and the user store -----------------------------------------------------


def test_listed_users_get_generated_or_given_passwords_in_a_root_only_file():
    config = make_config(mlflow_auth_users=USERS)
    result = plan(auth.ensure_user_passwords, config, {})
    (op,) = [op for op in result.ops if op.commands]
    generate = [c for c in op.commands if "/dev/urandom" in c]
    assert len(generate) == 1 and 'echo "alice=$(' in generate[0] and "bob" not in generate[0]
    stdin = [c.connector_arguments.get("_stdin") for c in op.raw if getattr(c, "connector_arguments", {}).get("_stdin")]
    assert stdin == ["bob=Bob-Given.Password_1\n"]
    assert not any("Bob-Given.Password_1" in c for c in op.commands)
    assert op.commands[-1] == f"chown root:root {config.users_file} && chmod 600 {config.users_file}"


def test_user_passwords_present_plan_nothing():
    config = make_config(mlflow_auth_users=USERS)
    digests = {"alice": hashlib.sha256(b"generated").hexdigest(),
               "bob": hashlib.sha256(b"Bob-Given.Password_1").hexdigest()}
    result = plan(auth.ensure_user_passwords, config, {"EnvFileDigests": {config.users_file: digests}})
    assert result.changing == {}


@pytest.mark.parametrize("state", ["differs", "unknown"])
def test_a_store_that_differs_or_cannot_be_asked_is_synced(state):
    config = make_config(mlflow_auth_users=USERS)
    result = plan(auth.sync_users, config, {"AuthUsersState": state})
    [command] = result.op(SYNC_OP).commands
    assert command.startswith(
        "{ sed -n 's/^MLFLOW_AUTH_ADMIN_PASSWORD=/admin=/p' /srv/mlflow/.env; cat /srv/mlflow/users.env 2>/dev/null; } "
        "| docker compose --project-directory /srv/mlflow --project-name mlflow exec -T mlflow "
        "python /opt/mlflow-stack/auth_users.py apply admin alice=READ bob=ADMIN && ")
    # The synced store's digest is kept for the next run's fact, or dropped when there is none.
    assert "auth_users.py digest admin alice=READ bob=ADMIN" in command
    assert "> /srv/mlflow/users.synced" in command and "rm -f /srv/mlflow/users.synced" in command


def test_a_store_in_sync_plans_nothing():
    result = plan(auth.sync_users, make_config(mlflow_auth_users=USERS), {"AuthUsersState": "in-sync"})
    assert result.changing == {}


def test_auth_off_has_no_user_steps_and_asks_nothing():
    config = make_config(mlflow_auth=False, mlflow_auth_users=USERS)
    for step in (auth.ensure_user_passwords, auth.sync_users):
        result = plan(step, config, {})
        assert result.ops == [] and result.asked == []


@pytest.mark.parametrize("output, state", [
    (["in-sync"], "in-sync"),
    (["differs: alice: password"], "differs"),
    (["updated admin: missing", "in-sync"], "differs"),
    (["unknown"], "unknown"),
    ([], "unknown"),
])
def test_user_store_fact(output, state):
    assert AuthUsersState().process(output) == state


def test_user_store_fact_pipes_passwords_and_prints_no_value():
    command = AuthUsersState().command(stack_dir="/srv/mlflow", project="mlflow", admin="admin", users="alice=READ")
    assert "docker exec -i $id python /opt/mlflow-stack/auth_users.py check admin alice=READ" in command
    assert "sed -n 's/^MLFLOW_AUTH_ADMIN_PASSWORD=/admin=/p' /srv/mlflow/.env" in command


# --- the summary -------------------------------------------------------------------------------------


def summary_lines(config) -> list[str]:
    from pyinfra.api import Config, Inventory, State
    from pyinfra.context import ctx_host, ctx_state

    inventory = Inventory(([HOST_NAME], {}))
    state = State(inventory, Config())
    with ctx_state.use(state), ctx_host.use(inventory.get_host(HOST_NAME)):
        return verify.summary(config).split(" | ")


def test_summary_says_where_credentials_are_and_warns_about_plain_http():
    lines = summary_lines(make_config(mlflow_auth_users=USERS, tls="off"))
    text = "\n".join(lines)
    assert "MLFLOW_TRACKING_USERNAME=<user> MLFLOW_TRACKING_PASSWORD=<password>" in text
    assert "MLFLOW_AUTH_ADMIN_PASSWORD in /srv/mlflow/.env" in text
    # The exact command that reads it (the value itself never printed).
    assert f"read it with: ssh root@{HOST_NAME} sudo sed -n 's/^MLFLOW_AUTH_ADMIN_PASSWORD=//p' /srv/mlflow/.env" in text
    assert "users alice, bob: passwords in /srv/mlflow/users.env" in text
    assert any(line.startswith("WARNING: plain HTTP") for line in lines)
    assert "Bob-Given.Password_1" not in text


def test_summary_with_tls_names_the_ca_for_clients_and_gives_no_warning():
    lines = summary_lines(make_config(mlflow_auth_users=USERS))
    text = "\n".join(lines)
    assert "MLflow is at https://mlflow.example.org:5000" in text
    assert "REQUESTS_CA_BUNDLE" in text and "tls/mlflow.example.org/ca.crt" in text
    assert "WARNING: plain HTTP" not in text


def test_summary_of_an_open_server_says_so():
    text = "\n".join(summary_lines(make_config(mlflow_auth=False)))
    assert "authentication is OFF" in text
    assert "MLFLOW_TRACKING_PASSWORD" not in text and "WARNING: plain HTTP" not in text
