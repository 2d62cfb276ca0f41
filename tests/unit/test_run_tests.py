"""`make test`'s lanes (tools/run_tests.py): every end-to-end module runs exactly once, the VM
lane joins the shared queue when its guest is done, and one failed pytest fails the run."""

import subprocess
import sys
import threading
import time
from pathlib import Path

from tools import run_tests


def e2e_modules() -> list[str]:
    return sorted(str(p.relative_to(run_tests.REPO)) for p in Path(run_tests.REPO, "tests/e2e").glob("test_*.py"))


def test_the_queue_holds_every_end_to_end_module_but_the_vms_longest_first():
    queue = run_tests.e2e_queue()
    assert sorted(queue + [run_tests.VM_MODULE]) == e2e_modules()
    assert set(run_tests.MEASURED_SECONDS) <= set(queue), "a measured module no longer exists"
    seconds = [run_tests.MEASURED_SECONDS.get(module, 10**6) for module in queue]
    assert seconds == sorted(seconds, reverse=True)


def collected(args: list[str]) -> set[str]:
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                         cwd=run_tests.REPO, capture_output=True, text=True, check=True).stdout
    return {line for line in out.splitlines() if "::" in line}


def test_each_test_before_the_queue_runs_in_exactly_one_lane():
    vm, main = collected(run_tests.LANE_FIRST["vm"]), collected(run_tests.LANE_FIRST["main"])
    everything = collected(["tests/unit", "tests/harness", "tests/standins", run_tests.VM_MODULE])
    assert not vm & main
    assert vm | main == everything - {"tests/harness/test_harness.py::test_vm_target"}
    # The VM lane: the VM tests; the main lane: the unit tests and no VM test.
    assert any(test.startswith("tests/unit/") for test in main)
    assert {test for test in everything if "vm" in test and "test_harness.py" in test} - {
        "tests/harness/test_harness.py::test_vm_target"} <= vm
    assert any(test.startswith(run_tests.VM_MODULE) for test in vm)
    assert not any(test.startswith(run_tests.VM_MODULE) for test in main)


def run_with_fake_pytest(monkeypatch, tmp_path, seconds: dict[str, float], failing: str = "") -> tuple[int, list]:
    """run() with each pytest replaced by a sleep of `seconds[what]`; returns (exit, results)."""
    monkeypatch.setattr(run_tests, "LOG_DIR", tmp_path)
    monkeypatch.setattr(run_tests, "e2e_queue", lambda: ["a.py", "b.py", "c.py"])
    lanes_seen = []

    def fake(self, lane, what, args, log, show):
        time.sleep(seconds.get(what, 0.05))
        with self.lock:
            self.results.append((lane, what, 1 if what == failing else 0, 0.0))
        lanes_seen.append(self)

    monkeypatch.setattr(run_tests.Lanes, "pytest", fake)
    monkeypatch.setattr(run_tests.signal, "signal", lambda *a: None)  # run() may be off the main thread
    code = run_tests.run()
    return code, lanes_seen[0].results


def test_the_vm_lane_takes_modules_once_its_guest_is_done(monkeypatch, tmp_path):
    vm_first, main_first = run_tests.describe(run_tests.LANE_FIRST["vm"]), run_tests.describe(run_tests.LANE_FIRST["main"])
    assert vm_first == f"tests/harness {run_tests.VM_MODULE}"  # not the deselected test
    code, results = run_with_fake_pytest(monkeypatch, tmp_path, {vm_first: 0.3, main_first: 0.05, "a.py": 1.0})
    assert code == 0
    by_lane = {what: lane for lane, what, _, _ in results}
    assert sorted(what for _, what, _, _ in results if what in ("a.py", "b.py", "c.py")) == [
        "a.py", "b.py", "c.py"]  # each once
    # main started a.py at once; the VM lane, free after 0.3 s, took b.py while a.py ran.
    assert by_lane["a.py"] == "main" and by_lane["b.py"] == "vm"


def test_one_failed_pytest_fails_the_run(monkeypatch, tmp_path):
    code, results = run_with_fake_pytest(monkeypatch, tmp_path, {}, failing="b.py")
    assert code == 1 and len(results) == 5
