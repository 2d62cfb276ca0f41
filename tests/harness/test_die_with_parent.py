"""A command the harness starts dies with the test process, even when that is killed by SIGKILL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The parent starts a long sleeper the way run_watched does, prints its pid, then waits.
PARENT = """
import subprocess, sys, time
from tools.harness.targets import die_with_parent
child = subprocess.Popen(["sleep", "300"], start_new_session=True, preexec_fn=die_with_parent)
print(child.pid, flush=True)
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_child_gets_sigterm_when_its_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], cwd=REPO, stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    try:
        assert _alive(child_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(child_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child_pid), "the child outlived its killed parent"
    finally:
        if _alive(child_pid):
            os.kill(child_pid, signal.SIGKILL)


def test_without_it_the_child_would_outlive_the_parent():
    """The control: the same parent without die_with_parent leaves the child behind."""
    script = PARENT.replace(", preexec_fn=die_with_parent", "")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        time.sleep(0.5)
        assert _alive(child_pid)
    finally:
        os.kill(child_pid, signal.SIGKILL)
