"""files/host/check-backends.sh takes named options and hands the checks to check_backends.py
in a one-off MLflow container; run for real by `sh` against a `docker` that records its call."""

from __future__ import annotations

import os
import subprocess

import pytest

from .helpers import REPO

SCRIPT = str(REPO / "files" / "host" / "check-backends.sh")


@pytest.fixture
def stack(tmp_path):
    bin_dir, stack_dir = tmp_path / "bin", tmp_path / "stack"
    bin_dir.mkdir(), stack_dir.mkdir()
    (bin_dir / "docker").write_text(f'#!/bin/sh\necho "docker $*" >> {tmp_path}/calls\ncat > /dev/null\n')
    (bin_dir / "docker").chmod(0o755)
    for name in (".env", "compose.yaml", "mlflow.env", "check_backends.py"):
        (stack_dir / name).write_text(name)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", SCRIPT, *args], capture_output=True, text=True, timeout=30,
                              env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})

    return tmp_path, stack_dir, run


@pytest.mark.parametrize("options, checks", [(["--database", "yes", "--s3", "lab-bucket"], "--database --s3 lab-bucket"),
                                             (["--s3", "lab-bucket"], "--s3 lab-bucket"),
                                             (["--database", "yes"], "--database")])
def test_the_checks_asked_reach_the_check_program_and_success_is_stamped(stack, options, checks):
    tmp_path, stack_dir, run = stack
    proc = run("--stack-dir", str(stack_dir), "--project", "lab", *options)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "calls").read_text().strip() == f"docker compose --project-name lab run --rm --no-deps -T mlflow python - {checks}"
    stamp = stack_dir / ".backends-checked"
    assert oct(stamp.stat().st_mode & 0o777) == "0o600" and "compose.yaml" in stamp.read_text()


@pytest.mark.parametrize("args", [["/srv/mlflow", "mlflow"], ["--project", "lab"], ["--stack-dir", "/srv/mlflow"]])
def test_positional_or_missing_arguments_are_refused_with_the_usage(stack, args):
    tmp_path, _, run = stack
    proc = run(*args)
    assert proc.returncode == 2 and "usage: check-backends.sh --stack-dir DIR --project NAME" in proc.stderr
    assert not (tmp_path / "calls").exists()
