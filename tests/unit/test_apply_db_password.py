"""files/host/apply-db-password.sh and the DatabasePasswordState fact's command, run for real
by `sh` against a fake `docker` (whose `exec` runs the command here, as the container would)
and a fake `psql`: the password travels on pipes, never in a process's argv."""

from __future__ import annotations

import shutil

import pytest

from mlflow_stack.facts.host import DatabasePasswordState

from .fakedocker import FakeDocker, assert_no_process_saw
from .helpers import REPO

PASSWORD = "0f" * 32  # as the deploy generates them
HEALTHY_POSTGRES = "postgres running healthy 0 0\n"


@pytest.fixture
def docker(tmp_path):
    fake = FakeDocker(tmp_path)
    fake.write("ids", "c-postgres\n")
    fake.statuses(HEALTHY_POSTGRES)
    return fake


@pytest.fixture
def stack_dir(tmp_path):
    """A deployed stack directory: scripts, .env, an initialised database cluster."""
    path = tmp_path / "srv-mlflow"
    (path / "data" / "postgres").mkdir(parents=True)
    (path / "data" / "postgres" / "PG_VERSION").write_text("17\n")
    (path / ".env").write_text(f"MINIO_ROOT_PASSWORD={'ab' * 32}\nPOSTGRES_PASSWORD={PASSWORD}\n")
    for script in ("wait-healthy.sh", "apply-db-password.sh"):
        shutil.copy(REPO / "files" / "host" / script, path / script)
    return path


def apply(docker: FakeDocker, stack_dir, role="mlflow", database="mlflow", timeout=30):
    return docker.run(["sh", str(stack_dir / "apply-db-password.sh"), "--stack-dir", str(stack_dir), "--project",
                       "mlflow", "--db-role", role, "--database", database, "--timeout", str(timeout)],
                      timeout=timeout + 30)


# --- apply-db-password.sh ------------------------------------------------------------------------


@pytest.mark.parametrize("pg_version", [None, ""], ids=["absent", "empty"])
def test_no_cluster_yet_exits_0_without_docker(docker, stack_dir, pg_version):
    marker = stack_dir / "data" / "postgres" / "PG_VERSION"
    if pg_version is None:
        marker.unlink()
    else:
        marker.write_text(pg_version)
    proc = apply(docker, stack_dir)
    assert proc.returncode == 0, proc.stderr
    assert "no database cluster yet" in proc.stdout
    assert docker.argv == []


def test_password_reaches_psql_on_stdin_and_never_argv(docker, stack_dir):
    proc = apply(docker, stack_dir)
    assert proc.returncode == 0, proc.stderr
    assert "database role 'mlflow' now has the password in .env" in proc.stdout
    assert_no_process_saw(docker, PASSWORD)
    assert PASSWORD not in proc.stdout + proc.stderr
    # what went into the container: the password alone, on stdin
    assert docker.read("exec.stdin") == f"{PASSWORD}\n"
    # what psql read: the statement, after the one keeping a failing statement out of the log
    assert docker.read("psql.stdin") == (
        "SET log_min_error_statement TO panic;\n"
        f"ALTER ROLE \"mlflow\" WITH PASSWORD '{PASSWORD}';\n")


def test_database_alone_is_started_and_waited_for_first(docker, stack_dir):
    apply(docker, stack_dir)
    argv = docker.argv
    up = argv.index("docker compose --project-name mlflow up -d --no-deps postgres")
    first_status = next(i for i, line in enumerate(argv) if line.startswith("docker inspect"))
    exec_ = next(i for i, line in enumerate(argv) if line.startswith("docker compose --project-name mlflow exec"))
    assert up < first_status < exec_
    assert argv[exec_].startswith("docker compose --project-name mlflow exec -T postgres sh -c ")
    assert argv[exec_].endswith(" sh mlflow mlflow")
    # over the container's local socket as the role itself: no -h, no password prompt
    (psql,) = [line for line in argv if line.startswith("psql ")]
    assert psql == "psql -X -w -q -v ON_ERROR_STOP=1 -U mlflow -d mlflow"
    # the database alone: MLflow is restarted by start_stack afterwards, with the new password
    assert [line for line in argv if " up " in line] == ["docker compose --project-name mlflow up -d --no-deps postgres"]


def test_role_and_database_come_from_the_arguments(docker, stack_dir):
    proc = apply(docker, stack_dir, role="tracker", database="tracking")
    assert proc.returncode == 0, proc.stderr
    assert [line for line in docker.argv if line.startswith("psql ")] == [
        "psql -X -w -q -v ON_ERROR_STOP=1 -U tracker -d tracking"]
    assert "ALTER ROLE \"tracker\" WITH PASSWORD" in docker.read("psql.stdin")


def test_a_cluster_without_the_role_stops_with_a_reason(docker, stack_dir):
    docker.write("psql.rc", "2")  # e.g. FATAL: role "mlflow" does not exist
    proc = apply(docker, stack_dir)
    assert proc.returncode == 1
    assert "cannot set the password of role 'mlflow' in database 'mlflow'" in proc.stderr
    assert "Stopped before restarting MLflow" in proc.stderr
    assert "now has the password" not in proc.stdout
    assert PASSWORD not in proc.stdout + proc.stderr


def test_a_database_that_does_not_get_healthy_stops_before_the_alter(docker, stack_dir):
    docker.statuses("postgres running starting 0 0\n")
    proc = apply(docker, stack_dir, timeout=2)
    assert proc.returncode != 0
    assert "not healthy after 2s" in proc.stderr
    assert not any(" exec " in line for line in docker.argv)
    assert docker.read("psql.stdin") == ""


# --- the DatabasePasswordState fact ----------------------------------------------------------


def fact(docker: FakeDocker, stack_dir, user="mlflow", database="mlflow") -> tuple[str, str]:
    command = DatabasePasswordState().command(stack_dir=str(stack_dir), project="mlflow", user=user,
                                              database=database)
    proc = docker.run(["sh", "-c", command])
    assert proc.returncode == 0, proc.stderr
    return DatabasePasswordState().process(proc.stdout.splitlines()), proc.stdout


def test_fact_none_without_a_cluster(docker, stack_dir):
    (stack_dir / "data" / "postgres" / "PG_VERSION").unlink()
    assert fact(docker, stack_dir)[0] == "none"
    assert docker.argv == []


def test_fact_none_on_a_fresh_host(docker, tmp_path):
    assert fact(docker, tmp_path / "does-not-exist")[0] == "none"


def test_fact_unknown_when_the_database_is_not_running(docker, stack_dir):
    docker.write("ids", "")
    assert fact(docker, stack_dir)[0] == "unknown"
    docker.write("ids", "c-postgres\n")
    docker.write("running", "false\n")
    assert fact(docker, stack_dir)[0] == "unknown"
    assert "docker compose --project-name mlflow ps -q postgres" in docker.argv
    assert any(line == "docker inspect -f {{.State.Running}} c-postgres" for line in docker.argv), docker.argv


def test_fact_matches_over_the_network_address(docker, stack_dir):
    docker.write("db_password", PASSWORD)
    state, output = fact(docker, stack_dir, user="tracker", database="tracking")
    assert state == "matches" and output == "matches\n"
    # the container's own address: loopback and the socket would accept any password
    (psql,) = [line for line in docker.argv if line.startswith("psql ")]
    assert psql == "psql -X -w -q -t -h 172.20.0.2 -U tracker -d tracking -c select 1"
    assert docker.read("exec.stdin") == f"{PASSWORD}\n"
    assert_no_process_saw(docker, PASSWORD)


def test_fact_differs_when_the_role_has_another_password(docker, stack_dir):
    docker.write("db_password", "the-password-before-the-file-was-lost")
    assert fact(docker, stack_dir) == ("differs", "differs\n")
    assert_no_process_saw(docker, PASSWORD)


def test_fact_differs_when_the_secrets_file_is_gone(docker, stack_dir):
    docker.write("db_password", PASSWORD)
    (stack_dir / ".env").unlink()
    assert fact(docker, stack_dir)[0] == "differs"


@pytest.mark.parametrize("output, state", [
    (["matches"], "matches"), (["none"], "none"), (["differs "], "differs"), ([], "unknown"),
])
def test_fact_process(output, state):
    assert DatabasePasswordState().process(output) == state
