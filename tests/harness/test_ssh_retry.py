"""The harness's ssh tries again when the connection fails before the command runs (a guest
still booting), and never repeats a command that ran and failed."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tools.harness import targets
from tools.harness.targets import Target


def _counting_run(monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []
    real_run = subprocess.run

    def run(cmd, **kw):
        calls.append(cmd)
        return real_run(cmd, **kw)

    monkeypatch.setattr(targets.subprocess, "run", run)
    return calls


def _closed_port_target(monkeypatch, tmp_path: Path) -> Target:
    target = Target(name="nowhere", kind="container", address="127.0.0.1", ssh_key=tmp_path / "key")
    base = Target.ssh_command

    def ssh_command(self, user="root"):  # port 1 on the loopback: refused at once
        return base(self, user)[:1] + ["-p", "1"] + base(self, user)[1:]

    monkeypatch.setattr(Target, "ssh_command", ssh_command)
    return target


def test_a_refused_connection_is_tried_again_until_the_timeout(monkeypatch, tmp_path):
    target = _closed_port_target(monkeypatch, tmp_path)
    calls = _counting_run(monkeypatch)
    started = time.monotonic()
    result = target.ssh("true", check=False, timeout=5, watch=False)
    assert result.returncode == 255 and "Connection refused" in result.stderr
    assert len(calls) >= 2, calls
    assert time.monotonic() - started < 15


def test_a_command_that_ran_and_failed_is_not_repeated():
    ran = subprocess.CompletedProcess(["ssh"], 255, "", "some remote program exited 255\n")
    assert not targets._ssh_never_connected(ran)
    banner = subprocess.CompletedProcess(["ssh"], 255, "", "Connection timed out during banner exchange\n")
    assert targets._ssh_never_connected(banner)
