"""The smoke-test callback: True on success; on failure one error line naming the failing call
and where to look, and False, never a traceback."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.context import ctx_host, ctx_state

from mlflow_stack.steps import verify

from .helpers import HOST_NAME, REPO

PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
HINT = f"ssh {HOST_NAME} sudo docker compose --project-name mlflow logs mlflow minio"


@pytest.fixture
def in_host_context():
    inventory = Inventory(([(HOST_NAME, {})], {}))
    state = State(inventory, Config())
    host = inventory.get_host(HOST_NAME)
    with ctx_state.use(state), ctx_host.use(host):
        yield host


def test_passing_smoke_test_returns_true_and_reports(in_host_context, monkeypatch, caplog):
    monkeypatch.setattr(verify, "smoke_test", lambda uri, **options: f"smoke test passed against {uri}")
    with caplog.at_level(logging.INFO, logger="pyinfra"):
        assert verify._run_smoke_test(None, in_host_context, "http://mlflow.example.org:5000", HINT) is True
    assert "smoke test passed against http://mlflow.example.org:5000" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_failing_smoke_test_returns_false_with_one_error_line(in_host_context, monkeypatch, caplog):
    failing = "PUT http://mlflow.example.org:5000/api/2.0/mlflow-artifacts/artifacts/1/x/smoke.txt -> HTTP 500: b''"

    def smoke_test(uri, **options):
        raise verify.SmokeTestError(failing)

    monkeypatch.setattr(verify, "smoke_test", smoke_test)
    with caplog.at_level(logging.DEBUG, logger="pyinfra"):
        assert verify._run_smoke_test(None, in_host_context, "http://mlflow.example.org:5000", HINT) is False
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and errors[0].levelno == logging.ERROR
    message = errors[0].getMessage()
    assert len(message.splitlines()) == 1
    assert f"smoke test failed: {failing}" in message
    assert HINT in message
    assert errors[0].exc_info is None
    assert "Traceback" not in caplog.text


def test_other_exceptions_are_not_swallowed(in_host_context, monkeypatch):
    # only the smoke test's own failure is turned into a message; a bug still shows itself
    def smoke_test(uri, **options):
        raise KeyError("experiment_id")

    monkeypatch.setattr(verify, "smoke_test", smoke_test)
    with pytest.raises(KeyError):
        verify._run_smoke_test(None, in_host_context, "http://mlflow.example.org:5000", HINT)


def test_smoke_test_error_names_the_failing_call(monkeypatch):
    monkeypatch.setattr(verify.time, "sleep", lambda seconds: None)
    with pytest.raises(verify.SmokeTestError, match=r"^GET http://127\.0\.0\.1:1/health -> "):
        verify.smoke_test("http://127.0.0.1:1", attempts=2)


def test_a_server_that_accepts_but_does_not_answer_is_a_smoke_test_error_naming_the_call():
    # The CI run of 2026-12-06: a call to the emulated VM outlived its timeout, and the socket's
    # TimeoutError (not a URLError) escaped as "Command timed out after Nones".
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        with pytest.raises(verify.SmokeTestError, match=rf"^GET http://127\.0\.0\.1:{port}/health -> no answer within 0\.5 s"):
            verify.smoke_test(f"http://127.0.0.1:{port}", attempts=1, timeout=0.5)


def test_a_slow_host_gives_each_smoke_test_call_longer():
    assert verify.request_timeout(300) == 60  # the default health timeout
    assert verify.request_timeout(10) == 30   # never shorter than 30 s
    assert verify.request_timeout(1200) == 240  # the VM test's setting


def test_failed_smoke_test_fails_the_pyinfra_run_without_a_traceback(tmp_path):
    deploy = tmp_path / "smoke_deploy.py"
    deploy.write_text(textwrap.dedent(f"""
        from pyinfra.operations import python
        from mlflow_stack.steps import verify

        def refused(tracking_uri, **options):
            raise verify.SmokeTestError(f"GET {{tracking_uri}}/health -> [Errno 111] Connection refused")

        verify.smoke_test = refused
        python.call(name="Smoke-test MLflow", function=verify._run_smoke_test,
                    tracking_uri="http://127.0.0.1:1", logs_hint={HINT!r})
    """))
    proc = subprocess.run([PYINFRA, "-y", "@local", str(deploy)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)})
    output = proc.stdout + proc.stderr
    assert "smoke test failed: GET http://127.0.0.1:1/health" in output, output
    assert "Traceback" not in output
    assert proc.returncode != 0, output
