"""Garbage collection (issue 8's housekeeping): the settings, the mlflow-gc timer's units and
plan (mlflow_stack/steps/schedules.py), and files/host/gc.sh run for real against the fake `docker`
with a fake `mlflow` in the "container"."""

from __future__ import annotations

import fcntl
import re
import shutil
import subprocess

import pytest

from mlflow_stack.steps import schedules
from mlflow_stack.config import ConfigError

from .fakedocker import FakeDocker, assert_no_process_saw
from .helpers import NON_DEFAULT, REPO, make_config
from .plan import plan
from .test_plan import converged_facts, fresh_facts

SERVICE, TIMER = "/etc/systemd/system/mlflow-gc.service", "/etc/systemd/system/mlflow-gc.timer"
STEP = "Schedule garbage collection"
GC_ON = {"gc_keep_deleted_runs": "30d"}


# --- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "30d", "12h", "1d12h", "90m", "45s", "1.5d", "2d3h4m5s", "0s", "36500d"])
def test_gc_retention_accepts_what_mlflow_gc_parses(value):
    assert make_config(gc_keep_deleted_runs=value).gc_keep_deleted_runs == value


@pytest.mark.parametrize("value", ["", "30", "30 d", "1w", "12h1d", "d", "-1d", "1.d", "30d; rm -rf /", "36501d", 30,
                                   True])
def test_a_bad_gc_retention_is_refused_with_what_is_allowed(value):
    expected = (f"gc_keep_deleted_runs = {value!r}: must be None or a duration `mlflow gc --older-than` accepts: "
                "days, hours, minutes, seconds in that order, e.g. '30d'")
    with pytest.raises(ConfigError, match=re.escape(expected)):
        make_config(gc_keep_deleted_runs=value)


@pytest.mark.parametrize("value", [None, "", "daily; reboot"])
def test_a_bad_gc_schedule_is_refused(value):
    with pytest.raises(ConfigError, match=re.escape(f"gc_schedule = {value!r}: must be a systemd OnCalendar")):
        make_config(**GC_ON, gc_schedule=value)


def test_gc_is_off_by_default_and_scheduled_at_half_past_four():
    config = make_config()
    assert config.gc_keep_deleted_runs is None and config.gc_schedule == "*-*-* 04:30:00"


# --- the timer and its service ---------------------------------------------------------------


@pytest.mark.parametrize("extra", [{}, NON_DEFAULT], ids=["default", "non_default"])
def test_a_retention_uploads_the_units_and_starts_the_timer(extra):
    config = make_config(**extra, **GC_ON)
    result = plan(schedules.schedule_gc, config, fresh_facts())
    service, timer = result.uploads[SERVICE].decode(), result.uploads[TIMER].decode()
    assert (f"ExecStart=/bin/bash {config.stack_dir}/gc.sh --stack-dir {config.stack_dir} "
            f"--project {config.compose_project} "
            f"--database-uri postgresql+psycopg2://{config.postgres_user}@postgres:5432/{config.postgres_db} "
            f"--keep 30d --admin-user {config.mlflow_auth_admin_user} "
            f"--backups {config.backups_dir}\n") in service
    assert "Type=oneshot\n" in service and "Requires=docker.service\n" in service and "After=docker.service\n" in service
    assert "deleted longer ago than 30d" in service
    assert "OnCalendar=*-*-* 04:30:00\n" in timer and "Persistent=true\n" in timer and "WantedBy=timers.target\n" in timer
    assert result.changing[f"{STEP} | Reload systemd's units"] == ["systemctl daemon-reload"]
    assert result.changing[f"{STEP} | Enable and start mlflow-gc.timer"] == [
        "systemctl start mlflow-gc.timer", "systemctl enable mlflow-gc.timer"]


def test_off_by_default_plans_nothing_on_a_fresh_host():
    result = plan(schedules.schedule_gc, make_config(), fresh_facts())
    assert result.changing == {} and result.uploads == {}


def test_a_converged_host_with_gc_on_plans_nothing():
    config = make_config(**GC_ON)
    assert plan(schedules.schedule_gc, config, converged_facts(config)).changing == {}


def test_a_new_schedule_uploads_the_timer_and_restarts_it():
    config = make_config(**GC_ON, gc_schedule="Sun *-*-* 01:00:00")
    changing = plan(schedules.schedule_gc, config, converged_facts(make_config(**GC_ON))).changing
    assert list(changing) == [f"{STEP} | Upload mlflow-gc.timer", f"{STEP} | Reload systemd's units",
                              f"{STEP} | Restart mlflow-gc.timer (schedule changed)"]


def test_a_new_retention_rewrites_only_the_service():
    config = make_config(gc_keep_deleted_runs="7d")
    changing = plan(schedules.schedule_gc, config, converged_facts(make_config(**GC_ON))).changing
    assert list(changing) == [f"{STEP} | Upload mlflow-gc.service", f"{STEP} | Reload systemd's units"]


def test_switching_gc_off_stops_disables_and_removes_the_timer():
    changing = plan(schedules.schedule_gc, make_config(), converged_facts(make_config(**GC_ON))).changing
    assert changing == {
        f"{STEP} | Stop and disable mlflow-gc.timer (no schedule set)": [
            "systemctl stop mlflow-gc.timer", "systemctl disable mlflow-gc.timer"],
        f"{STEP} | Remove {TIMER}": [f"rm -f {TIMER}"],
        f"{STEP} | Remove {SERVICE}": [f"rm -f {SERVICE}"],
        f"{STEP} | Reload systemd's units": ["systemctl daemon-reload"],
    }


def test_the_gc_schedule_alone_does_not_switch_gc_on():
    config = make_config(gc_schedule="hourly")
    assert plan(schedules.schedule_gc, config, fresh_facts()).changing == {}


def test_the_units_hold_no_secret():
    config = make_config(**GC_ON, postgres_password="given-password-123", minio_root_password="given-password-456",
                         mlflow_auth_admin_password="given-password-789")
    result = plan(schedules.schedule_gc, config, fresh_facts())
    for data in (result.uploads[SERVICE], result.uploads[TIMER]):
        assert b"given-password" not in data


def test_deploy_schedules_gc_after_the_backups():
    source = (REPO / "deploy.py").read_text()
    assert source.index("schedule_backups(config)") < source.index("schedule_gc(config)") \
        < source.index("verify_stack(config")


# --- gc.sh -------------------------------------------------------------------------------------

FAKE_MLFLOW = r"""#!/bin/sh
# `mlflow gc` as the container would run it: records what it was given, prints like MLflow.
d="$FAKE_DOCKER_DIR"
{ printf 'mlflow %s' "$*"; echo; } >> "$d/argv"
env | grep '^MLFLOW_TRACKING_' | sort > "$d/mlflow.env"
[ "$(cat "$d/mlflow.rc" 2>/dev/null || echo 0)" = 0 ] || { echo "MlflowException: 401 Unauthorized" >&2; exit 1; }
cat "$d/mlflow.out" 2>/dev/null || :
"""
GC_OUTPUT = ("Run with ID aaa has been permanently deleted.\nRun with ID bbb has been permanently deleted.\n"
             "Logged model with ID m-1 has been permanently deleted.\nExperiment with ID 4 has been permanently deleted.\n")
ADMIN_PASSWORD = "admin-secret-0123456789"


@pytest.fixture
def docker(tmp_path):
    fake = FakeDocker(tmp_path)
    mlflow = fake.bin / "mlflow"
    mlflow.write_text(FAKE_MLFLOW)
    mlflow.chmod(0o755)
    return fake


def run_gc(docker, tmp_path, keep="30d", timeout=None):
    stack_dir = tmp_path / "srv-mlflow"
    stack_dir.mkdir(exist_ok=True)
    shutil.copy(REPO / "files" / "host" / "gc.sh", stack_dir / "gc.sh")
    args = ["bash", str(stack_dir / "gc.sh"), "--stack-dir", str(stack_dir), "--project", "mlops",
            "--database-uri", "postgresql+psycopg2://tracker@postgres:5432/tracking", "--keep", keep,
            "--admin-user", "admin", "--backups", str(tmp_path / "backups")]
    # `timeout` ends the script's whole process group (flock included).
    args = ["timeout", str(timeout), *args] if timeout else args
    # The container's environment holds the admin password (compose interpolates it from .env).
    env = {**docker.env(), "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, input="", cwd=docker.dir)


def test_gc_runs_mlflow_gc_in_the_server_container_as_the_admin_without_a_secret_in_argv(docker, tmp_path):
    docker.write("mlflow.out", GC_OUTPUT)
    proc = run_gc(docker, tmp_path)
    assert proc.returncode == 0, proc.stderr
    calls = docker.argv
    assert calls[0].startswith("docker compose --project-name mlops exec -T mlflow sh -c ")
    assert calls[1] == "mlflow gc --older-than 30d --backend-store-uri postgresql+psycopg2://tracker@postgres:5432/tracking"
    assert docker.read("mlflow.env").splitlines() == [
        f"MLFLOW_TRACKING_PASSWORD={ADMIN_PASSWORD}", "MLFLOW_TRACKING_URI=http://127.0.0.1:5000",
        "MLFLOW_TRACKING_USERNAME=admin"]
    assert_no_process_saw(docker, ADMIN_PASSWORD)


def test_gc_prints_each_removal_and_a_summary(docker, tmp_path):
    docker.write("mlflow.out", GC_OUTPUT)
    proc = run_gc(docker, tmp_path, keep="1d12h")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:4] == GC_OUTPUT.splitlines()
    assert re.fullmatch(r"gc: removed 2 runs, 1 experiments and 1 logged models deleted longer ago than 1d12h, "
                        r"with their artifacts, in \d+ s", lines[4]), lines


def test_gc_with_nothing_to_remove_says_so(docker, tmp_path):
    proc = run_gc(docker, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("gc: removed 0 runs, 0 experiments and 0 logged models deleted longer ago than 30d")


def test_a_failing_gc_fails_the_script(docker, tmp_path):
    docker.write("mlflow.rc", "1")
    proc = run_gc(docker, tmp_path)
    assert proc.returncode != 0
    assert "401 Unauthorized" in proc.stderr and "gc: removed" not in proc.stdout


def test_gc_waits_while_a_backup_or_restore_holds_the_lock(docker, tmp_path):
    backups = tmp_path / "backups"
    backups.mkdir(mode=0o755)
    with (backups / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as backup.sh / restore.sh hold it
        proc = run_gc(docker, tmp_path, timeout=2)
        assert proc.returncode == 124 and docker.argv == []
    proc = run_gc(docker, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert docker.argv[0].startswith("docker compose --project-name mlops exec")
    assert backups.stat().st_mode & 0o777 == 0o700


def test_gc_reaches_an_external_database_with_its_tls_options_and_no_password():
    config = make_config(**GC_ON, postgres_external_host="db.institute.example", postgres_password="x" * 20,
                         postgres_sslmode="require")
    service = plan(schedules.schedule_gc, config, fresh_facts()).uploads[SERVICE].decode()
    uri = f"postgresql+psycopg2://{config.postgres_user}@db.institute.example:5432/{config.postgres_db}?sslmode=require"
    assert f" --database-uri '{uri}' --keep 30d " in service and "x" * 20 not in service
