"""Facts in, commands out for issue 6: secrets rotated on request, the database password
reconciled before the stack restarts, helper scripts uploaded, bounded waits, a smoke test
that fails without a traceback."""

from __future__ import annotations

import re
import subprocess

import pytest
from pyinfra.api.command import FunctionCommand

from mlflow_stack.steps import auth
from mlflow_stack.steps import secrets
from mlflow_stack.steps import stack
from mlflow_stack.steps import stack_files
from mlflow_stack.services import LONG_RUNNING_SERVICES, ONESHOT_SERVICES
from mlflow_stack.steps.stack_files import HELPER_SCRIPTS

from .helpers import HOST_NAME, NON_DEFAULT, REPO, host_data, make_config
from .plan import plan
from .test_plan import compose_up, converged_facts, deploy_file, fresh_facts, index, stdin_of, wait

APPLY_STEP = "Apply the database password"
APPLY_OP = f"{APPLY_STEP} | Give the database role the password in the secrets file"
SECRETS_OP = "Ensure the stack's secrets exist on the host | Ensure database and MinIO passwords in /srv/mlflow/.env"
HEX = re.compile(r"[0-9a-f]{64}")


def apply_script(config) -> str:
    return (f"sh {config.stack_dir}/apply-db-password.sh --stack-dir {config.stack_dir} "
            f"--project {config.compose_project} --db-role {config.postgres_user} --database {config.postgres_db} "
            f"--timeout {config.mlflow_health_timeout}")


def generate_command(commands: list[str]) -> str:
    (command,) = [c for c in commands if "/dev/urandom" in c]
    return command


def secrets_then_apply(config):
    stack.apply_database_password(config, secrets=secrets.ensure_secrets(config))


# --- rotation on request -----------------------------------------------------------------------


@pytest.mark.parametrize("rotate, keys", [
    (["postgres_password"], ["POSTGRES_PASSWORD"]),
    ("minio_root_password", ["MINIO_ROOT_PASSWORD"]),
    ("postgres_password,minio_root_password", ["POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"]),
], ids=["postgres", "minio", "both"])
def test_rotation_regenerates_exactly_the_named_keys(rotate, keys):
    config = make_config(rotate_secrets=rotate)
    facts = converged_facts(config)  # both keys present
    (op,) = [op for op in plan(secrets.ensure_secrets, config, facts).ops if op.commands]
    generate = generate_command(op.commands)
    assert generate.startswith("umask 077;")
    # the old lines of exactly these keys are dropped, every other line is kept
    assert f"grep -v -E '^({'|'.join(keys)})=' {config.secrets_file}" in generate
    for key in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"):
        assert (f'echo "{key}=$(' in generate) is (key in keys), key
        assert (key in generate) is (key in keys), key
    assert generate.endswith(f"> {config.secrets_file}.new && mv {config.secrets_file}.new {config.secrets_file}")
    assert op.commands[-1] == f"chown root:root {config.secrets_file} && chmod 600 {config.secrets_file}"
    assert not any(stdin_of(c) for c in op.raw)  # nothing given: nothing on stdin


def test_no_rotation_request_changes_nothing():
    config = make_config(rotate_secrets=[])
    assert plan(secrets.ensure_secrets, config, converged_facts(config)).changing == {}


def test_rotation_next_to_a_given_secret_leaves_the_given_one_alone():
    given = "Pg-Given.Secret_0123"
    config = make_config(postgres_password=given, rotate_secrets=["minio_root_password"])
    (op,) = [op for op in plan(secrets.ensure_secrets, config, converged_facts(config)).ops if op.commands]
    generate = generate_command(op.commands)
    assert "MINIO_ROOT_PASSWORD" in generate and "POSTGRES_PASSWORD" not in generate
    assert not any(given in c for c in op.commands)
    assert not any(stdin_of(c) for c in op.raw)  # the given one is current: not rewritten


def test_regenerate_ignores_a_key_with_a_given_value():
    # The config refuses this; the operation on its own still never replaces a given value
    # with a random one.
    config = make_config(postgres_password="Pg-Given.Secret_0123")
    facts = converged_facts(config)

    def step(config):
        secrets.env_secrets(path=config.secrets_file, values=secrets.secret_values(config),
                            regenerate=("POSTGRES_PASSWORD",))

    assert plan(step, config, facts).changing == {}


def test_secret_keys_cover_every_secret_setting():
    from mlflow_stack.config.settings import SECRET_ENV_VARS

    assert set(secrets.SECRET_KEYS) == set(SECRET_ENV_VARS)
    # The default (bundled) topology reads every secret but the external S3's key.
    assert set(secrets.secret_values(make_config())) == set(secrets.SECRET_KEYS.values()) - {"S3_SECRET_ACCESS_KEY"}


@pytest.mark.parametrize("rotate", [[], ["postgres_password"], ["minio_root_password"],
                                    ["postgres_password", "minio_root_password"]], ids=str)
def test_generated_values_never_appear_in_a_command(rotate):
    # generated on the host by a shell substitution inside a builtin echo: a planned command
    # holds no value, only the recipe
    config = make_config(rotate_secrets=rotate)
    result = plan(secrets.ensure_secrets, config, fresh_facts() if not rotate else converged_facts(config))
    for command in result.commands:
        assert not HEX.search(command.replace("0-9a-f", "")), command


def test_the_rewrite_really_keeps_other_lines_and_replaces_the_rotated_one(tmp_path):
    """Run the planned command in a shell against a real file."""
    config = make_config(stack_dir=str(tmp_path / "stack"), rotate_secrets=["postgres_password"])
    (tmp_path / "stack").mkdir()
    env = tmp_path / "stack" / ".env"
    old = {"POSTGRES_PASSWORD": "a" * 64, "MINIO_ROOT_PASSWORD": "b" * 64, "SOMETHING_ELSE": "kept"}
    env.write_text("".join(f"{k}={v}\n" for k, v in old.items()))
    env.chmod(0o644)
    (op,) = [op for op in plan(secrets.ensure_secrets, config, converged_facts(config)).ops if op.commands]
    for command in op.commands:
        subprocess.run(["sh", "-c", command], check=True, timeout=30)
    lines = env.read_text().splitlines()
    values = dict(line.split("=", 1) for line in lines)
    assert len(lines) == 3 and set(values) == set(old)
    assert values["MINIO_ROOT_PASSWORD"] == old["MINIO_ROOT_PASSWORD"] and values["SOMETHING_ELSE"] == "kept"
    assert HEX.fullmatch(values["POSTGRES_PASSWORD"]) and values["POSTGRES_PASSWORD"] != old["POSTGRES_PASSWORD"]
    assert env.stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "stack" / ".env.new").exists()


# --- the database password ---------------------------------------------------------------------


@pytest.mark.parametrize("state", ["differs", "unknown"])
def test_database_not_accepting_the_file_password_gets_it(state):
    config = make_config(**NON_DEFAULT)
    facts = converged_facts(config)
    facts["DatabasePasswordState"] = state
    result = plan(secrets_then_apply, config, facts)
    assert result.commands == [apply_script(config)]
    assert ("DatabasePasswordState", None) in result.asked


def test_apply_script_arguments_come_from_the_config():
    config = make_config(**NON_DEFAULT)
    assert apply_script(config) == (
        "sh /opt/mlflow-stack/apply-db-password.sh --stack-dir /opt/mlflow-stack --project mlops --db-role tracker "
        "--database tracking --timeout 120")


@pytest.mark.parametrize("state", ["matches", "none"])
def test_nothing_to_apply_when_the_database_agrees_or_does_not_exist(state):
    config = make_config()
    facts = converged_facts(config)
    facts["DatabasePasswordState"] = state
    assert plan(secrets_then_apply, config, facts).changing == {}


def test_changed_secrets_are_applied_to_a_matching_database():
    # A given password changed: the role still has the old one ("matches" the old file).
    config = make_config(postgres_password="Pg-New.Secret_01234")
    facts = converged_facts(config)
    facts["EnvFileDigests"][config.secrets_file]["POSTGRES_PASSWORD"] = "0" * 64
    changing = plan(secrets_then_apply, config, facts).changing
    assert list(changing)[-1] == APPLY_OP and changing[APPLY_OP] == [apply_script(config)]


def test_fresh_host_creates_the_database_with_the_file_password():
    # "none": no cluster yet; postgres initialises it from .env on the first start
    config = make_config()
    result = plan(secrets_then_apply, config, fresh_facts())
    assert result.changing and APPLY_OP not in result.changing


def test_without_a_secrets_operation_only_the_fact_decides():
    config = make_config()
    facts = converged_facts(config)
    assert plan(stack.apply_database_password, config, facts).changing == {}
    facts["DatabasePasswordState"] = "differs"
    assert plan(stack.apply_database_password, config, facts).commands == [apply_script(config)]


def test_converged_host_plans_zero_commands():
    config = make_config()
    result = plan(deploy_file, config, converged_facts(config), data=host_data())
    assert result.commands == []
    assert any(op.name == APPLY_OP for op in result.ops)


def test_lost_password_is_applied_before_compose_up():
    """The secrets file lost its database password: a new one is generated, given to the
    role, and only then does compose restart MLflow with it."""
    config = make_config()
    facts = converged_facts(config)
    del facts["EnvFileDigests"][config.secrets_file]["POSTGRES_PASSWORD"]
    facts["DatabasePasswordState"] = "differs"
    result = plan(deploy_file, config, facts, data=host_data())
    commands = result.commands
    generate = index(commands, "/dev/urandom")
    assert "POSTGRES_PASSWORD" in commands[generate] and "MINIO_ROOT_PASSWORD" not in commands[generate]
    assert generate < commands.index(apply_script(config)) < index(commands, "^" + re.escape(compose_up(config)))
    assert commands.index(wait(config)) > index(commands, "^" + re.escape(compose_up(config)))
    assert commands[-1] == "call _run_smoke_test"


def test_whole_secrets_file_lost_regenerates_both_and_applies():
    config = make_config()
    facts = converged_facts(config)
    facts["EnvFileDigests"] = {}
    facts["DatabasePasswordState"] = "differs"
    commands = plan(deploy_file, config, facts, data=host_data()).commands
    generate = commands[index(commands, "/dev/urandom")]
    assert "POSTGRES_PASSWORD" in generate and "MINIO_ROOT_PASSWORD" in generate
    assert commands.index(apply_script(config)) < index(commands, "^" + re.escape(compose_up(config)))


@pytest.mark.parametrize("rotate", ["postgres_password", "postgres_password,minio_root_password"])
def test_rotation_request_runs_apply_then_restarts_and_smoke_tests(rotate):
    config = make_config(rotate_secrets=rotate)
    result = plan(deploy_file, config, converged_facts(config), data=host_data(rotate_secrets=rotate))
    commands = result.commands
    assert index(commands, "/dev/urandom") < commands.index(apply_script(config))
    assert commands.index(apply_script(config)) < index(commands, "^" + re.escape(compose_up(config)))
    # a changed secrets file also has the user store checked against it before the smoke test
    assert commands[-3:] == [wait(config), auth.sync_command(config, "apply"), "call _run_smoke_test"]
    assert not any(c.startswith("docker build") for c in commands)


def test_unknown_state_on_a_stopped_stack_applies_then_starts():
    config = make_config()
    facts = converged_facts(config)
    facts["ComposeServices"] = {}
    facts["DatabasePasswordState"] = "unknown"
    commands = plan(deploy_file, config, facts, data=host_data()).commands
    assert commands[:1] == [apply_script(config)]
    assert commands[1].startswith(compose_up(config)) and commands[2] == wait(config)


def test_database_differing_from_an_unchanged_file_restarts_mlflow_after_apply():
    config = make_config()
    facts = converged_facts(config)
    facts["DatabasePasswordState"] = "differs"
    commands = plan(deploy_file, config, facts, data=host_data()).commands
    assert commands[0] == apply_script(config)
    assert any(c.startswith(compose_up(config)) for c in commands[1:])


def test_deploy_py_applies_the_password_between_archives_and_start():
    config = make_config()
    facts = converged_facts(config)
    facts["DatabasePasswordState"] = "differs"
    del facts["EnvFileDigests"][config.secrets_file]["POSTGRES_PASSWORD"]
    result = plan(deploy_file, config, facts, data=host_data())
    steps = []
    for op in result.ops:
        step = op.name.split(" | ")[0]
        if op.commands and step not in steps:
            steps.append(step)
    assert steps == ["Ensure the stack's secrets exist on the host", APPLY_STEP,
                     "Build the MLflow image and start the stack", "Keep MLflow's users",
                     "Verify the stack from the control machine"]
    source = (REPO / "deploy.py").read_text()
    assert source.index("load_image_archives(config)") < source.index("apply_database_password(") \
        < source.index("start_stack(config")


# --- helper scripts, bounded compose, wait command -------------------------------------------------


def test_helper_scripts_are_uploaded_executable():
    config = make_config(**NON_DEFAULT)
    result = plan(stack_files.upload_stack_files, config, fresh_facts())
    assert set(HELPER_SCRIPTS) == {"wait-healthy.sh", "apply-db-password.sh", "backup-before-migrate.sh", "backup.sh",
                                   "restore.sh", "gc.sh", "tls-certs.sh", "job-result.sh"}
    for script in HELPER_SCRIPTS:
        path = f"{config.stack_dir}/{script}"
        assert result.uploads[path] == (REPO / "files" / "host" / script).read_bytes()
        assert f"chmod 755 {path}" in result.commands and f"chown root:root {path}" in result.commands


@pytest.mark.parametrize("script", HELPER_SCRIPTS)
def test_changed_helper_script_does_not_restart_the_stack(script):
    from .plan import sha1

    config = make_config()
    facts = converged_facts(config)
    facts["Sha1File"][f"{config.stack_dir}/{script}"] = sha1("old script")
    changing = plan(lambda c: stack.start_stack(c, changed=stack_files.upload_stack_files(c)), config, facts).changing
    assert list(changing) == [f"Upload the stack files | Upload {script}"]


@pytest.mark.parametrize("timeout", [45, 300])
def test_compose_up_is_bounded_by_the_health_timeout(timeout):
    config = make_config(mlflow_health_timeout=timeout)
    commands = plan(stack.start_stack, config, fresh_facts()).commands
    (up,) = [c for c in commands if " up -d" in c]
    assert up.startswith(f"timeout {timeout} docker compose --project-directory {config.stack_dir} ")
    assert commands[-1] == (f"sh {config.stack_dir}/wait-healthy.sh --project {config.compose_project} --timeout {timeout} "
                            "--interval 2 --oneshot create-bucket --oneshot migrate-db --service postgres --service minio "
                            "--service mlflow --service mlflow-api --service proxy")


def test_wait_command():
    config = make_config(**NON_DEFAULT)
    assert stack.wait_command(config, "postgres") == \
        "sh /opt/mlflow-stack/wait-healthy.sh --project mlops --timeout 120 --interval 7 --service postgres"
    assert stack.wait_command(config, *LONG_RUNNING_SERVICES, oneshots=ONESHOT_SERVICES) == (
        "sh /opt/mlflow-stack/wait-healthy.sh --project mlops --timeout 120 --interval 7 --oneshot create-bucket --oneshot migrate-db "
        + " ".join(f"--service {name}" for name in LONG_RUNNING_SERVICES))
    assert stack.wait_command(config, "postgres", oneshots=("create-bucket",)) == (
        "sh /opt/mlflow-stack/wait-healthy.sh --project mlops --timeout 120 --interval 7 --oneshot create-bucket --service postgres")


# --- the smoke test operation --------------------------------------------------------------------


def test_smoke_test_names_the_log_command():
    from mlflow_stack.steps import verify

    config = make_config(**NON_DEFAULT)
    result = plan(verify.verify_stack, config, fresh_facts())
    (call,) = [c for op in result.ops for c in op.raw if isinstance(c, FunctionCommand)]
    assert call.function is verify._run_smoke_test
    assert call.kwargs == {
        "tracking_uri": config.tracking_uri,
        "logs_hint": f"ssh {HOST_NAME} sudo docker compose --project-name mlops logs mlflow minio",
        "admin": ("admin", "/opt/mlflow-stack/.env", "MLFLOW_AUTH_ADMIN_PASSWORD"),
        "ca_file": None,  # TLS off in NON_DEFAULT
        "health_only": False,  # a balancer's: it keeps no admin password
        "timeout": 30,  # each call's (verify.request_timeout of NON_DEFAULT's 120 s health timeout)
    }
