"""Timings of the deploy on a fresh container target (not a test: prints figures).

    .venv/bin/python bench/bench.py

Prints: first-run wall time, no-change rerun wall time, remote commands in the rerun, and
the time from `docker compose up` to every service healthy (stack stopped, then started).
"""

from __future__ import annotations

import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.support import Deployer  # noqa: E402
from tools.harness.targets import start_container_target  # noqa: E402
from tools.standins.build import ensure_standin_archive, standin_settings  # noqa: E402


def main() -> None:
    settings = standin_settings(ensure_standin_archive())
    target = start_container_target(index=60, name="bench")
    try:
        deployer = Deployer(target, settings, workdir=Path(tempfile.mkdtemp(prefix="bench-")))
        first = deployer.run().check()
        rerun = deployer.run(extra_args=("--debug",)).check()
        assert rerun.changed == [], rerun.changed
        target.ssh("cd /srv/mlflow && docker compose stop")
        started = time.monotonic()
        target.ssh("cd /srv/mlflow && docker compose up -d && sh wait-healthy.sh mlflow 600 --oneshot create-bucket --oneshot migrate-db postgres minio mlflow proxy")
        up_to_healthy = time.monotonic() - started
    finally:
        target.stop()
    print(f"date: {time.strftime('%Y-%m-%d')}, machine: {platform.node()} ({platform.machine()}, "
          f"{len(__import__('os').sched_getaffinity(0))} cores)")
    print(f"first run (fresh target, image build included): {first.seconds:.1f} s")
    print(f"no-change rerun: {rerun.seconds:.1f} s, {len(rerun.unchanged)} operations, 0 changed")
    print(f"remote commands in the rerun: {rerun.remote_commands}")
    print(f"compose up -> all healthy (stopped stack): {up_to_healthy:.1f} s")


if __name__ == "__main__":
    main()
