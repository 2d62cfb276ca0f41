"""status.py's reading of a host: the fact's sections in, the document and its warnings out."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from mlflow_stack.verbs.status import StackStatus, status_document, status_text

from .helpers import make_config

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc).timestamp()


def compose_line(service: str, state: str = "running", health: str = "healthy", exit_code: int = 0) -> str:
    return json.dumps({"Service": service, "State": state, "Health": health, "ExitCode": exit_code,
                       "Image": f"image-of-{service}"})


def sections(config, **changes) -> dict:
    healthy = {s.name: ("exited", "", 0) if s.oneshot else ("running", "healthy", 0) for s in config.services}
    healthy.update(changes.get("services", {}))
    return StackStatus().process([
        "@@status compose", *(compose_line(name, *state) for name, state in healthy.items()),
        "@@status containers", "mlflow 2026-12-04T10:30:00.123456789Z 2",
        "@@status database", f"revision {changes.get('revision', config.mlflow_schema_revision)}", "users 3",
        "experiments 5", "runs 42", "server_version 17.2",
        "@@status certificates", f"server.crt {changes.get('cert_end', 'Mar  1 12:00:00 2027 GMT')}",
        "@@status units",
        f"mlflow-backup.service Result={changes.get('backup_result', 'success')}",
        "mlflow-backup.service ExecMainExitTimestamp=Fri 2026-12-04 03:00:07 UTC",
        "mlflow-backup.timer ActiveState=active",
        "mlflow-backup.timer NextElapseUSecRealtime=Sat 2026-12-05 03:00:00 UTC",
        "mlflow-gc.service Result=success", "mlflow-gc.service ExecMainExitTimestamp=",
        "mlflow-gc.timer ActiveState=inactive",
        "@@status backups", f"newest {int(NOW - 9 * 3600)} 1048576",
        "@@status disk", "dir /srv/mlflow/data/postgres 52428800",
        f"fs 100000000000 {changes.get('free', 40000000000)}",
    ])


def test_a_healthy_host_has_no_warning():
    config = make_config()
    document = status_document(config, sections(config), now=NOW)
    assert document["warnings"] == []
    assert document["services"]["mlflow"]["uptime_seconds"] == 5400
    assert document["services"]["mlflow"]["restarts"] == 2
    assert document["database"] == {"revision": config.mlflow_schema_revision, "users": "3", "experiments": "5",
                                    "runs": "42", "server_version": "17.2"}
    assert document["certificates"]["server.crt"]["days_left"] == 87
    assert document["schedules"]["mlflow-backup"]["last_result"] == "success"
    assert "mlflow-gc" not in document["schedules"]  # no gc schedule on this host
    assert document["backups"] == {"newest_age_hours": 9.0, "newest_bytes": 1048576}
    assert document["disk"]["filesystem"]["free_percent"] == 40.0
    assert document["tracking_uri"] == config.tracking_uri
    text = status_text(document)
    assert "no warnings" in text and "42 runs" in text and "(87 days)" in text


def test_what_needs_a_hand_is_warned():
    config = make_config()
    document = status_document(config, sections(
        config, services={"minio": ("running", "unhealthy", 0), "mlflow": ("exited", "", 1)}, revision="0584bdc529eb",
        cert_end="Dec 20 12:00:00 2026 GMT", backup_result="exit-code", free=5000000000), now=NOW)
    warnings = "\n".join(document["warnings"])
    assert "minio is not healthy (running)" in warnings and "mlflow is not healthy (exited)" in warnings
    assert "schema revision 0584bdc529eb" in warnings
    assert "server.crt expires in 16 days" in warnings
    assert "the last mlflow-backup run failed (exit-code)" in warnings
    assert "5.0 % free" in warnings
    assert document["services"]["mlflow"]["uptime_seconds"] is None


def test_a_stopped_stack_is_all_warnings_and_no_error():
    config = make_config()
    document = status_document(config, StackStatus().process(["@@status compose", "@@status database", "revision ",
                                                               "users ", "@@status disk"]), now=NOW)
    assert {service["state"] for service in document["services"].values()} == {"missing"}
    assert len(document["warnings"]) == len(config.started_services)
    json.dumps(document)  # JSON-ready


def test_the_fact_prints_no_secret():
    command = StackStatus().command("/srv/mlflow", "mlflow", "mlflow", "mlflow", "/srv/mlflow/data/postgres")
    assert ".env" not in command and "PASSWORD" not in command and "users.env" not in command


def test_without_a_database_container_the_database_is_asked_through_mlflow():
    command = StackStatus().command("/srv/mlflow", "mlflow", "mlflow", "mlflow", "/srv/mlflow/data/mlruns",
                                    database_via="mlflow")
    assert "exec -T mlflow python -c" in command and "exec -T postgres" not in command
    assert "PASSWORD" not in command and "/.env" not in command  # the URI is in the container's environment
    from mlflow_stack.verbs import status

    compile(status._QUERY_THROUGH_MLFLOW, "query", "exec")  # the program it runs is valid Python
    assert StackStatus().command("/srv/mlflow", "mlflow", "mlflow", "mlflow", "/x", database_via=None).count(
        "@@status database'; echo '@@status certificates'") == 1  # a balancer: no database to ask


def test_an_external_database_s_old_schema_is_warned_of_too():
    from .helpers import make_config

    config = make_config(postgres_external_host="db.example.org", postgres_password="Db-Given.Secret_0123")
    document = status_document(config, StackStatus().process(["@@status compose", "@@status database",
                                                              "revision 0000old", "runs 3"]))
    assert any(w.startswith("schema revision 0000old, MLflow") for w in document["warnings"]), document["warnings"]
