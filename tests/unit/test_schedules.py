"""Facts in, commands out for the backup timer (mlflow_stack/steps/schedules.py), and its units."""

from __future__ import annotations

import pytest

from mlflow_stack.steps import schedules

from .helpers import NON_DEFAULT, make_config
from .plan import plan, sha1
from .test_plan import converged_facts, fresh_facts

SERVICE, TIMER = "/etc/systemd/system/mlflow-backup.service", "/etc/systemd/system/mlflow-backup.timer"
STEP = "Schedule backups"


@pytest.mark.parametrize("extra", [{}, NON_DEFAULT], ids=["default", "non_default"])
def test_fresh_host_gets_the_units_and_a_started_enabled_timer(extra):
    config = make_config(**extra)
    result = plan(schedules.schedule_backups, config, fresh_facts())
    service, timer = result.uploads[SERVICE].decode(), result.uploads[TIMER].decode()
    assert (f"ExecStart=/bin/bash {config.stack_dir}/backup.sh --stack-dir {config.stack_dir} "
            f"--project {config.compose_project} --db-role {config.postgres_user} --database {config.postgres_db} "
            f"--bucket {config.minio_bucket} --prefix {config.minio_bucket_prefix} "
            f"--backups {config.backups_dir} --keep {config.backup_keep}\n") in service
    assert "Type=oneshot\n" in service and "After=docker.service\n" in service
    assert f"OnCalendar={config.backup_schedule}\n" in timer and "Persistent=true\n" in timer
    assert "WantedBy=timers.target\n" in timer
    assert result.changing[f"{STEP} | Reload systemd's units"] == ["systemctl daemon-reload"]
    assert result.changing[f"{STEP} | Enable and start mlflow-backup.timer"] == [
        "systemctl start mlflow-backup.timer", "systemctl enable mlflow-backup.timer"]
    # Not running before this run: started, not restarted.
    assert f"{STEP} | Restart mlflow-backup.timer (schedule changed)" not in result.changing


def test_converged_host_plans_nothing():
    config = make_config()
    assert plan(schedules.schedule_backups, config, converged_facts(config)).changing == {}


def test_a_new_schedule_uploads_the_timer_and_restarts_it():
    config = make_config(backup_schedule="Sun *-*-* 01:00:00")
    facts = converged_facts(make_config())
    changing = plan(schedules.schedule_backups, config, facts).changing
    assert list(changing) == [f"{STEP} | Upload mlflow-backup.timer", f"{STEP} | Reload systemd's units",
                              f"{STEP} | Restart mlflow-backup.timer (schedule changed)"]
    assert changing[f"{STEP} | Restart mlflow-backup.timer (schedule changed)"] == ["systemctl restart mlflow-backup.timer"]


def test_a_new_retention_rewrites_only_the_service():
    config = make_config(backup_keep=30)
    changing = plan(schedules.schedule_backups, config, converged_facts(make_config())).changing
    assert list(changing) == [f"{STEP} | Upload mlflow-backup.service", f"{STEP} | Reload systemd's units"]


def test_no_schedule_stops_disables_and_removes_the_timer():
    config = make_config(backup_schedule=None)
    facts = converged_facts(make_config())
    changing = plan(schedules.schedule_backups, config, facts).changing
    assert changing == {
        f"{STEP} | Stop and disable mlflow-backup.timer (no schedule set)": [
            "systemctl stop mlflow-backup.timer", "systemctl disable mlflow-backup.timer"],
        f"{STEP} | Remove {TIMER}": [f"rm -f {TIMER}"],
        f"{STEP} | Remove {SERVICE}": [f"rm -f {SERVICE}"],
        f"{STEP} | Reload systemd's units": ["systemctl daemon-reload"],
    }


def test_no_schedule_on_a_host_without_the_timer_plans_nothing():
    assert plan(schedules.schedule_backups, make_config(backup_schedule=None), fresh_facts()).changing == {}


def test_units_hold_no_secret():
    config = make_config(postgres_password="given-password-123", minio_root_password="given-password-456")
    result = plan(schedules.schedule_backups, config, fresh_facts())
    for data in (result.uploads[SERVICE], result.uploads[TIMER]):
        assert b"given-password" not in data
    assert sha1(result.uploads[SERVICE]) != sha1(result.uploads[TIMER])


def test_an_mlflow_upgrade_leaves_the_backup_units_alone():
    """backup.sh reads the version from the image's lock: an upgrade rewrites no unit."""
    units = {version: plan(schedules.schedule_backups, make_config(mlflow_version=version), fresh_facts()).uploads
             for version in ("3.16.1", "3.17.2")}
    assert units["3.16.1"][SERVICE] == units["3.17.2"][SERVICE]
    assert units["3.16.1"][TIMER] == units["3.17.2"][TIMER]
