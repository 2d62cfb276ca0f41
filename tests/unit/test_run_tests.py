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
    assert run_tests.VM_MODULE in run_tests.LANE_FIRST["vm"]
    assert run_tests.LANE_FIRST["vm"][run_tests.LANE_FIRST["vm"].index("-m") + 1] == "vm"
    main_first, beside = run_tests.LANE_FIRST["main"], run_tests.LANE_BESIDE["main"]
    assert {"tests/unit", "tests/standins"} <= set(main_first) and "tests/harness" in beside
    # What runs beside is left out of the first pytest (each test once), and no VM test runs there.
    for path in beside:
        if path.startswith("tests/unit/"):
            assert f"--ignore={path}" in main_first
    assert "tests/harness" not in main_first and beside[:2] == ["-m", "not vm"]


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
    assert code == 1 and len(results) == 6


def test_the_main_lane_takes_modules_when_its_first_pytest_and_the_one_beside_it_are_done(monkeypatch, tmp_path):
    main_first, beside = (run_tests.describe(run_tests.LANE_FIRST["main"]),
                          run_tests.describe(run_tests.LANE_BESIDE["main"]))
    vm_first = run_tests.describe(run_tests.LANE_FIRST["vm"])
    code, results = run_with_fake_pytest(monkeypatch, tmp_path, {main_first: 0.05, beside: 0.6, vm_first: 0.3,
                                                                        "a.py": 1.0})
    assert code == 0
    order = [what for _, what, _, _ in results]
    by_lane = {what: lane for lane, what, _, _ in results}
    # Main waited for the pytest beside it (0.6 s): the VM lane, free after 0.3 s, took a.py.
    assert by_lane["a.py"] == "vm" and by_lane[beside] == "main"
    assert order.index(beside) < order.index("b.py") and by_lane["b.py"] == "main"


# --- the builds that start during `make setup` (tools/prewarm.py) -------------------------------


def make_dry_run(goal: str, changed: str = "requirements-test.txt") -> list[str]:
    """The commands `make GOAL` would run with the venv's requirements just changed."""
    proc = subprocess.run(["make", "-n", "-W", changed, goal], cwd=run_tests.REPO,
                          capture_output=True, text=True, check=True)
    return proc.stdout.splitlines()


def test_make_test_starts_the_first_builds_between_the_venv_and_the_install():
    commands = make_dry_run("test")
    venv = next(i for i, line in enumerate(commands) if "-m venv" in line)
    prewarm = next(i for i, line in enumerate(commands) if "-m tools.prewarm" in line)
    install = next(i for i, line in enumerate(commands) if "pip install" in line)
    assert venv < prewarm < install
    assert commands[prewarm].rstrip().endswith("&)"), "it must not hold up the install"
    assert "prewarm.log" in commands[prewarm]
    # `make setup` alone (or the demo's) leaves nothing running behind it.
    assert not [line for line in make_dry_run("setup") if "prewarm" in line]


def test_the_venv_is_installed_by_uv_and_by_pip_if_uv_fails():
    for goal, requirements in (("test", "requirements-test.txt"), ("demo", "requirements.txt")):
        install = next(line for line in make_dry_run(goal, requirements) if "pip install" in line)
        with_uv, with_pip = install.split(" || ")
        assert f"/uv pip install -q --system-certs --python .venv/bin/python -r {requirements}" in with_uv
        assert with_pip.strip() == f".venv/bin/python -m pip install -q -r {requirements}"


def test_the_prewarmed_builds_need_only_the_standard_library():
    # They run before pip has installed pyinfra, PyYAML or Jinja2 into the venv.
    probe = ("import sys, tools.prewarm as p; builds = p._builds(); "
             "print(sorted(builds)); "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'pyinfra', 'mlflow_stack', 'yaml', 'jinja2', 'mlflow'}))")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=run_tests.REPO, capture_output=True, text=True,
                          check=True)
    names, third_party = proc.stdout.strip().splitlines()
    assert "debootstrap for the VM" in names and "stand-in images" in names
    assert third_party == "[]"
