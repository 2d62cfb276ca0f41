"""files/host/wait-healthy.sh, run for real by `sh` against a fake `docker` whose answers
change from call to call: healthy, crash loop, failed one-shot, stopped, unhealthy, timeout."""

from __future__ import annotations

import time

import pytest

from .fakedocker import FakeDocker
from .helpers import REPO

SCRIPT = str(REPO / "files" / "host" / "wait-healthy.sh")
SERVICES = ["postgres", "minio", "mlflow"]
ONESHOTS = ["create-bucket", "migrate-db"]
IDS = "c-postgres\nc-minio\nc-create-bucket\nc-migrate-db\nc-mlflow\n"


def snapshot(**overrides: str) -> str:
    """Status lines for every container: all healthy and the one-shots done, unless overridden
    with `service="state health exit-code restarts"`."""
    lines = {
        "postgres": "running healthy 0 0",
        "minio": "running healthy 0 0",
        "create-bucket": "exited none 0 0",
        "migrate-db": "exited none 0 0",
        "mlflow": "running healthy 0 0",
    }
    lines.update({name.replace("_", "-"): value for name, value in overrides.items()})
    return "\n".join(f"{name} {value}" for name, value in lines.items())


@pytest.fixture
def docker(tmp_path):
    fake = FakeDocker(tmp_path)
    fake.write("ids", IDS)
    return fake


def wait_healthy(docker: FakeDocker, timeout: int = 300, oneshots=tuple(ONESHOTS), services=SERVICES):
    """As the deploy runs it: `--oneshot NAME` once per one-shot service, `--service NAME` per service."""
    args = ["sh", SCRIPT, "--project", "mlflow", "--timeout", str(timeout)]
    args += [a for name in oneshots for a in ("--oneshot", name)] + [a for name in services for a in ("--service", name)]
    started = time.monotonic()
    proc = docker.run(args, timeout=timeout + 30)
    return proc, time.monotonic() - started


def test_all_healthy_exits_0_at_once(docker):
    docker.statuses(snapshot())
    proc, elapsed = wait_healthy(docker)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "healthy: postgres minio mlflow (done: create-bucket migrate-db)"
    assert proc.stderr == ""
    assert elapsed < 5
    # it reads the project's containers, all of them, and inspects them in one call
    assert "docker compose --project-name mlflow ps --all --quiet" in docker.argv
    inspect = [line for line in docker.argv if line.startswith("docker inspect")]
    assert inspect and all(line.endswith("c-postgres c-minio c-create-bucket c-migrate-db c-mlflow")
                           for line in inspect)
    assert all(".RestartCount" in line and ".State.Status" in line for line in inspect)


def test_slow_start_is_waited_for(docker):
    docker.statuses(
        snapshot(mlflow="running starting 0 0", create_bucket="running none 0 0"),  # at the start
        snapshot(mlflow="running starting 0 0", create_bucket="running none 0 0"),
        snapshot(),
    )
    proc, elapsed = wait_healthy(docker)
    assert proc.returncode == 0, proc.stderr
    assert 1.5 <= elapsed < 10
    assert len([line for line in docker.argv if line.startswith("docker inspect")]) == 3


def test_the_interval_given_is_the_time_between_looks(docker):
    # The deploy passes mlflow_health_start_interval: on a very slow host, fewer docker CLI starts.
    starting = snapshot(mlflow="running starting 0 0")
    docker.statuses(starting, starting, starting, snapshot())  # the first one: the restart counts before
    started = time.monotonic()
    proc = docker.run(["sh", SCRIPT, "--project", "mlflow", "--timeout", "60", "--interval", "3",
                       *[a for name in SERVICES for a in ("--service", name)]], timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started >= 5.5  # two waits of 3 s, not of the default 2 s
    assert len([line for line in docker.argv if line.startswith("docker inspect")]) == 4


def test_crash_loop_fails_in_seconds_with_the_logs(docker):
    docker.write("logs.mlflow", "mlflow-1 | ModuleNotFoundError: No module named 'psycopg2'\n"
                                "mlflow-1 | the second log line\n")
    docker.statuses(
        snapshot(mlflow="running starting 0 0"),          # at the start
        snapshot(mlflow="restarting starting 1 1"),
        snapshot(mlflow="restarting starting 1 2"),       # restarted twice while waiting
    )
    proc, elapsed = wait_healthy(docker, timeout=300)
    assert proc.returncode == 1
    assert elapsed < 10, "a crash loop must not wait for the timeout"
    assert "mlflow keeps crashing: restarted 2 times while waiting, last exit code 1" in proc.stderr
    assert "----- last log lines of mlflow -----" in proc.stderr
    assert "ModuleNotFoundError: No module named 'psycopg2'" in proc.stderr
    assert "the second log line" in proc.stderr
    # one line with the reason, last
    assert proc.stderr.splitlines()[-1].startswith("FAILED: mlflow keeps crashing")
    assert "docker compose --project-name mlflow logs --no-color --tail 40 mlflow" in docker.argv
    # healthy services' logs are not dumped
    assert "log line one of postgres" not in proc.stderr


def test_restarts_before_the_wait_do_not_count_as_a_crash_loop(docker):
    # A container killed and restarted before this run: a high count that is not rising.
    docker.statuses(
        snapshot(postgres="running healthy 0 7", mlflow="restarting starting 137 9"),
        snapshot(postgres="running healthy 0 7", mlflow="running starting 137 10"),
        snapshot(postgres="running healthy 0 7", mlflow="running healthy 137 10"),
    )
    proc, elapsed = wait_healthy(docker)
    assert proc.returncode == 0, proc.stderr
    assert "keeps crashing" not in proc.stderr


def test_one_restart_while_waiting_is_tolerated(docker):
    docker.statuses(
        snapshot(minio="running starting 0 0"),
        snapshot(minio="restarting starting 1 1"),
        snapshot(minio="running healthy 1 1"),
    )
    proc, _ = wait_healthy(docker)
    assert proc.returncode == 0, proc.stderr


def test_failed_oneshot_fails_fast(docker):
    docker.write("logs.create-bucket", "create-bucket-1 | botocore.exceptions.EndpointConnectionError: bucket init\n")
    docker.statuses(snapshot(create_bucket="exited none 1 0", mlflow="created none 0 0"))
    proc, elapsed = wait_healthy(docker)
    assert proc.returncode == 1
    assert elapsed < 10
    assert "FAILED: create-bucket failed (exit code 1)" in proc.stderr
    assert "EndpointConnectionError: bucket init" in proc.stderr
    assert "----- last log lines of create-bucket -----" in proc.stderr


def test_oneshot_still_running_is_waited_for(docker):
    docker.statuses(snapshot(create_bucket="running none 0 0"), snapshot(create_bucket="running none 0 0"),
                    snapshot())
    proc, elapsed = wait_healthy(docker)
    assert proc.returncode == 0, proc.stderr
    assert elapsed >= 1.5


@pytest.mark.parametrize("state", ["exited", "dead"])
def test_stopped_service_fails_fast(docker, state):
    docker.statuses(snapshot(postgres=f"{state} unhealthy 3 0"))
    proc, elapsed = wait_healthy(docker)
    assert proc.returncode == 1 and elapsed < 10
    assert f"FAILED: postgres stopped ({state}, exit code 3)" in proc.stderr
    assert "log line one of postgres" in proc.stderr


def test_service_left_created_after_compose_up_fails_fast(docker):
    # compose up has returned and the one-shots are done: a container that was created but
    # never ran could not be started (e.g. its published port is taken).
    docker.statuses(snapshot(mlflow="created none 0 0"))
    proc, elapsed = wait_healthy(docker)
    assert proc.returncode == 1 and elapsed < 10
    assert "FAILED: mlflow could not be started (created, never ran: is its port taken?)" in proc.stderr
    assert "----- last log lines of mlflow -----" in proc.stderr


def test_an_unhealthy_service_that_runs_is_waited_for_until_the_timeout(docker):
    # Seen in CI on the software-emulated VM under load: MinIO's check timed out 20 times in a
    # row (unhealthy), then passed again; failing fast there failed a deploy that would finish.
    docker.statuses(snapshot(minio="running unhealthy 0 0"))
    proc, elapsed = wait_healthy(docker, timeout=3)
    assert proc.returncode == 1 and 2 <= elapsed < 10
    assert ("FAILED: not healthy after 3s (mlflow_health_timeout): minio (unhealthy, its health check keeps "
            "failing: minio)") in proc.stderr, proc.stderr
    assert "log line two of minio" in proc.stderr


def test_an_unhealthy_service_that_recovers_passes(docker):
    docker.statuses(snapshot(minio="running unhealthy 0 0"), snapshot(minio="running unhealthy 0 0"),
                    snapshot(minio="running healthy 0 0"))
    proc, _ = wait_healthy(docker)
    assert proc.returncode == 0, proc.stderr


def test_a_crash_loop_that_kept_an_unhealthy_status_is_reported_as_a_crash_loop(docker):
    # Seen in CI: a container restarting keeps its last health status ("unhealthy"); the
    # reason must name the crash loop, not a failing health check.
    docker.statuses(
        snapshot(mlflow="running starting 0 0"),        # at the start
        snapshot(mlflow="restarting unhealthy 1 1"),
        snapshot(mlflow="restarting unhealthy 1 1"),
        snapshot(mlflow="restarting unhealthy 1 2"),
    )
    proc, elapsed = wait_healthy(docker)
    assert proc.returncode == 1 and elapsed < 15
    assert "FAILED: mlflow keeps crashing: restarted 2 times" in proc.stderr, proc.stderr


def test_a_service_stuck_starting_fails_after_the_timeout(docker):
    docker.statuses(snapshot(mlflow="running starting 0 0"))
    proc, elapsed = wait_healthy(docker, timeout=3)
    assert proc.returncode == 1
    assert 2 <= elapsed < 10  # `date +%s` has whole seconds: the deadline may come up to 1 s early
    assert "FAILED: not healthy after 3s (mlflow_health_timeout): mlflow" in proc.stderr
    assert "log line one of mlflow" in proc.stderr
    assert "fake compose ps table" in proc.stderr  # the overview too


def test_no_containers_at_all_fails_after_the_timeout(docker):
    docker.write("ids", "")
    proc, elapsed = wait_healthy(docker, timeout=2)
    assert proc.returncode == 1 and 1 <= elapsed < 10
    assert "not healthy after 2s" in proc.stderr
    assert not any(line.startswith("docker inspect") for line in docker.argv)


def test_without_oneshot_only_the_named_services_count(docker):
    # apply-db-password.sh waits for postgres alone while the rest may be anything
    docker.statuses(snapshot(mlflow="exited none 1 0", create_bucket="exited none 1 0"))
    proc, _ = wait_healthy(docker, oneshots=(), services=["postgres"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "healthy: postgres"


def test_first_failing_service_gives_the_reason_all_waiting_ones_give_logs(docker):
    docker.statuses(snapshot(postgres="exited none 1 0", mlflow="running starting 0 0"))
    proc, _ = wait_healthy(docker)
    assert proc.returncode == 1
    assert "FAILED: postgres stopped (exited, exit code 1)" in proc.stderr
    assert "----- last log lines of postgres -----" in proc.stderr
    assert "----- last log lines of mlflow -----" in proc.stderr


# --- two one-shots (the bucket init and the schema migration) ----------------------------------


def test_the_deploy_s_wait_command_runs_here(docker):
    from mlflow_stack.steps import stack
    from mlflow_stack.services import ONESHOT_SERVICES, long_running_services

    from .helpers import make_config

    # The fake compose's snapshot has no proxy: the stack as deployed with TLS off.
    config = make_config(stack_dir=str(REPO / "files" / "host"), compose_project="mlflow", mlflow_health_timeout=30,
                         tls="off")
    command = stack.wait_command(config, *long_running_services(config.tls), oneshots=ONESHOT_SERVICES)
    docker.statuses(snapshot())
    proc = docker.run(["sh", "-c", command], timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "healthy: postgres minio mlflow (done: create-bucket migrate-db)"


@pytest.mark.parametrize("running", ONESHOTS)
def test_one_of_two_oneshots_still_running_is_waited_for(docker, running):
    busy = snapshot(**{running.replace("-", "_"): "running none 0 0", "mlflow": "created none 0 0"})
    docker.statuses(busy, busy, snapshot())
    proc, elapsed = wait_healthy(docker)
    assert proc.returncode == 0, proc.stderr
    assert elapsed >= 1.5
    assert len([line for line in docker.argv if line.startswith("docker inspect")]) == 3


def test_a_oneshot_not_created_yet_is_waited_for(docker):
    without = "\n".join(line for line in snapshot().splitlines() if not line.startswith("migrate-db "))
    docker.statuses(without, without, snapshot())
    proc, elapsed = wait_healthy(docker)
    assert proc.returncode == 0, proc.stderr
    assert elapsed >= 1.5


@pytest.mark.parametrize("failed, other", [("migrate-db", "create-bucket"), ("create-bucket", "migrate-db")])
@pytest.mark.parametrize("other_state", ["exited none 0 0", "running none 0 0"], ids=["other done", "other running"])
def test_one_of_two_oneshots_failed_fails_fast_naming_it(docker, failed, other, other_state):
    docker.write(f"logs.{failed}", f"{failed}-1 | refusing to start: the database has schema revision ffffffffffff\n")
    docker.statuses(snapshot(**{failed.replace("-", "_"): "exited none 3 0", other.replace("-", "_"): other_state,
                                "mlflow": "created none 0 0"}))
    proc, elapsed = wait_healthy(docker)
    assert proc.returncode == 1
    assert elapsed < 10
    assert proc.stderr.splitlines()[-1].startswith(f"FAILED: {failed} failed (exit code 3)")
    assert f"----- last log lines of {failed} -----" in proc.stderr
    assert "refusing to start: the database has schema revision ffffffffffff" in proc.stderr
    # a finished one-shot is not waited for and its logs are not dumped
    assert (f"----- last log lines of {other} -----" in proc.stderr) is other_state.startswith("running")


def test_both_oneshots_failed_names_the_first(docker):
    docker.statuses(snapshot(create_bucket="exited none 1 0", migrate_db="exited none 3 0", mlflow="created none 0 0"))
    proc, elapsed = wait_healthy(docker)
    assert proc.returncode == 1 and elapsed < 10
    assert "FAILED: create-bucket failed (exit code 1)" in proc.stderr
    assert "----- last log lines of create-bucket -----" in proc.stderr
    assert "----- last log lines of migrate-db -----" in proc.stderr


# --- the script and the service model agree on "healthy" ----------------------------------------
# The deploy decides whether to bring the stack up with services.Service.is_healthy (Python, at
# plan time) and waits with this script (on the host). Both read which rule applies from the
# service model (`--oneshot` comes from Service.oneshot); this table keeps the two rules equal.

STATUSES = [  # state health exit-code (restarts stay 0: a steady status, no crash loop)
    ("running", "healthy", 0), ("running", "starting", 0), ("running", "unhealthy", 0), ("running", "none", 0),
    ("exited", "none", 0), ("exited", "none", 1), ("created", "none", 0), ("restarting", "unhealthy", 1),
]


@pytest.mark.parametrize("service", ["postgres", "create-bucket"], ids=["long-running", "one-shot"])
@pytest.mark.parametrize("state, health, code", STATUSES, ids=[" ".join(map(str, s)) for s in STATUSES])
def test_the_script_and_the_model_agree_on_healthy(docker, service, state, health, code):
    from mlflow_stack.services import ONESHOT_SERVICES, SERVICES

    model = next(s for s in SERVICES if s.name == service)
    docker.write("ids", f"c-{service}\n")
    docker.statuses(f"{service} {state} {health} {code} 0")
    oneshot = service in ONESHOT_SERVICES
    proc, _ = wait_healthy(docker, timeout=1, oneshots=(service,) if oneshot else (),
                           services=() if oneshot else (service,))
    expected = model.is_healthy({"state": state, "health": "" if health == "none" else health, "exit_code": code})
    assert (proc.returncode == 0) == expected, proc.stderr


# --- `docker compose run` one-offs (a scheduled backup runs its archive export as one) --------
# `ps --all` lists them too, with the service's name; the status format ends with the
# container's com.docker.compose.oneoff label (absent above: no label, not a one-off).


@pytest.mark.parametrize("first", [True, False], ids=["one-off listed first", "one-off listed last"])
def test_a_running_one_off_of_a_oneshot_service_is_not_the_service(docker, first):
    docker.write("ids", IDS + "c-backup-run\n")
    oneoff = "create-bucket running none 0 0 True"
    lines = snapshot().splitlines()
    docker.statuses("\n".join([oneoff, *lines] if first else [*lines, oneoff]))
    proc, elapsed = wait_healthy(docker, timeout=4)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "healthy: postgres minio mlflow (done: create-bucket migrate-db)"
    assert elapsed < 3
    inspect = [line for line in docker.argv if line.startswith("docker inspect")]
    assert all("com.docker.compose.oneoff" in line for line in inspect)


def test_an_exited_one_off_that_failed_is_not_a_failed_oneshot(docker):
    docker.statuses("create-bucket exited none 1 0 True\n" + snapshot())
    proc, elapsed = wait_healthy(docker)
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 5


def test_a_one_off_of_a_long_running_service_does_not_hide_it(docker):
    # a one-off of the mlflow service (healthy-looking) while the real mlflow crash-loops
    docker.statuses(
        "mlflow running healthy 0 0 True\n" + snapshot(mlflow="running starting 0 0"),
        "mlflow running healthy 0 0 True\n" + snapshot(mlflow="restarting starting 1 1"),
        "mlflow running healthy 0 0 True\n" + snapshot(mlflow="restarting starting 1 2"),
    )
    proc, elapsed = wait_healthy(docker)
    assert proc.returncode == 1 and elapsed < 10
    assert "FAILED: mlflow keeps crashing: restarted 2 times" in proc.stderr, proc.stderr


def test_a_container_labelled_not_one_off_counts(docker):
    docker.statuses(snapshot(mlflow="running healthy 0 0 False"))
    proc, _ = wait_healthy(docker)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("args", [["mlflow", "300", "--service", "mlflow"], ["--project", "mlflow", "--service", "mlflow"],
                                  ["--project", "mlflow", "--timeout", "30", "mlflow"],
                                  ["--project", "mlflow", "--timeout", "30", "--interval", "0", "--service", "mlflow"]])
def test_positional_or_missing_arguments_are_refused_with_the_usage(docker, args):
    proc = docker.run(["sh", SCRIPT, *args], timeout=30)
    assert proc.returncode == 2 and "usage: wait-healthy.sh --project NAME --timeout SECONDS" in proc.stderr
