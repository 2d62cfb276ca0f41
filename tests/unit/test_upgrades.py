"""Facts in, commands out for issue 7: upgrades.protect_data refuses what would break the
database (a schema downgrade, an unknown schema, another PostgreSQL major) while planning,
before anything changes, and backs the database up before a schema migration."""

from __future__ import annotations

import re
import shlex
from unittest import mock

import pytest
from pyinfra.api import DeployError

from mlflow_stack.steps import upgrades
from mlflow_stack.config.releases import SCHEMA_REVISIONS, SUPPORTED_MLFLOW_VERSIONS
from mlflow_stack.steps.upgrades import image_major

from . import plan as plan_module
from .helpers import HOST_NAME, NON_DEFAULT, host_data, make_config, without_auth_before_the_environment_password
from .plan import fake_get_fact, plan
from .test_plan import NO_CLUSTER, compose_up, converged_facts, deploy_file, fresh_facts, index, wait

STEP = "Protect the data before an upgrade"
OLD, NEW = "3.16.1", "3.17.2"
OLD_REVISION, NEW_REVISION = "b7e2c1a4d9f3", "dc11669786a5"
BACKUP_OP = f"{STEP} | Back up the database before migrating its schema to {NEW_REVISION}"
REPORT_OP = f"{STEP} | Backup before the migration"
STOPPED_OP = f"{STEP} | Back up the database if a migration or a new MinIO image needs it (it was stopped: asked now)"
STAMP = r"\d{8}T\d{6}Z"


def cluster(revision, pg_version="17", running=True) -> dict:
    return {"pg_version": pg_version, "revision": revision, "running": running}


def facts_with(config, **cluster_fact) -> dict:
    facts = converged_facts(config)
    facts["DatabaseCluster"] = cluster(**cluster_fact)
    return facts


def backup_command(config, backup_file: str, before: str) -> str:
    # The script decides nothing: it is handed the file and why (protect_data decided).
    return (f"sh {config.stack_dir}/backup-before-migrate.sh --stack-dir {config.stack_dir} "
            f"--project {config.compose_project} --db-role {config.postgres_user} --database {config.postgres_db} "
            f"--file {backup_file} --timeout {config.mlflow_health_timeout} --before {shlex.quote(before)}")


def backup_file_of(command: str, config, before: str | None = None) -> str:
    before = before or f"migrating its schema from {OLD_REVISION} to {config.mlflow_schema_revision}"
    pattern = re.escape(backup_command(config, "@@", "@before@")).replace("@@", r"(\S+)")
    match = re.fullmatch(pattern.replace(re.escape(shlex.quote("@before@")), re.escape(shlex.quote(before))), command)
    assert match, command
    return match[1]


def test_the_revisions_the_tests_use():
    assert SCHEMA_REVISIONS[OLD] == OLD_REVISION and SCHEMA_REVISIONS[NEW] == NEW_REVISION
    assert make_config().mlflow_version == NEW


# --- nothing to do -------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [{}, NON_DEFAULT], ids=["default", "non_default"])
def test_converged_database_plans_nothing(extra):
    config = make_config(**extra)
    facts = converged_facts(config)
    assert facts["DatabaseCluster"]["revision"] == config.mlflow_schema_revision
    result = plan(upgrades.protect_data, config, facts)
    assert result.ops == []
    assert ("DatabaseCluster", None) in result.asked


def test_fresh_host_plans_nothing():
    facts = fresh_facts()
    assert facts["DatabaseCluster"] == NO_CLUSTER == {"pg_version": None, "revision": None, "running": False}
    result = plan(upgrades.protect_data, make_config(), facts)
    assert result.ops == []


@pytest.mark.parametrize("version", SUPPORTED_MLFLOW_VERSIONS)
def test_database_at_the_configured_release_s_revision_plans_nothing(version):
    config = make_config(mlflow_version=version, **without_auth_before_the_environment_password(version))
    result = plan(upgrades.protect_data, config, facts_with(config, revision=SCHEMA_REVISIONS[version]))
    assert result.ops == []


def test_running_database_without_mlflow_tables_plans_nothing():
    # a cluster whose database has no alembic_version yet: the server creates its tables
    config = make_config()
    assert plan(upgrades.protect_data, config, facts_with(config, revision=None)).ops == []


def test_fact_is_asked_with_the_config_s_names():
    config = make_config(**NON_DEFAULT)
    facts = converged_facts(config)
    calls = []
    answer = fake_get_fact(facts, [])

    def recording(self, cls, *args, **kwargs):
        calls.append((cls.__name__, kwargs))
        return answer(self, cls, *args, **kwargs)

    with mock.patch.object(plan_module, "fake_get_fact", lambda facts, asked, calls=None: recording):
        plan(upgrades.protect_data, config, facts)
    assert ("DatabaseCluster", {"stack_dir": "/opt/mlflow-stack", "project": "mlops", "user": "tracker",
                                "database": "tracking"}) in calls


# --- an upgrade: backup first ----------------------------------------------------------------------


def plan_with_reports(config, facts):
    """Plan protect_data; also returns the texts handed to the report operation."""
    from mlflow_stack.steps import verify

    texts = []

    def spy(*args, **kwargs):
        texts.append(kwargs["text"])
        return verify.report(*args, **kwargs)

    with mock.patch.object(upgrades, "report", spy):
        result = plan(upgrades.protect_data, config, facts)
    return result, texts


@pytest.mark.parametrize("extra", [{}, dict(NON_DEFAULT, mlflow_version=NEW, postgres_image="postgres:17")],
                         ids=["default", "non_default"])
def test_older_revision_plans_the_backup_and_reports_it(extra):
    config = make_config(**extra)
    result, texts = plan_with_reports(config, facts_with(config, revision=OLD_REVISION))
    assert [op.name for op in result.ops] == [BACKUP_OP, REPORT_OP]
    (command,) = result.op(BACKUP_OP).commands
    backup = backup_file_of(command, config)
    assert re.fullmatch(rf"{re.escape(config.stack_dir)}/backups/mlflow-db-{STAMP}-schema-{OLD_REVISION}\.dump",
                        backup), backup
    assert config.backups_dir == f"{config.stack_dir}/backups"
    # the report names the revisions and the very file; it runs nothing
    assert result.op(REPORT_OP).commands == []
    assert texts == [f"schema {OLD_REVISION} -> {NEW_REVISION}: database backed up to {backup} on {HOST_NAME} first"]


@pytest.mark.parametrize("version", [v for v in SUPPORTED_MLFLOW_VERSIONS if SCHEMA_REVISIONS[v] != NEW_REVISION])
def test_every_older_supported_schema_is_migrated_after_a_backup(version):
    config = make_config()
    result = plan(upgrades.protect_data, config, facts_with(config, revision=SCHEMA_REVISIONS[version]))
    (command,) = result.op(BACKUP_OP).commands
    before = f"migrating its schema from {SCHEMA_REVISIONS[version]} to {NEW_REVISION}"
    assert backup_file_of(command, config, before).endswith(f"-schema-{SCHEMA_REVISIONS[version]}.dump")


def test_stopped_cluster_is_asked_when_the_step_runs():
    # the fact cannot read the revision of a stopped database: the callback starts it, asks it
    # and decides by the same rules (tests/unit/test_backup_and_migrate.py runs it)
    config = make_config()
    result = plan(upgrades.protect_data, config, facts_with(config, revision=None, running=False))
    assert [op.name for op in result.ops] == [STOPPED_OP]  # no "backup" report: no migration is known
    assert result.op(STOPPED_OP).commands == ["call _back_up_a_stopped_database"]


def test_upgrade_in_deploy_py_backs_up_before_the_stack_is_restarted():
    """mlflow_version 3.16.1 -> 3.17.2 on a converged 3.16.1 host: the new image is built and
    the stack brought up (migrate-db runs in it) only after the backup."""
    old = make_config(mlflow_version=OLD)
    facts = converged_facts(old)  # everything as 3.16.1 left it, revision included
    config = make_config()
    result = plan(deploy_file, config, facts, data=host_data())
    commands = result.commands
    backup = index(commands, r"backup-before-migrate\.sh")
    assert backup < index(commands, "^docker build") < index(commands, "^" + re.escape(compose_up(config)))
    assert commands.index(wait(config)) > backup
    assert "--oneshot migrate-db" in wait(config)
    assert any(op.name == REPORT_OP for op in result.ops)
    assert commands[-1] == "call _run_smoke_test"


# --- a new MinIO image: backup first --------------------------------------------------------------

MINIO_BACKUP_OP = f"{STEP} | Back up the database before the MinIO image changes"
MINIO_REPORT_OP = f"{STEP} | Backup before the new MinIO image"


def with_running_minio(config, facts, image: str) -> dict:
    services = facts["ComposeServices"][config.compose_project]
    services["minio"] = {**services["minio"], "image": image}
    return facts


def test_converged_facts_run_the_configured_images():
    config = make_config(minio_image="quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z")
    assert converged_facts(config)["ComposeServices"][config.compose_project]["minio"]["image"] == config.minio_image


@pytest.mark.parametrize("extra", [{}, NON_DEFAULT], ids=["default", "non_default"])
def test_another_running_minio_image_plans_a_backup_naming_both(extra):
    config = make_config(**extra)
    old_image = "minio/minio:RELEASE.2024-01-01T00-00-00Z"
    result, texts = plan_with_reports(config, with_running_minio(config, converged_facts(config), old_image))
    assert [op.name for op in result.ops] == [MINIO_BACKUP_OP, MINIO_REPORT_OP]
    (command,) = result.op(MINIO_BACKUP_OP).commands
    reason = f"the MinIO image changes from {old_image} to {config.minio_image}"
    backup = backup_file_of(command, config, before=reason)
    assert backup.endswith(f"-schema-{config.mlflow_schema_revision}.dump")
    assert texts == [f"{reason}: database backed up to {backup} on {HOST_NAME} first"]


def test_minio_image_change_and_a_migration_take_one_backup_and_report_both():
    config = make_config()
    facts = with_running_minio(config, facts_with(config, revision=OLD_REVISION), "minio/minio:RELEASE.old")
    result, texts = plan_with_reports(config, facts)
    assert [op.name for op in result.ops] == [BACKUP_OP, REPORT_OP, MINIO_REPORT_OP]
    assert len(texts) == 2 and texts[0].startswith(f"schema {OLD_REVISION} -> {NEW_REVISION}")
    assert texts[1].startswith(f"the MinIO image changes from minio/minio:RELEASE.old to {config.minio_image}")


@pytest.mark.parametrize("services", [{}, {"postgres": {"state": "running", "image": "postgres:17"}}],
                         ids=["no containers", "no minio container"])
def test_no_running_minio_means_no_image_change(services):
    config = make_config()
    facts = converged_facts(config)
    facts["ComposeServices"] = {config.compose_project: services}
    assert plan(upgrades.protect_data, config, facts).ops == []


def test_minio_image_change_in_deploy_py_backs_up_before_the_stack_is_restarted():
    config = make_config()
    facts = with_running_minio(config, converged_facts(config), "minio/minio:RELEASE.old")
    commands = plan(deploy_file, config, facts, data=host_data()).commands
    backup = index(commands, r"backup-before-migrate\.sh")
    assert backup < index(commands, "^" + re.escape(compose_up(config)))


# --- refusals while planning -------------------------------------------------------------------


def test_newer_revision_is_refused_naming_both_revisions():
    config = make_config(mlflow_version=OLD)
    with pytest.raises(DeployError) as caught:
        plan(upgrades.protect_data, config, facts_with(config, revision=NEW_REVISION))
    message = str(caught.value)
    assert OLD_REVISION in message and NEW_REVISION in message
    assert f"mlflow_version = {OLD!r} expects schema revision {OLD_REVISION}" in message
    assert "MLflow 3.17.0 to 3.17.2" in message
    assert "Nothing was changed" in message
    assert f"{config.backups_dir}" in message and "restore the backup" in message
    assert HOST_NAME in message


@pytest.mark.parametrize("revision", ["ffffffffffff", "0123456789ab"])
def test_unknown_revision_is_refused(revision):
    config = make_config()
    with pytest.raises(DeployError) as caught:
        plan(upgrades.protect_data, config, facts_with(config, revision=revision))
    message = str(caught.value)
    assert f"schema revision {revision}, which no supported MLflow release" in message
    assert "Nothing was changed" in message and HOST_NAME in message


@pytest.mark.parametrize("image, data_major", [
    ("postgres:18", "17"), ("postgres:16.4-bookworm", "17"), ("registry.example.org:5000/library/postgres:17", "16"),
])
def test_another_postgres_major_is_refused_naming_both(image, data_major):
    config = make_config(postgres_image=image)
    wanted = image_major(image)
    with pytest.raises(DeployError) as caught:
        plan(upgrades.protect_data, config, facts_with(config, revision=config.mlflow_schema_revision,
                                                       pg_version=data_major))
    message = str(caught.value)
    assert f"postgres_image = {image!r} is PostgreSQL {wanted}" in message
    assert f"holds a PostgreSQL {data_major} cluster" in message
    assert "Nothing was changed" in message and "pg_dump" in message and "pg_restore" in message


@pytest.mark.parametrize("running", [True, False])
def test_major_is_checked_on_a_stopped_cluster_too(running):
    config = make_config(postgres_image="postgres:18")
    with pytest.raises(DeployError, match="PostgreSQL 17 cluster"):
        plan(upgrades.protect_data, config, facts_with(config, revision=None, running=running))


@pytest.mark.parametrize("image", [
    "postgres:17", "postgres:17.2-bookworm", "postgres:17-alpine",
    "registry.example.org:5000/library/postgres:17.6@sha256:" + "0" * 64,
    "postgres@sha256:" + "a" * 64, "postgres:latest", "postgres",
], ids=["17", "17.2-bookworm", "17-alpine", "registry+digest", "digest only", "latest", "no tag"])
def test_same_or_unknown_major_passes(image):
    config = make_config(postgres_image=image)
    assert plan(upgrades.protect_data, config, facts_with(config, revision=config.mlflow_schema_revision)).ops == []


def test_digest_only_image_whose_digest_starts_with_a_digit_passes():
    image = "postgres@sha256:3e6c" + "a" * 60
    config = make_config(postgres_image=image)
    assert plan(upgrades.protect_data, config, facts_with(config, revision=config.mlflow_schema_revision)).ops == []


def test_major_refusal_comes_before_the_schema_check():
    config = make_config(mlflow_version=OLD, postgres_image="postgres:18")
    with pytest.raises(DeployError, match="PostgreSQL 18"):
        plan(upgrades.protect_data, config, facts_with(config, revision=NEW_REVISION))


def test_fresh_host_with_any_major_passes():
    config = make_config(postgres_image="postgres:18")
    assert plan(upgrades.protect_data, config, fresh_facts()).ops == []


# --- refusals stop the whole deploy before any operation --------------------------------------------


def deploy_refused(config, facts, data) -> tuple[str, mock.Mock]:
    """Plan deploy.py; the refusal must come while planning: no operation is executed."""
    with mock.patch.object(plan_module, "_execute") as execute:
        with pytest.raises(DeployError) as caught:
            plan(deploy_file, config, facts, data=data)
    assert not execute.called
    return str(caught.value), execute


def test_downgrade_stops_deploy_py_before_any_operation():
    config = make_config(mlflow_version=OLD)
    facts = converged_facts(make_config())  # a host running 3.17.2, at its revision
    facts["DatabasePasswordState"] = "differs"  # would otherwise run the password step first
    message, _ = deploy_refused(config, facts, host_data(mlflow_version=OLD))
    assert OLD_REVISION in message and NEW_REVISION in message and "Nothing was changed" in message


def test_postgres_major_change_stops_deploy_py_before_any_operation():
    config = make_config(postgres_image="postgres:18")
    facts = converged_facts(make_config())
    message, _ = deploy_refused(config, facts, host_data(postgres_image="postgres:18"))
    assert "PostgreSQL 18" in message and "PostgreSQL 17 cluster" in message and "Nothing was changed" in message


def test_protect_data_runs_before_start_stack_in_deploy_py():
    from .helpers import REPO

    source = (REPO / "deploy.py").read_text()
    assert source.index("apply_database_password(") < source.index("protect_data(config)") \
        < source.index("start_stack(config")


# --- image_major -------------------------------------------------------------------------------


@pytest.mark.parametrize("image, major", [
    ("postgres:17", "17"),
    ("postgres:18", "18"),
    ("postgres:17.2", "17"),
    ("postgres:17.2-bookworm", "17"),
    ("postgres:16-alpine3.20", "16"),
    ("docker.io/library/postgres:15.8", "15"),
    ("registry.example.org/library/postgres:16.4", "16"),
    ("registry.example.org:5000/library/postgres:16.4", "16"),
    ("registry.example.org:5000/postgres", None),
    ("postgres:17@sha256:" + "1" * 64, "17"),
    ("postgres@sha256:" + "a" * 64, None),
    ("postgres:latest", None),
    ("postgres:bookworm", None),
    ("postgres", None),
])
def test_image_major(image, major):
    assert image_major(image) == major


@pytest.mark.parametrize("image", [
    "postgres@sha256:" + "1" * 64,
    "registry.example.org:5000/postgres@sha256:9" + "a" * 63,
], ids=["digits", "registry port"])
def test_image_major_of_a_digest_only_reference_is_unknown(image):
    assert image_major(image) is None


def test_older_schema_on_an_unchanged_healthy_stack_still_runs_the_migration():
    # e.g. the pre-upgrade backup restored while mlflow_version stayed at the new release
    config = make_config()
    result = plan(deploy_file, config, facts_with(config, revision=OLD_REVISION), data=host_data())
    commands = result.commands
    backup = index(commands, r"backup-before-migrate\.sh")
    assert index(commands, "^" + re.escape(compose_up(config))) > backup  # migrate-db runs in `up`
    assert commands.index(wait(config)) > backup
