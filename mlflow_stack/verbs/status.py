"""`pyinfra inventory.py status.py`: what each host's stack looks like now, read in one command.

Read-only: one fact per host (StackStatus), no operation. Per host: each service's image, state,
health, uptime and restarts; the database's schema revision against the one the configured
MLflow expects, and its users, experiments and runs; the TLS certificate's and CA's days left;
the backup and gc timers' last result and next run, the newest backup's age and size; the data
directories' size and their filesystem's free space; the tracking URL. Warnings for what needs
a hand soon (a certificate within 30 days, under 10 % free, a failed timer, a service not
healthy, a schema behind or ahead). No secret is read into the output (counts, dates, sizes).
"""

from __future__ import annotations

import json
import shlex
import time
from datetime import datetime, timezone

from pyinfra import host, inventory
from pyinfra.api import FactBase

from mlflow_stack.config import StackConfig, certificates
from mlflow_stack.facts.host import ComposeServices
from mlflow_stack.steps.schedules import BACKUP_UNIT, GC_UNIT

CERTIFICATE_WARN_DAYS = certificates.WARN_DAYS
FREE_WARN_PERCENT = 10
SECTION = "@@status"


# What status reads of the tracking database: key, query.
DATABASE_QUERIES = (
    ("revision", "select version_num from alembic_version"),
    ("users", "select count(*) from users"),
    ("experiments", "select count(*) from experiments where lifecycle_stage = 'active'"),
    ("runs", "select count(*) from runs where lifecycle_stage = 'active'"),
    ("server_version", "show server_version"),
)
# Where the database is not a container here (external, or a cluster's data host): asked from the
# MLflow container with the URI MLflow uses (in its environment, never on a command line).
_QUERY_THROUGH_MLFLOW = f"""import os, sqlalchemy
engine = sqlalchemy.create_engine(os.environ["MLFLOW_BACKEND_STORE_URI"])
with engine.connect() as connection:
    for key, query in {DATABASE_QUERIES!r}:
        try:
            value = connection.execute(sqlalchemy.text(query)).scalar()
        except Exception:
            value = ""
            connection.rollback()
        print(key, value)
"""


def _database_lines(project: str, user: str, database: str, via: str | None) -> list[str]:
    """Commands printing `key value` for each of DATABASE_QUERIES (nothing when it cannot be asked)."""
    if via == "postgres":
        return [f"echo {key} $(docker compose --project-name {project} exec -T postgres psql -U {user} -d {database} "
                f"-AtX -c \"{query}\" 2>/dev/null)" for key, query in DATABASE_QUERIES]
    if via == "mlflow":
        return [f"docker compose --project-name {project} exec -T mlflow python -c {shlex.quote(_QUERY_THROUGH_MLFLOW)} "
                "2>/dev/null"]
    return []


class StackStatus(FactBase):
    """Sections of `key value` lines (parsed in `status_document`); absent parts print nothing."""

    default = dict

    def command(self, stack_dir: str, project: str, user: str, database: str, data_dirs: str,
                database_via: str | None = "postgres") -> str:
        units = " ".join(f"{unit}.service {unit}.timer" for unit in (BACKUP_UNIT, GC_UNIT))
        return "; ".join([
            f"echo '{SECTION} compose'",
            f"docker compose --project-name {project} ps --all --format json 2>/dev/null",
            f"echo '{SECTION} containers'",
            f"for id in $(docker compose --project-name {project} ps --all -q 2>/dev/null); do "
            "docker inspect -f '{{index .Config.Labels \"com.docker.compose.service\"}} {{.State.StartedAt}} "
            "{{.RestartCount}}' $id; done",
            f"echo '{SECTION} database'",
            *_database_lines(project, user, database, database_via),
            f"echo '{SECTION} certificates'",
            f"for f in {stack_dir}/tls/server.crt {stack_dir}/tls/ca.crt; do test -f $f && "
            "echo $(basename $f) $(openssl x509 -enddate -noout -in $f 2>/dev/null | cut -d= -f2); done",
            f"echo '{SECTION} units'",
            f"for u in {units}; do systemctl show $u -p ActiveState -p Result -p ExecMainExitTimestamp "
            "-p NextElapseUSecRealtime 2>/dev/null | sed \"s/^/$u /\"; done",
            f"echo '{SECTION} backups'",
            f"b=$(ls -1dt {stack_dir}/backups/mlflow-backup-* 2>/dev/null | head -1); "
            "test -n \"$b\" && echo newest $(stat -c %Y $b) $(du -sb $b | cut -f1)",
            f"echo '{SECTION} disk'",
            f"for d in {data_dirs}; do test -d $d && echo dir $d $(du -sb $d 2>/dev/null | cut -f1); done",
            f"df -P -B1 {stack_dir} 2>/dev/null | tail -1 | awk '{{print \"fs\", $2, $4}}'",
            "true",
        ])

    def process(self, output):
        sections: dict[str, list[str]] = {}
        current = None
        for line in output:
            if line.startswith(SECTION + " "):
                current = sections.setdefault(line.split()[1], [])
            elif current is not None and line.strip():
                current.append(line.strip())
        return sections


def _days_until(openssl_date: str, now: float) -> int | None:
    try:
        end = datetime.strptime(openssl_date.replace("  ", " "), "%b %d %H:%M:%S %Y %Z").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return int((end.timestamp() - now) // 86400)


def _started_seconds_ago(started: str, now: float) -> int | None:
    """Docker's StartedAt (RFC 3339 with nanoseconds, UTC) -> seconds before `now`."""
    try:
        moment = datetime.strptime(started.split(".")[0].rstrip("Z"), "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    return int(now - moment.replace(tzinfo=timezone.utc).timestamp())


def status_document(config: StackConfig, sections: dict, now: float | None = None) -> dict:
    """The host's status as one JSON-ready document, warnings included."""
    now = time.time() if now is None else now
    compose = ComposeServices().process(sections.get("compose", []))
    containers = {}
    for line in sections.get("containers", []):
        name, started, restarts = (line.split() + ["", "", ""])[:3]
        containers[name] = {"started": started, "restarts": int(restarts) if restarts.isdigit() else None}
    warnings = []
    services = {}
    for service in config.started_services:
        entry = compose.get(service.name, {})
        healthy = service.is_healthy(entry)
        started = containers.get(service.name, {}).get("started", "")
        uptime = _started_seconds_ago(started, now) if entry.get("state") == "running" and started else None
        services[service.name] = {"image": entry.get("image") or None, "state": entry.get("state") or "missing",
                                  "health": entry.get("health") or None, "healthy": healthy,
                                  "uptime_seconds": uptime,
                                  "restarts": containers.get(service.name, {}).get("restarts")}
        if not healthy:
            warnings.append(f"{service.name} is not healthy ({services[service.name]['state']})")
    database = dict((line.split(" ", 1) + [""])[:2] for line in sections.get("database", []))
    database = {key: value.strip() or None for key, value in database.items()}
    expected = config.mlflow_schema_revision
    if database.get("revision") and database["revision"] != expected:
        warnings.append(f"schema revision {database['revision']}, MLflow {config.mlflow_version} expects {expected} "
                        "(rerun the deploy to migrate; a newer schema needs the newer MLflow)")
    certificates = {}
    for line in sections.get("certificates", []):
        name, _, date = line.partition(" ")
        days = _days_until(date.strip(), now)
        certificates[name] = {"expires": date.strip(), "days_left": days}
        if days is not None and days < CERTIFICATE_WARN_DAYS:
            renew = ("a rerun of the deploy renews the server certificate" if config.tls == "self-signed" else
                     "the lab's own files: put new ones in place (tls_cert_file, tls_ca_file) and rerun the deploy")
            warnings.append(f"{name} expires in {days} days ({renew})")
    units: dict[str, dict[str, str]] = {}
    for line in sections.get("units", []):  # "<unit> Key=value"
        unit, _, pair = line.partition(" ")
        key, _, value = pair.partition("=")
        units.setdefault(unit, {})[key] = value
    schedules = {}
    for unit in (BACKUP_UNIT, GC_UNIT):
        service, timer = units.get(f"{unit}.service", {}), units.get(f"{unit}.timer", {})
        if timer.get("ActiveState") in (None, "inactive") and not service.get("ExecMainExitTimestamp"):
            continue  # no such schedule on this host
        result = service.get("Result")
        schedules[unit] = {"last_run": service.get("ExecMainExitTimestamp") or None, "last_result": result,
                           "next_run": timer.get("NextElapseUSecRealtime") or None,
                           "timer": timer.get("ActiveState")}
        if result not in (None, "", "success"):
            warnings.append(f"the last {unit} run failed ({result}); `journalctl -u {unit}.service`")
    backups = {}
    for line in sections.get("backups", []):
        _, stamp, size = line.split()
        backups = {"newest_age_hours": round((now - int(stamp)) / 3600, 1), "newest_bytes": int(size)}
    disk = {"directories": {}, "filesystem": {}}
    for line in sections.get("disk", []):
        parts = line.split()
        if parts[0] == "dir" and len(parts) == 3:
            disk["directories"][parts[1]] = int(parts[2])
        elif parts[0] == "fs" and len(parts) == 3 and parts[1].isdigit():
            size, free = int(parts[1]), int(parts[2])
            disk["filesystem"] = {"bytes": size, "free_bytes": free, "free_percent": round(100 * free / size, 1)}
            if 100 * free / size < FREE_WARN_PERCENT:
                warnings.append(f"{round(100 * free / size, 1)} % free on the filesystem of {config.stack_dir}")
    return {"host": config.inventory_name, "role": config.role, "tracking_uri": config.tracking_uri,
            "mlflow_version": config.mlflow_version, "schema_revision_expected": expected,
            "services": services, "database": database, "certificates": certificates, "schedules": schedules,
            "backups": backups, "disk": disk, "warnings": warnings}


def _size(count: int | None) -> str:
    if count is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return "?"


def status_text(document: dict) -> str:
    lines = [f"== {document['host']} ({document['role']}): {document['tracking_uri']}, MLflow {document['mlflow_version']}"]
    for name, service in document["services"].items():
        uptime = service["uptime_seconds"]
        lines.append(f"  {name:14} {service['state']:9} {service['health'] or '-':10} "
                     f"up {('%dh%02dm' % (uptime // 3600, uptime % 3600 // 60)) if uptime is not None else '-':>8}  "
                     f"restarts {service['restarts'] if service['restarts'] is not None else '-'}  {service['image'] or ''}")
    database = document["database"]
    if database:
        lines.append(f"  database: PostgreSQL {database.get('server_version') or '?'}, schema "
                     f"{database.get('revision') or '?'} (expected {document['schema_revision_expected']}), "
                     f"{database.get('users') or '?'} users, {database.get('experiments') or '?'} experiments, "
                     f"{database.get('runs') or '?'} runs")
    for name, certificate in document["certificates"].items():
        lines.append(f"  {name}: expires {certificate['expires']} ({certificate['days_left']} days)")
    for unit, schedule in document["schedules"].items():
        lines.append(f"  {unit}: last {schedule['last_run'] or 'never'} ({schedule['last_result'] or '-'}), "
                     f"next {schedule['next_run'] or '-'}")
    if document["backups"]:
        lines.append(f"  newest backup: {document['backups']['newest_age_hours']} h old, "
                     f"{_size(document['backups']['newest_bytes'])}")
    for path, size in document["disk"]["directories"].items():
        lines.append(f"  {path}: {_size(size)}")
    if document["disk"]["filesystem"]:
        fs = document["disk"]["filesystem"]
        lines.append(f"  free: {_size(fs['free_bytes'])} of {_size(fs['bytes'])} ({fs['free_percent']} %)")
    lines += [f"  WARNING: {warning}" for warning in document["warnings"]] or ["  no warnings"]
    return "\n".join(lines)


_documents: dict[str, dict] = {}


def show_status(config: StackConfig) -> dict:
    """Ask the host (one fact) and print its block; with status_format = "json", one JSON
    document of every host once the last one is read."""
    data_dirs = " ".join([f"{config.data_dir}/{name}" for name in ("postgres", "minio", "mlruns")]
                         + [config.backups_dir])
    # The database through its container here, else through MLflow's (external, or a cluster's data host).
    via = next((name for name in ("postgres", "mlflow") if name in config.service_names), None)
    sections = host.get_fact(StackStatus, stack_dir=config.stack_dir, project=config.compose_project,
                             user=config.postgres_user, database=config.postgres_db, data_dirs=data_dirs,
                             database_via=via)
    document = status_document(config, sections)
    if config.status_format == "json":
        _documents[host.name] = document
        if len(_documents) == len(inventory.get_active_hosts()):
            print(json.dumps({"hosts": _documents}, indent=2, sort_keys=True), flush=True)
    else:
        print(status_text(document), flush=True)
    return document


class ServiceLogs(FactBase):
    """`docker compose logs` of the stack's services, the last `lines` of each, with timestamps."""

    default = list

    def command(self, project: str, lines: int, services: str) -> str:
        return f"docker compose --project-name {project} logs --no-color --timestamps --tail {lines} {services} 2>&1"

    def process(self, output):
        return list(output)


def show_logs(config: StackConfig) -> list[str]:
    services = config.logs_service or " ".join(service.name for service in config.started_services)
    lines = host.get_fact(ServiceLogs, project=config.compose_project, lines=config.logs_lines, services=services)
    print(f"== {config.inventory_name}: the last {config.logs_lines} lines of {services}", flush=True)
    print("\n".join(lines), flush=True)
    return lines
