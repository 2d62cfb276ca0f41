"""Jobs the host runs by itself (backups, garbage collection): a systemd timer per job, with a
oneshot service rendered from templates/ (the command is a host script; the backup's is the
same one an on-demand backup runs)."""

from __future__ import annotations

from pyinfra.api import StringCommand, deploy
from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

from mlflow_stack.verbs.backup import backup_command
from mlflow_stack.config import StackConfig, config_from_host
from mlflow_stack.services import node_exporter
from mlflow_stack.steps.stack_files import TEMPLATES, script_command

UNIT_DIR = "/etc/systemd/system"
BACKUP_UNIT = "mlflow-backup"
GC_UNIT = "mlflow-gc"


def result_command(config: StackConfig, job: str) -> str:
    """The unit's ExecStopPost: the job's last result as metrics (files/host/job-result.sh)."""
    return "/bin/" + script_command(f"{config.stack_dir}/job-result.sh", job=job,
                                    dir=f"{config.stack_dir}/{node_exporter.TEXTFILE_DIR}").get_raw_value()


def backup_unit_context(config: StackConfig) -> dict:
    return {
        "backups_dir": config.backups_dir,
        # systemd wants the interpreter's absolute path; the arguments are shell-quoted, which it understands.
        "backup_command": "/bin/" + backup_command(config).get_raw_value(),
        "backup_result_command": result_command(config, "backup"),
        "backup_schedule": config.backup_schedule,
    }


def gc_command(config: StackConfig) -> StringCommand:
    """The host-side garbage collection (files/host/gc.sh); no secret among its arguments."""
    return script_command(f"{config.stack_dir}/gc.sh", stack_dir=config.stack_dir, project=config.compose_project,
                          database_uri=config.database_uri_without_password, keep=config.gc_keep_deleted_runs,
                          admin_user=config.mlflow_auth_admin_user, backups=config.backups_dir)


def gc_unit_context(config: StackConfig) -> dict:
    return {
        "gc_keep_deleted_runs": config.gc_keep_deleted_runs,
        "gc_command": "/bin/" + gc_command(config).get_raw_value(),
        "gc_result_command": result_command(config, "gc"),
        "gc_schedule": config.gc_schedule,
    }


def _timer(unit: str, schedule: str | None, context: dict) -> None:
    service, timer = f"{UNIT_DIR}/{unit}.service", f"{UNIT_DIR}/{unit}.timer"
    if schedule is None:
        systemd.service(name=f"Stop and disable {unit}.timer (no schedule set)", service=f"{unit}.timer",
                        running=False, enabled=False)
        removed = [files.file(name=f"Remove {path}", path=path, present=False) for path in (timer, service)]
        systemd.daemon_reload(name="Reload systemd's units", _if=any_changed(*removed))
        return
    units = [
        files.template(name=f"Upload {unit}.service", src=str(TEMPLATES / f"{unit}.service.j2"), dest=service,
                       user="root", group="root", mode="644", **context),
        files.template(name=f"Upload {unit}.timer", src=str(TEMPLATES / f"{unit}.timer.j2"), dest=timer,
                       user="root", group="root", mode="644", **context),
    ]
    systemd.daemon_reload(name="Reload systemd's units", _if=any_changed(*units))
    systemd.service(name=f"Enable and start {unit}.timer", service=f"{unit}.timer", running=True, enabled=True)
    # A running timer takes a new schedule when restarted.
    systemd.service(name=f"Restart {unit}.timer (schedule changed)", service=f"{unit}.timer", running=None,
                    restarted=True, _if=units[1].did_change)


@deploy("Schedule backups")
def schedule_backups(config: StackConfig | None = None):
    config = config or config_from_host()
    # backup.sh covers the bundled backends (backup.require_bundled_backends): a server of its
    # own, or a cluster's data host (it dumps through postgres and reads the bucket through the jobs service).
    bundled = not (config.external_database or config.external_s3) and config.role in ("standalone", "data")
    _timer(BACKUP_UNIT, config.backup_schedule if bundled else None, backup_unit_context(config))


@deploy("Schedule garbage collection")
def schedule_gc(config: StackConfig | None = None):
    """Deleted runs keep their artifacts until `mlflow gc` removes them: a timer does it for the
    ones deleted longer ago than gc_keep_deleted_runs (no timer when that is None)."""
    config = config or config_from_host()
    # In a cluster one tracking server collects for all (they share the database and bucket).
    enabled = config.gc_keep_deleted_runs is not None and config.keeps_cluster_state
    _timer(GC_UNIT, config.gc_schedule if enabled else None, gc_unit_context(config) if enabled else {})
