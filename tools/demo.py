"""`make demo`: a local disposable Debian 13 target with the stack deployed into it through
the real `pyinfra INVENTORY deploy.py` path. `make demo-down` removes it again.

    python -m tools.demo up | down
"""

from __future__ import annotations

import pprint
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tools.harness.rootfs import build_rootfs
from tools.harness.targets import get_target, load_state, start_container_target
from tools.standins.build import archive_path, ensure_standin_archive, standin_settings

REPO = Path(__file__).resolve().parent.parent
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))

NAME, INDEX = "demo", 50
INVENTORY = REPO / ".demo" / "inventory.py"


class Progress:
    """Prints a step, its usual duration, and every 10 s how long it has taken so far."""

    def __init__(self, label: str, estimate: str):
        self.label, self.estimate, self.done = label, estimate, threading.Event()

    def __enter__(self):
        self.started = time.monotonic()
        print(f"[demo] {self.label} (usually {self.estimate})", flush=True)
        threading.Thread(target=self._tick, daemon=True).start()
        return self

    def _tick(self):
        while not self.done.wait(10):
            print(f"[demo]   ... {self.label}: {time.monotonic() - self.started:.0f} s", flush=True)

    def __exit__(self, *exc):
        self.done.set()
        print(f"[demo] {self.label}: done in {time.monotonic() - self.started:.0f} s", flush=True)


def up() -> int:
    started = time.monotonic()
    cold = not archive_path().is_file()
    # The target's root filesystem and the stand-in images are independent: built side by side.
    with Progress("target root filesystem and stand-in images", "2-3 min on an empty cache" if cold else "seconds"), \
            ThreadPoolExecutor(2) as pool:
        rootfs = pool.submit(build_rootfs, "container")
        archive = pool.submit(ensure_standin_archive)
        rootfs.result()
        archive = archive.result()
    with Progress("start the target", "5 s"):
        target = get_target(NAME) if load_state(NAME) else start_container_target(index=INDEX, name=NAME, keep=True)
    data = {**target.inventory_data("root"), **standin_settings(archive)}
    INVENTORY.parent.mkdir(exist_ok=True)
    INVENTORY.write_text(
        "# Written by `make demo`: the local disposable target, with the stand-in images and the\n"
        "# host's CA certificates passed through the deploy's own settings.\n"
        f"mlflow_servers = [({target.address!r}, {pprint.pformat(data)})]\n"
    )
    print(f"$ pyinfra -y {INVENTORY.relative_to(REPO)} deploy.py", flush=True)
    with Progress("deploy (Docker, the MLflow image's build, the stack)", "2 min on a fresh target, 3 s again"):
        code = subprocess.call([PYINFRA, "-y", str(INVENTORY), "deploy.py"], cwd=REPO)
    print(f"[demo] ready in {time.monotonic() - started:.0f} s", flush=True)
    if code == 0:
        # TLS is on by default: the deploy fetched its CA certificate to tls/<inventory name>/.
        print(f"\nMLflow is running at https://{target.address}:5000\n"
              f"  export MLFLOW_TRACKING_URI=https://{target.address}:5000\n"
              f"  export REQUESTS_CA_BUNDLE={REPO / 'tls' / target.address / 'ca.crt'}\n"
              f"  export MLFLOW_TRACKING_USERNAME=admin\n"
              f"  export MLFLOW_TRACKING_PASSWORD=$({' '.join(target.ssh_command())} "
              f"sed -n s/^MLFLOW_AUTH_ADMIN_PASSWORD=//p /srv/mlflow/.env)\n"
              f"  rerun:    .venv/bin/pyinfra -y {INVENTORY.relative_to(REPO)} deploy.py\n"
              f"  shell:    {' '.join(target.ssh_command())}\n"
              f"  teardown: make demo-down")
    return code


def down() -> int:
    if load_state(NAME):
        get_target(NAME).stop()
        print("demo target stopped and removed")
    INVENTORY.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit({"up": up, "down": down}[sys.argv[1] if len(sys.argv) > 1 else "up"]())
