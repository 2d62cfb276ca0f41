import fcntl
import json
import os
import threading
import time
from pathlib import Path

import pytest

from tests.harness.fixtures import container_target, container_target_factory, vm_target  # noqa: F401
from tests.harness.fixtures import VM_INDEX, docker_preinstalled
from tests.e2e.support import E2E_ADMIN_PASSWORD
from tools.harness.rootfs import build_rootfs
from tools.harness.targets import docker_data_with_images
from tools.standins.build import ensure_standin_archive, standin_settings
from tools.standins.mlflow_image import with_mlflow_image


# Figures measured by the suite (wall times, remote commands) for the README and bench/.
MEASUREMENTS = Path(os.environ.get("E2E_MEASUREMENTS", "/tmp/mlflow-stack-e2e-measurements.json"))


def suite_settings(standin_archive: Path) -> dict:
    # TLS is on by default; the modules that test other things talk plain HTTP (test_auth.py
    # turns TLS on for the same price as its own deploy). The MLflow image comes built, as an
    # air-gapped server gets it (docker_image_archives): targets skip their own pip install;
    # settings that change the image's inputs (another release, uid) still build it on the target.
    return with_mlflow_image({**standin_settings(standin_archive), "mlflow_auth_admin_password": E2E_ADMIN_PASSWORD,
                              "tls": "off"})


def suite_archives() -> tuple[Path, ...]:
    return tuple(Path(archive) for archive in suite_settings(ensure_standin_archive())["docker_image_archives"])


def _in_background(name: str, build) -> None:
    """Run `build` in a thread; a failure is printed, and the fixture that needs the artifact
    builds it again and fails with the real error."""
    def run() -> None:
        try:
            build()
        except Exception as error:
            print(f"background build {name} failed: {error}")

    threading.Thread(target=run, name=name, daemon=True).start()


def pytest_collection_finish(session) -> None:
    """Build what the first targets need side by side (each cached by its inputs, under a lock),
    not one after the other in a fixture. With a VM test in this pytest (the VM lane): the image
    archives then the Docker data loaded with them, beside the VM's root filesystem; the VM
    image needs all three (in an empty cache the archives and the VM image came one after the
    other: 161 s, then 159 s). With a module on plain Debian (the first in `make test`'s main
    lane): the root filesystem with Docker and that Docker data, for the modules after it."""
    if session.config.option.collectonly:
        return
    if any(item.get_closest_marker("vm") for item in session.items):
        _in_background("vm-rootfs", lambda: build_rootfs("vm", vm_index=VM_INDEX, docker=True))
    if any(item.get_closest_marker("vm") for item in session.items) or \
            any(not docker_preinstalled(item.module) for item in session.items if "tests/e2e/" in item.nodeid):
        _in_background("container-rootfs", lambda: build_rootfs("container", docker=True))
        _in_background("docker-data", lambda: docker_data_with_images(suite_archives()))


@pytest.fixture(scope="session")
def standin_archive() -> Path:
    return ensure_standin_archive()


@pytest.fixture(scope="session")
def settings(standin_archive) -> dict:
    return suite_settings(standin_archive)


@pytest.fixture(scope="session")
def record():
    """record(key, value): keep a measured figure and print it in the test log. The file is
    read and written under a lock: `make test` runs the VM module in a second pytest."""

    def put(key, value):
        with open(f"{MEASUREMENTS}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            figures = json.loads(MEASUREMENTS.read_text()) if MEASUREMENTS.exists() else {}
            figures[key] = value
            figures["_updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
            MEASUREMENTS.write_text(json.dumps(figures, indent=2, sort_keys=True))
        print(f"MEASURED {key} = {value}")

    return put
