"""files/host/check_backends.py names what failed, run for real (as check-backends.sh runs it:
the script on stdin) against addresses that fail without leaving this machine."""

from __future__ import annotations

import socket
import subprocess
import sys

from .helpers import REPO

SCRIPT = REPO / "files" / "host" / "check_backends.py"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the block ends


def check(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-", *args], input=SCRIPT.read_text(), capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "AWS_ACCESS_KEY_ID": "K3Y", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value",
                               "AWS_DEFAULT_REGION": "us-east-1", **env}, timeout=60)


def test_unresolvable_database_host_is_a_dns_failure_and_the_password_is_not_shown():
    result = check("--database", MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://lab:Secret-Pw.123@db.invalid:5432/x")
    assert result.returncode == 1
    assert "FAILED: external PostgreSQL db.invalid:5432: DNS: the host cannot resolve 'db.invalid'" in result.stderr
    assert "Stopped before (re)starting the stack" in result.stderr
    assert "Secret-Pw.123" not in result.stdout + result.stderr


def test_closed_database_port_is_a_connect_failure():
    port = closed_port()
    result = check("--database", MLFLOW_BACKEND_STORE_URI=f"postgresql+psycopg2://lab:pw@127.0.0.1:{port}/x")
    assert result.returncode == 1
    assert f"external PostgreSQL 127.0.0.1:{port}: connect: 127.0.0.1:{port} does not accept connections" in result.stderr


def test_s3_failures_are_named_and_both_backends_are_reported_in_one_pass():
    port = closed_port()
    result = check("--database", "--s3", "lab", MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://lab:pw@db.invalid/x",
                   MLFLOW_S3_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    assert result.returncode == 1
    assert "external PostgreSQL db.invalid:5432: DNS" in result.stderr
    assert f"FAILED: external S3 http://127.0.0.1:{port}: connect:" in result.stderr
    assert "s3cr3t-value" not in result.stdout + result.stderr


def test_nothing_asked_nothing_failed():
    assert check().returncode == 0
