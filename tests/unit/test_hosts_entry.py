"""The control machine's /etc/hosts entries of the end-to-end tests (tests/e2e/support.py): a
line left by a killed run must not send a name to an old target's address."""

import os
import subprocess

from tests.e2e.support import control_machine_hosts_entry
from tools.harness.targets import _proc_start_time


def test_lines_of_gone_processes_are_removed_and_the_own_line_is_removed_afterwards(tmp_path):
    # Alive while its start time is read (a `true` could be gone already: CI of 09d8beb).
    ended = subprocess.Popen(["sleep", "60"])
    ended_start = _proc_start_time(ended.pid)
    ended.kill()
    ended.wait()
    assert ended_start is not None
    hosts = tmp_path / "hosts"
    live = f"10.99.7.2 live.lab.test # mlflow-stack e2e {os.getpid()} {_proc_start_time(os.getpid())} aa\n"
    hosts.write_text("127.0.0.1 localhost\n"
                     "10.99.14.2 mlflow.cluster.test # mlflow-stack e2e 176245542eeb461c897214ce2a20a8c7\n"
                     f"10.99.9.2 killed.lab.test # mlflow-stack e2e {ended.pid} {ended_start} bb\n" + live)
    with control_machine_hosts_entry("mlflow.cluster.test", "10.99.12.2", hosts_path=hosts):
        during = hosts.read_text().splitlines()
        assert during[:2] == ["127.0.0.1 localhost", live.strip()]
        assert len(during) == 3 and during[2].startswith("10.99.12.2 mlflow.cluster.test # mlflow-stack e2e ")
    assert hosts.read_text() == "127.0.0.1 localhost\n" + live
