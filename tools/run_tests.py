"""`make test`: the suite in two lanes side by side, each a series of pytest processes.

- lane ``vm``:   first the tests that need the qemu VM (marked ``vm``): most of their time the
                 guest's software-emulated CPU;
- lane ``main``: first unit, harness and stand-in tests;
then each lane takes the next end-to-end module from one shared queue, longest first, until the
queue is empty: the VM lane joins in as soon as its guest is done.

Measured (CI from an empty cache): two fixed tiers took 63 min, the VM tier done after 34 min
and the main tier's modules running one after the other for another 29 min on a machine with a
free core; a third pytest from the start (2026-12-06) slowed every tier (the VM and two module
series on two cores). Sharing the queue keeps two things running at any time, never three:
47 min in the CI rehearsal of 2026-12-07, both lanes ending within a minute of each other;
43 min after the probes, the status module's merge and the VM lane's image builds moved ahead;
42 min with Docker preinstalled where the install is not what is tested (2b96289), 36 min
(lanes) with fewer probes and looks in the VM (b53f73f); on a later, slower machine 36 min, and
32 min once the VM's reboot moved to a container target (2026-12-07, rehearsals A and B).

Targets, cache artifacts, /etc/hosts entries and the measurements file are safe to share
(free target indexes, flock). Each lane's log goes to LOG_DIR/<lane>.log; the main lane's is
also shown as it runs, the other after it. Prints each module's and each lane's wall time;
fails if any pytest failed.
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
VM_MODULE = "tests/e2e/test_vm.py"

# Wall seconds of each end-to-end module in the CI rehearsal of 2026-12-07 evening (f4a12ba; the
# container module without its 3.17.1 rebuild since): the queue's order, longest first, so the
# last module to start is a short one. A new module goes first.
MEASURED_SECONDS = {
    "tests/e2e/test_container.py": 628, "tests/e2e/test_auth.py": 473, "tests/e2e/test_import.py": 398,
    "tests/e2e/test_backup.py": 345, "tests/e2e/test_cluster.py": 287, "tests/e2e/test_external.py": 177,
    "tests/e2e/test_firewall.py": 77,
}

# What each lane runs before it takes modules from the queue.
LANE_FIRST = {
    # The harness's own VM self-test is left out: test_vm.py boots, reboots and cleans up the
    # same VM (run it with `make harness-test` when changing the harness).
    "vm": ["-m", "vm", "tests/harness", VM_MODULE, "--deselect", "tests/harness/test_harness.py::test_vm_target"],
    "main": ["-m", "not vm", "tests/unit", "--ignore=tests/unit/test_wait_healthy.py", "tests/standins"],
}
# Run beside a lane's first pytest (the lane takes modules when both are done): tests that mostly
# wait (wait-healthy.sh's real sleeps: 64 s of wall for 5 s of CPU; the harness's targets
# booting, its SSH logins spaced past logind's 10 s stop delay), so the unit tier's CPU work goes
# on meanwhile.
LANE_BESIDE = {
    "main": ["-m", "not vm", "tests/unit/test_wait_healthy.py", "tests/harness"],
}


def e2e_queue() -> list[str]:
    """Every end-to-end module but the VM's, the longest (by the last measurement) first."""
    modules = [str(path.relative_to(REPO)) for path in (REPO / "tests/e2e").glob("test_*.py")]
    return sorted((m for m in modules if m != VM_MODULE), key=lambda m: (-MEASURED_SECONDS.get(m, 10**6), m))


def describe(args: list[str]) -> str:
    """The paths a pytest runs (not those it deselects), for the wall-time table."""
    return " ".join(arg for before, arg in zip(["", *args], args) if arg.startswith("tests/") and before != "--deselect")


class Lanes:
    def __init__(self) -> None:
        self.queue = e2e_queue()
        self.lock = threading.Lock()
        self.stopping = False
        self.running: set[subprocess.Popen] = set()
        self.results: list[tuple[str, str, int, float]] = []  # lane, what, exit code, seconds

    def next_module(self) -> str | None:
        with self.lock:
            return None if self.stopping or not self.queue else self.queue.pop(0)

    def pytest(self, lane: str, what: str, args: list[str], log, show: bool) -> None:
        started = time.monotonic()
        process = subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=REPO, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
        with self.lock:
            self.running.add(process)
        for line in process.stdout:
            log.write(line)
            log.flush()
            if show:
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
        process.wait()
        with self.lock:
            self.running.discard(process)
            self.results.append((lane, what, process.returncode, time.monotonic() - started))

    def lane(self, name: str) -> None:
        beside = None
        if name in LANE_BESIDE:
            beside = threading.Thread(target=self._beside, args=(name, LANE_BESIDE[name]))
            beside.start()
        with open(LOG_DIR / f"{name}.log", "wb") as log:
            self.pytest(name, describe(LANE_FIRST[name]), LANE_FIRST[name], log, show=name == "main")
            if beside:
                beside.join()
            while (module := self.next_module()) is not None:
                log.write(f"\n=== {name} lane: {module} ===\n".encode())
                self.pytest(name, module, ["-m", "not vm", module], log, show=name == "main")

    def _beside(self, name: str, args: list[str]) -> None:
        with open(LOG_DIR / f"{name}-beside.log", "wb") as log:
            self.pytest(name, describe(args), args, log, show=False)

    def stop(self, signum, frame) -> None:
        with self.lock:
            self.stopping = True
            for process in self.running:
                process.send_signal(signal.SIGTERM)  # pytest's harness stops its targets on SIGTERM


def run() -> int:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    started, started_at = time.monotonic(), time.time()
    lanes = Lanes()
    signal.signal(signal.SIGTERM, lanes.stop)
    signal.signal(signal.SIGINT, lanes.stop)
    threads = {name: threading.Thread(target=lanes.lane, args=(name,)) for name in LANE_FIRST}
    ended: dict[str, float] = {}
    for thread in threads.values():
        thread.start()
    while len(ended) < len(threads):
        for name, thread in threads.items():
            thread.join(timeout=0.5)
            if not thread.is_alive() and name not in ended:
                ended[name] = time.monotonic() - started
    for lane in LANE_BESIDE:
        print(f"\n=== beside the {lane} lane's first pytest ===", flush=True)
        print((LOG_DIR / f"{lane}-beside.log").read_text(errors="replace"), flush=True)
    print("\n=== the vm lane (ran beside the main lane) ===", flush=True)
    print((LOG_DIR / "vm.log").read_text(errors="replace"), flush=True)
    # The builds the Makefile started during `make setup` (tools/prewarm.py), if it did for this run.
    prewarm = LOG_DIR / "prewarm.log"
    if prewarm.exists() and prewarm.stat().st_mtime > started_at - 600:
        print("\n=== builds started during the set-up ===\n" + prewarm.read_text(errors="replace"), flush=True)
    print("\n=== wall time of each pytest (lane, exit code) ===")
    for lane, what, code, seconds in lanes.results:
        print(f"{seconds:7.0f} s  {lane:4} exit {code}  {what}")
    print("\n=== wall time of each lane (both started together) ===")
    for name in threads:
        print(f"{name:5} {ended[name]:7.0f} s  log {LOG_DIR / f'{name}.log'}")
    print(f"all   {time.monotonic() - started:7.0f} s", flush=True)
    return 0 if lanes.results and all(code == 0 for _, _, code, _ in lanes.results) and not lanes.queue else 1


if __name__ == "__main__":
    sys.exit(run())
