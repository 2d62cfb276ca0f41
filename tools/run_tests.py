"""`make test`: the suite in pytest processes side by side, one per tier.

- ``vm``:   the tests that need the qemu VM (marked ``vm``): most of their time the guest's
            software-emulated CPU, so they run beside the rest from the start;
- ``main``: unit, harness, stand-ins, then every end-to-end module not listed in ``E2E_BESIDE``;
- ``e2e``:  the end-to-end modules in ``E2E_BESIDE`` (none now), from the start.

Measured (CI from an empty cache, 2026-12-06): with cluster, external, auth and status in a
third pytest the machine's two cores were busy all along and every tier slowed down (main
63 min, the VM over 60) against 58.7 / 39.5 min in two tiers: a module mostly waits on its
targets, but its targets' containers and the VM keep the CPU busy. So E2E_BESIDE is empty until
the suite needs less CPU; the split and its per-module wall times stay to balance by.

Targets, cache artifacts, /etc/hosts entries and the measurements file are safe to share
(free target indexes, flock). Each tier's log goes to LOG_DIR/<tier>.log; the main tier's is
also shown as it runs, the others after it. Prints each tier's wall time; fails if any failed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOG_DIR = Path(os.environ.get("MLFLOW_STACK_TEST_LOGS", "/tmp/mlflow-stack-test-logs"))

# Modules run by a second end-to-end pytest from the start (see above: none now). Minutes in the
# CI run of 2026-12-06 with three tiers: cluster 17.9, auth 14.8, external 10.2, status 8.1.
E2E_BESIDE: list[str] = []
VM_MODULE = "tests/e2e/test_vm.py"


def main_tier_e2e_modules() -> list[str]:
    """Every end-to-end module the other tiers do not run (a new module lands here)."""
    modules = sorted(str(path.relative_to(REPO)) for path in (REPO / "tests/e2e").glob("test_*.py"))
    return [module for module in modules if module not in E2E_BESIDE and module != VM_MODULE]


def tiers() -> dict[str, list[str]]:
    return {
        # The harness's own VM self-test is left out: test_vm.py boots, reboots and cleans up the
        # same VM (run it with `make harness-test` when changing the harness).
        "vm": ["-m", "vm", "tests/harness", VM_MODULE,
               "--deselect", "tests/harness/test_harness.py::test_vm_target"],
        "main": ["-m", "not vm", "tests/unit", "tests/harness", "tests/standins", *main_tier_e2e_modules()],
        **({"e2e": ["-m", "not vm", *E2E_BESIDE]} if E2E_BESIDE else {}),
    }


def copy_output(stream, log: Path, show: bool) -> None:
    with open(log, "wb") as handle:
        for line in stream:
            handle.write(line)
            handle.flush()
            if show:
                sys.stdout.buffer.write(line)
                sys.stdout.flush()


def run() -> int:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    processes: dict[str, subprocess.Popen] = {}
    logs: dict[str, Path] = {}
    ended: dict[str, float] = {}
    copiers: list[threading.Thread] = []

    def stop_all(signum, frame):
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # pytest's harness stops its targets on SIGTERM

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    for name, args in tiers().items():
        logs[name] = LOG_DIR / f"{name}.log"
        processes[name] = subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=REPO, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT)
        copiers.append(threading.Thread(target=copy_output, daemon=True,
                                        args=(processes[name].stdout, logs[name], name == "main")))
        copiers[-1].start()
    while len(ended) < len(processes):
        for name, process in processes.items():
            if name not in ended and process.poll() is not None:
                ended[name] = time.monotonic() - started
        time.sleep(1)
    for copier in copiers:
        copier.join()
    for name in processes:
        if name != "main":
            print(f"\n=== the {name} tier (ran beside the main tier) ===", flush=True)
            print(logs[name].read_text(errors="replace"), flush=True)
    print("\n=== wall time of each tier (all started together) ===")
    for name, process in processes.items():
        print(f"{name:5} {ended[name]:7.0f} s  exit {process.returncode}  log {logs[name]}")
    print(f"all   {time.monotonic() - started:7.0f} s", flush=True)
    return 0 if all(process.returncode == 0 for process in processes.values()) else 1


if __name__ == "__main__":
    sys.exit(run())
