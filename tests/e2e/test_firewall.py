"""The data host's firewall (mlflow_stack/steps/firewall.py) on one container target: Docker as the
deploy installs it, a web server published on the data host's ports 5432 and 9000 and on 8080
(a port the firewall is not told about). This machine is the outside client, at 10.99.N.1 on
the target's link (IPv6: its link-local address). In order: a source not listed cannot connect
(IPv4 or IPv6) while the host, its containers and port 8080 still can; a rerun changes nothing;
the rules outlast a Docker restart and a reboot; rules flushed by hand come back with the next
run; listing this machine lets it in; another role removes unit, files and rules."""

from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.request

import pytest

from tests.e2e.support import Deployer
from tools.harness.rootfs import SUDO_USER
from tools.harness.targets import docker_data_with_images
from tools.standins.build import STANDIN_IMAGES

STEP = "Restrict the data host's published ports"
PORTS = [5432, 9000]
ELSEWHERE = "10.99.250.9"  # a tracking server that is not this machine
CHECK_RULES = f"bash /srv/mlflow/data-firewall.sh check 5432,9000 {ELSEWHERE}"


def probe(url: str, timeout: float = 3) -> str:
    """"answers", "times out" (the packets are dropped), or what else happened (refused: the
    server is down, which must not pass for a closed port)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return "answers" if response.status == 200 else f"status {response.status}"
    except TimeoutError:
        return "times out"
    except urllib.error.URLError as error:
        return "times out" if isinstance(error.reason, TimeoutError) else repr(error.reason)
    except OSError as error:
        return repr(error)


def answers(url: str, timeout: float = 3) -> bool:
    return probe(url, timeout) == "answers"


def ipv4_urls(target, ports=PORTS) -> list[str]:
    return [f"http://{target.address}:{port}/" for port in ports]


def ipv6_url(target, port: int) -> str:
    """The target's link-local address through its veth on this machine (new after a reboot)."""
    address = target.ssh("ip -6 -o addr show dev host0 scope link | awk '{print $4}' | cut -d/ -f1").stdout.strip()
    return f"http://[{address}%ve-{target.name}]:{port}/"


def reachable_from_here(target) -> dict[str, str]:
    return {url: probe(url) for url in [*ipv4_urls(target, [*PORTS, 8080]), ipv6_url(target, 5432)]}


def open_to_this_machine(target) -> dict[str, str]:
    return {url: "answers" for url in [*ipv4_urls(target, [*PORTS, 8080]), ipv6_url(target, 5432)]}


def closed_to_this_machine(target) -> dict[str, str]:
    """What reachable_from_here() sees while this machine is not a listed source."""
    return {**{url: "times out" for url in ipv4_urls(target)}, f"http://{target.address}:8080/": "answers",
            ipv6_url(target, 5432): "times out"}


def wait_until_answering(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not answers(url, timeout=1):
        assert time.monotonic() < deadline, f"{url} does not answer"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def data_host(container_target, settings, record):
    started = time.monotonic()
    Deployer(container_target, settings).run(deploy="tests/e2e/published_services.py").check()
    wait_until_answering(ipv4_urls(container_target)[0])
    # Without the firewall every address reaches them, IPv6 included (docker-proxy on [::]).
    assert reachable_from_here(container_target) == open_to_this_machine(container_target)
    yield container_target
    record("firewall_module_s", round(time.monotonic() - started, 1))


@pytest.fixture(scope="module")
def deploy_firewall(data_host, settings):
    def run(role: str = "data", sources=(ELSEWHERE,), user: str = "root"):
        return Deployer(data_host, settings, user=user).run(deploy="tests/e2e/data_firewall.py", overrides={
            "role": role, "firewall_sources": list(sources), "firewall_ports": PORTS}).check()

    return run


def control_address(target) -> str:
    """This machine's address on the target's link (10.99.N.1)."""
    return target.address.rsplit(".", 1)[0] + ".1"


def test_a_source_not_listed_cannot_connect(data_host, deploy_firewall, record):
    first = deploy_firewall()
    record("firewall_first_deploy_s", round(first.seconds, 1))
    assert f"{STEP} | Start mlflow-data-firewall.service" in first.changed
    assert reachable_from_here(data_host) == closed_to_this_machine(data_host)


def test_the_host_and_its_containers_still_reach_the_ports(data_host):
    host_side = data_host.ssh(
        "for url in http://127.0.0.1:5432/ http://[::1]:9000/ http://" + data_host.address + ":5432/; do "
        "curl -sf -o /dev/null --max-time 3 $url && echo ok; done").stdout.split()
    assert host_side == ["ok", "ok", "ok"]
    # A container beside it (as MLflow beside PostgreSQL) by name, and one through the host's port.
    client = "import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=3).status)"
    for network, url in (("data-net", "http://published:5432/"), ("bridge", f"http://{data_host.address}:9000/")):
        out = data_host.ssh(f"docker run --rm --network {network} {STANDIN_IMAGES['python']} python3 -c '{client}' {url}")
        assert out.stdout.strip() == "200"
    assert data_host.ssh("docker exec published true").returncode == 0


def test_rerun_changes_nothing(deploy_firewall, record):
    again = deploy_firewall()
    record("firewall_rerun_s", round(again.seconds, 1))
    assert again.changed == [], again.changed
    # The fact reads the rules through sudo as well.
    assert deploy_firewall(user=SUDO_USER).changed == []


def test_the_rules_outlast_a_docker_restart_and_a_reboot(data_host, deploy_firewall):
    data_host.ssh("systemctl restart docker")
    assert data_host.ssh(CHECK_RULES, check=False).returncode == 0
    assert reachable_from_here(data_host) == closed_to_this_machine(data_host)
    data_host.reboot()
    # At boot the unit runs before dockerd starts the container again.
    order = data_host.ssh("systemctl show -p ActiveEnterTimestampMonotonic --value "
                          "mlflow-data-firewall.service docker.service").stdout.split()
    assert int(order[0]) < int(order[1]), order
    data_host.ssh("for i in $(seq 30); do curl -sf -o /dev/null http://127.0.0.1:5432/ && exit 0; sleep 1; done; exit 1")
    assert reachable_from_here(data_host) == closed_to_this_machine(data_host)
    assert deploy_firewall().changed == []


def test_rules_flushed_by_hand_come_back_with_the_next_run(data_host, deploy_firewall):
    data_host.ssh("iptables -w -F MLFLOW-DATA && ip6tables -w -F MLFLOW-DATA")
    assert all(answers(url) for url in ipv4_urls(data_host))
    repaired = deploy_firewall(user=SUDO_USER)  # the check through sudo notices it too
    assert repaired.changed == [f"{STEP} | Apply the firewall rules again (changed, or not in place)"]
    assert [probe(url) for url in ipv4_urls(data_host)] == ["times out", "times out"]


def test_a_listed_source_connects(data_host, deploy_firewall):
    listed = deploy_firewall(sources=(ELSEWHERE, control_address(data_host)))
    assert f"{STEP} | Apply the firewall rules again (changed, or not in place)" in listed.changed
    assert all(answers(url) for url in ipv4_urls(data_host))
    assert probe(ipv6_url(data_host, 5432)) == "times out"  # the sources are IPv4 addresses


def test_another_role_removes_unit_files_and_rules(data_host, deploy_firewall):
    deploy_firewall(sources=(ELSEWHERE,))  # closed again: the removal must open it
    removed = deploy_firewall(role="standalone", sources=())
    assert f"{STEP} | Stop mlflow-data-firewall.service (not a data host): its rules go" in removed.changed
    assert reachable_from_here(data_host) == open_to_this_machine(data_host)
    leftovers = data_host.ssh("iptables -w -S; ip6tables -w -S; ls /etc/systemd/system /srv/mlflow").stdout
    assert "MLFLOW-DATA" not in leftovers and "data-firewall" not in leftovers
    assert deploy_firewall(role="standalone", sources=()).changed == []


def test_a_container_s_write_leaves_the_cached_image_layers_alone(data_host, preloaded_images):
    """The harness gives each target the images' layers as hard links to its cache
    (tools/harness/targets._put_docker_data): a container that changes a file of its image must
    change its own copy only, never the file every later target links to."""
    layers = docker_data_with_images(preloaded_images) / "overlay2"
    cached = [path for path in layers.glob("*/diff/etc/debian_version") if path.is_file() and not path.is_symlink()]
    assert cached, "no layer holds /etc/debian_version"
    before = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in cached}
    assert all(path.stat().st_nlink >= 2 for path in cached), "the target's layers are not links to the cache"
    written = data_host.ssh(f"docker run --rm {STANDIN_IMAGES['python']} "
                            "sh -c 'echo changed-by-a-container >> /etc/debian_version && tail -n1 /etc/debian_version'")
    assert written.stdout.strip() == "changed-by-a-container"
    assert {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in cached} == before
