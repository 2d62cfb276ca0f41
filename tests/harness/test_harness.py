"""Self-test of the harness: start targets, check access and networking, check cleanup."""
from __future__ import annotations

import subprocess

import pytest

from .targets import start_container_target, start_vm_target

pytestmark = pytest.mark.e2e


def _host_state(index: int, dev: str) -> tuple[bool, str]:
    link = subprocess.run(["ip", "link", "show", "dev", dev], capture_output=True).returncode == 0
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    return link, "\n".join(line for line in rules.splitlines() if f"10.99.{index}.0/30" in line)


def _check_common(t) -> None:
    assert t.ssh("id -u").stdout.strip() == "0"
    assert t.ssh("id -un", user="labadmin").stdout.strip() == "labadmin"
    t.ssh("sudo -n true", user="labadmin")
    assert t.ssh("command -v docker dockerd", check=False).stdout.strip() == "", "docker must not be preinstalled"
    # Outbound traffic through the NAT: plain-HTTP apt and HTTPS PyPI (via the trusted proxy CA).
    t.ssh("apt-get update -q", timeout=300)
    assert "200" in t.ssh("curl -sSI -m 30 https://pypi.org/simple/ | head -1", timeout=60).stdout


def test_container_target():
    t = start_container_target(index=9, name="selftest")
    try:
        assert t.kind == "container" and t.address == "10.99.9.2"
        _check_common(t)
        # cgroup v1 controllers must be writable or dockerd cannot create its cgroups.
        t.ssh("mkdir /sys/fs/cgroup/cpuset/harness-probe && rmdir /sys/fs/cgroup/cpuset/harness-probe")
        data = t.inventory_data("labadmin")
        assert data["_sudo"] is True and data["ssh_user"] == "labadmin"
        assert "_sudo" not in t.inventory_data()
        assert _host_state(9, "ve-selftest")[0]
        boot_before = t.ssh("cat /proc/sys/kernel/random/boot_id").stdout
        t.reboot()
        assert t.ssh("cat /proc/sys/kernel/random/boot_id").stdout != boot_before
        t.ssh("curl -sSf -m 30 -o /dev/null http://deb.debian.org/debian/dists/trixie/InRelease")
    finally:
        t.stop()
    t.stop()  # idempotent
    link, rules = _host_state(9, "ve-selftest")
    assert not link, "veth left behind"
    assert rules == "", f"iptables rules left behind:\n{rules}"


@pytest.mark.vm
def test_vm_target():
    t = start_vm_target(index=200, name="selftestvm")
    try:
        assert t.kind == "vm" and t.address == "10.99.200.2"
        _check_common(t)
        boot_before = t.ssh("cat /proc/sys/kernel/random/boot_id").stdout
        t.reboot()
        assert t.ssh("cat /proc/sys/kernel/random/boot_id").stdout != boot_before
        t.ssh("sudo -n true", user="labadmin")
        t.ssh("apt-get update -q", timeout=300)  # network is back by itself after the reboot
    finally:
        t.stop()
    link, rules = _host_state(200, "tap-selftestvm")
    assert not link, "tap left behind"
    assert rules == "", f"iptables rules left behind:\n{rules}"
