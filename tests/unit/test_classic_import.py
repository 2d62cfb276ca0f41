"""Issue 11, facts in, commands out: the classic import's settings, its plan fact, the
operation that runs the importer only when there is something to import, and the importer's
mapping of the old server's artifact paths onto the host directory."""

from __future__ import annotations

import importlib.util
from unittest import mock

import pytest
from pyinfra.api import DeployError

from mlflow_stack.verbs import classic_import
from mlflow_stack.verbs.classic_import import ClassicImportPlan, describe, parse_plan
from mlflow_stack.config import ConfigError

from .helpers import REPO, make_config
from .plan import plan

STORE = "/srv/old-mlflow/mlruns"
READY = {"state": "ready", "experiments": 2, "runs": 5, "logged_models": 0, "registered_models": 1,
         "model_versions": 2, "aliases": 1}
NOTHING = {**READY, **dict.fromkeys(classic_import.COUNTS, 0)}


# --- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["mlruns", "/srv/old/../etc", "/srv/old/", "/srv/old mlflow", "/srv/a:b", "/", 5])
def test_a_store_that_is_not_a_plain_absolute_path_is_refused(value):
    with pytest.raises(ConfigError, match="classic_backend_store = .*must be None or a host path"):
        make_config(classic_backend_store=value)


DATABASE = "postgresql://mlflow_old@db.lab.example:5433/mlflow"


def test_a_postgresql_uri_without_password_is_a_store_and_needs_the_artifact_root():
    config = make_config(classic_backend_store=DATABASE, classic_artifact_root="/srv/old/mlartifacts",
                         environ={"MLFLOW_STACK_CLASSIC_DATABASE_PASSWORD": "old secret"})
    assert config.classic_backend_store == DATABASE and config.classic_database_password == "old secret"
    with pytest.raises(ConfigError, match="classic_artifact_root: required when classic_backend_store is a database"):
        make_config(classic_backend_store=DATABASE)


@pytest.mark.parametrize("value, message", [
    ("postgresql://old:s3cret-pw@db/mlflow", "without the password"),
    ("mysql://old@db/mlflow", "MySQL is not supported"),
    ("postgresql://old@localhost/mlflow", "'localhost' there is the container itself"),
    ("postgresql://old@db/mlflow?options=x", "postgresql://USER@HOST"),
])
def test_database_uris_with_a_password_or_that_the_importer_cannot_use_are_refused_without_echoing_them(value, message):
    with pytest.raises(ConfigError, match=message) as error:
        make_config(classic_backend_store=value, classic_artifact_root="/srv/old")
    assert "s3cret" not in str(error.value)


def test_the_old_database_password_is_never_shown_in_an_error():
    with pytest.raises(ConfigError, match=r"classic_database_password = <hidden>: must be") as error:
        make_config(classic_database_password="two\nlines")
    assert "two" not in str(error.value)
    with pytest.raises(ConfigError, match=r"\(from \$MLFLOW_STACK_CLASSIC_DATABASE_PASSWORD\): invalid"):
        make_config(environ={"MLFLOW_STACK_CLASSIC_DATABASE_PASSWORD": "a\rb"})


def test_paths_are_kept_as_given():
    config = make_config(classic_backend_store="/srv/old/mlflow.db", classic_artifact_root="/srv/old/mlartifacts")
    assert (config.classic_backend_store, config.classic_artifact_root) == ("/srv/old/mlflow.db", "/srv/old/mlartifacts")


def test_the_artifact_root_defaults_to_the_store_s_directory():
    assert classic_import.artifact_root(make_config(classic_backend_store="/srv/old/mlflow.db")) == "/srv/old"
    given = make_config(classic_backend_store=STORE, classic_artifact_root="/data/artifacts")
    assert classic_import.artifact_root(given) == "/data/artifacts"


def test_one_off_containers_on_the_compose_network_may_call_mlflow_by_its_service_name():
    config = make_config()
    assert config.internal_tracking_uri == "http://mlflow:5000"
    assert {"mlflow", "mlflow:5000"} <= set(config.allowed_hosts)


# --- the importer's command ------------------------------------------------------------------


def test_the_old_data_is_mounted_read_only_and_the_password_comes_on_a_pipe():
    config = make_config(classic_backend_store=STORE)
    command = classic_import.importer_command(config, "apply").get_raw_value()
    assert command.startswith("{ sed -n 's/^MLFLOW_AUTH_ADMIN_PASSWORD=//p' /srv/mlflow/.env ; } | docker compose ")
    assert f"-v {STORE}:/classic/store:ro -v /srv/old-mlflow:/classic/artifacts:ro" in command
    assert "-e MLFLOW_TRACKING_URI=http://mlflow:5000 -e MLFLOW_TRACKING_USERNAME=admin" in command
    assert "PASSWORD=" not in command.split("|", 1)[1]
    assert command.endswith("jobs python /opt/mlflow-stack/import_classic.py apply")


def test_a_database_is_named_by_its_uri_and_its_password_read_from_its_root_only_file():
    config = make_config(classic_backend_store=DATABASE, classic_artifact_root="/srv/old/mlartifacts",
                         classic_database_password="old-secret")
    command = classic_import.importer_command(config, "apply").get_raw_value()
    assert command.startswith("{ sed -n 's/^MLFLOW_AUTH_ADMIN_PASSWORD=//p' /srv/mlflow/.env ; "
                              "cat /srv/mlflow/classic-database.password ; } | docker ")
    assert f"-e MLFLOW_STACK_CLASSIC_DATABASE={DATABASE} -v /srv/old/mlartifacts:/classic/artifacts:ro" in command
    assert "/classic/store" not in command and "old-secret" not in command
    no_password = make_config(classic_backend_store=DATABASE, classic_artifact_root="/srv/old", mlflow_auth=False)
    assert classic_import.importer_command(no_password, "plan").get_raw_value().startswith(
        "{ cat /srv/mlflow/classic-database.password ; } | docker ")


def test_the_password_file_is_written_from_stdin_and_no_fact_or_command_carries_it():
    config = make_config(classic_backend_store=DATABASE, classic_artifact_root="/srv/old", classic_database_password="pw-1")
    with mock.patch.object(classic_import, "host") as fake_host:
        fake_host.get_fact.return_value = READY
        classic_import.import_plan(config)
    kwargs = fake_host.get_fact.call_args.kwargs
    # pyinfra prints a fact's arguments, _stdin included, at -vvv: the fact gets no password at all.
    assert "_stdin" not in kwargs and "pw-1" not in repr(kwargs)
    result = plan(classic_import.import_classic, config, {}, plan=READY)
    keep, run = result.ops
    assert keep.commands == ["umask 077; cat > /srv/mlflow/classic-database.password.new && chown root:root "
                             "/srv/mlflow/classic-database.password.new && mv /srv/mlflow/classic-database.password.new "
                             "/srv/mlflow/classic-database.password"]
    assert run.commands == [classic_import.importer_command(config, "apply").get_raw_value()]
    assert all("pw-1" not in command for op in result.ops for command in op.commands)


def test_with_tls_the_importer_trusts_the_stack_s_ca_for_presigned_uploads_through_the_proxy():
    tls = make_config(classic_backend_store=STORE, tls="self-signed")
    command = classic_import.importer_command(tls, "apply").get_raw_value()
    assert "-v /srv/mlflow/tls/ca.crt:/etc/mlflow-stack/ca.crt:ro -e REQUESTS_CA_BUNDLE=/etc/mlflow-stack/ca.crt" \
        in command
    plain = classic_import.importer_command(make_config(classic_backend_store=STORE, tls="off"), "apply")
    assert "ca.crt" not in plain.get_raw_value() and "REQUESTS_CA_BUNDLE" not in plain.get_raw_value()


def test_without_authentication_no_credentials_are_sent():
    command = classic_import.importer_command(make_config(classic_backend_store=STORE, mlflow_auth=False), "plan")
    assert ".env" not in command.get_raw_value() and "USERNAME" not in command.get_raw_value()


# --- the plan fact ---------------------------------------------------------------------------


def test_the_plan_fact_reads_the_importer_s_counts():
    output = ["experiments=2", "runs=5", "logged_models=0", "registered_models=1", "model_versions=2", "aliases=1",
              "seconds=0.4", "state=ready"]
    assert ClassicImportPlan().process(output) == READY


@pytest.mark.parametrize("state", ["missing-store", "missing-artifacts", "not-running", "failed"])
def test_without_counts_the_plan_says_why(state):
    assert parse_plan([f"state={state}"]) == {"state": state, **dict.fromkeys(classic_import.COUNTS)}


def test_a_plan_without_a_state_line_failed():
    assert parse_plan(["Traceback ..."])["state"] == "failed"


def test_the_fact_checks_the_paths_then_the_stack_then_asks_the_importer():
    command = ClassicImportPlan().command(store=STORE, artifacts="/srv/old-mlflow", project="mlflow",
                                          plan_command="IMPORTER plan").get_raw_value()
    assert command.index(f"test -e {STORE}") < command.index("test -d /srv/old-mlflow") \
        < command.index("ps -q mlflow") < command.index("IMPORTER plan 2>/dev/null && echo state=ready")


def test_the_fact_looks_for_no_path_of_a_database():
    command = ClassicImportPlan().command(store=DATABASE, artifacts="/srv/old", project="mlflow",
                                          plan_command="IMPORTER plan").get_raw_value()
    assert command.startswith("test -d /srv/old ") and "test -e" not in command


def test_description_lists_the_nonzero_counts():
    assert describe(READY) == "2 experiments, 5 runs, 1 registered models, 2 model versions, 1 aliases"
    assert describe(NOTHING) == "nothing"
    assert describe(parse_plan(["state=not-running"])) == "counted once the stack runs"


# --- the step --------------------------------------------------------------------------------


def test_import_runs_the_importer_when_there_is_something_to_import():
    config = make_config(classic_backend_store=STORE)
    result = plan(classic_import.import_classic, config, {}, plan=READY)
    op = result.op(f"Import a classic MLflow data set | Import {STORE} into the stack: {describe(READY)}")
    assert op.commands == [classic_import.importer_command(config, "apply").get_raw_value()]


def test_import_changes_nothing_when_everything_is_there():
    config = make_config(classic_backend_store=STORE)
    result = plan(classic_import.import_classic, config, {}, plan=NOTHING)
    assert result.changing == {}
    assert result.ops[0].name.endswith(": nothing")


def test_import_runs_when_the_counts_were_unknown_while_planning():
    """A fresh host: the stack the entry point deploys first was not running yet."""
    config = make_config(classic_backend_store=STORE)
    result = plan(classic_import.import_classic, config, {}, plan=parse_plan(["state=not-running"]))
    assert len(result.changing) == 1


@pytest.mark.parametrize("state, message", [("missing-store", f"classic_backend_store = '{STORE}' does not exist"),
                                            ("missing-artifacts", "'/srv/old-mlflow' .* is not a directory")])
def test_missing_old_data_is_refused_while_planning(state, message):
    config = make_config(classic_backend_store=STORE)
    with pytest.raises(DeployError, match=f"{message}.*Nothing was changed"):
        plan(classic_import.import_classic, config, {}, plan=parse_plan([f"state={state}"]))


def test_import_without_a_store_is_a_config_error():
    with pytest.raises(ConfigError, match="classic_backend_store is not set"):
        classic_import.import_plan(make_config())


# --- the importer's path mapping (files/image/import_classic.py) --------------------------------


@pytest.fixture
def importer(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("import_classic", REPO / "files" / "image" / "import_classic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "ARTIFACTS", tmp_path)
    return module


def test_old_artifact_uris_are_found_under_the_host_directory_whatever_the_old_server_called_it(importer, tmp_path):
    run_dir = tmp_path / "1" / "abc" / "artifacts"
    run_dir.mkdir(parents=True)
    (tmp_path / "mlruns" / "2" / "def" / "artifacts").mkdir(parents=True)
    assert importer.local_dir("file:///app/mlruns/1/abc/artifacts") == run_dir
    assert importer.local_dir("/mlflow/mlartifacts/1/abc/artifacts") == run_dir
    assert importer.local_dir("mlflow-artifacts:/1/abc/artifacts") == run_dir
    assert importer.local_dir("file:///app/mlruns/2/def/artifacts") == tmp_path / "mlruns" / "2" / "def" / "artifacts"
    assert importer.local_dir("file:///app/mlruns/3/none/artifacts") is None
    assert importer.local_dir(None) is None
