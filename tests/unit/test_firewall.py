"""The data host's firewall (mlflow_stack/steps/firewall.py): facts in, commands out for each role,
the unit it renders, and files/host/data-firewall.sh run for real against the kernel's
netfilter in a private network namespace (root only, like the e2e suite)."""

from __future__ import annotations

import re
import shutil
import subprocess
from types import SimpleNamespace

import pytest
from pyinfra.api import DeployError

from mlflow_stack.steps import firewall

from .helpers import HOST_NAME, REPO
from .plan import plan, sha1

STEP = "Restrict the data host's published ports"
UNIT_PATH = "/etc/systemd/system/mlflow-data-firewall.service"
SCRIPT_PATH = "/srv/mlflow/data-firewall.sh"
SCRIPT = REPO / "files" / "host" / "data-firewall.sh"
SOURCES = ("10.20.0.11", "10.20.0.12")


def fw_config(role: str = "data", sources=SOURCES, ports=(5432, 9000), stack_dir: str = "/srv/mlflow"):
    """The four settings the step reads (inventory_name: for the plan helper only)."""
    return SimpleNamespace(inventory_name=HOST_NAME, stack_dir=stack_dir, role=role,
                           firewall_sources=tuple(sources), firewall_ports=tuple(ports))


def root_file(mode: int) -> dict:
    return {"user": "root", "group": "root", "mode": mode, "size": 1}


def converged_facts(config, rules: str = "applied") -> dict:
    """A data host as a run with `config` leaves it; `rules`: what the firewall fact reports."""
    uploads = plan(firewall.restrict_published_ports, config, {}).uploads
    return {
        "Directory": {config.stack_dir: {"user": "root", "group": "root", "mode": 755},
                      "/etc/systemd/system": {"user": "root", "group": "root", "mode": 755}},
        "File": {SCRIPT_PATH: root_file(755), UNIT_PATH: root_file(644)},
        "Sha1File": {path: sha1(data) for path, data in uploads.items()},
        "SystemdStatus": {"mlflow-data-firewall.service": True},
        "SystemdEnabled": {"mlflow-data-firewall.service": True},
        "DataFirewallRules": rules,
    }


def former_data_host_facts(unit_running: bool = True, rules: str = "applied") -> dict:
    return {
        "File": {SCRIPT_PATH: root_file(755), UNIT_PATH: root_file(644)},
        "SystemdStatus": {"mlflow-data-firewall.service": unit_running},
        "SystemdEnabled": {"mlflow-data-firewall.service": True},
        "DataFirewallRules": rules,
    }


# --- data host -------------------------------------------------------------------------------

def test_a_fresh_data_host_gets_the_script_and_a_started_enabled_unit():
    result = plan(firewall.restrict_published_ports, fw_config(), {})
    assert result.uploads[SCRIPT_PATH] == SCRIPT.read_bytes()
    assert list(result.changing) == [f"{STEP} | Upload data-firewall.sh", f"{STEP} | Upload mlflow-data-firewall.service",
                                     f"{STEP} | Reload systemd's units",
                                     f"{STEP} | Start mlflow-data-firewall.service",
                                     f"{STEP} | Enable mlflow-data-firewall.service (it runs before Docker starts)"]
    assert result.changing[f"{STEP} | Start mlflow-data-firewall.service"] == [
        "systemctl start mlflow-data-firewall.service"]
    assert result.changing[f"{STEP} | Enable mlflow-data-firewall.service (it runs before Docker starts)"] == [
        "systemctl enable mlflow-data-firewall.service"]
    # Just started: applying again would only repeat it.
    assert f"{STEP} | Apply the firewall rules again (changed, or not in place)" not in result.changing
    # Asked with the arguments the unit runs the script with.
    assert ("DataFirewallRules", None) in result.asked


def test_the_unit_runs_the_script_for_two_ports_and_two_sources_before_docker():
    unit = plan(firewall.restrict_published_ports, fw_config(), {}).uploads[UNIT_PATH].decode()
    apply = "/bin/bash /srv/mlflow/data-firewall.sh apply 5432,9000 10.20.0.11,10.20.0.12"
    assert f"ExecStart={apply}\n" in unit and f"ExecReload={apply}\n" in unit
    assert "ExecStop=/bin/bash /srv/mlflow/data-firewall.sh remove\n" in unit
    for line in ("Type=oneshot", "RemainAfterExit=yes", "Before=docker.service", "WantedBy=docker.service",
                 "# Only 10.20.0.11, 10.20.0.12 may reach the data host's published ports 5432, 9000."):
        assert f"{line}\n" in unit
    # A Docker stop must not stop it (with live-restore the containers keep running).
    assert "PartOf=" not in unit and "Requires=" not in unit and "BindsTo=" not in unit


def test_no_source_at_all_is_an_empty_argument_systemd_understands():
    unit = plan(firewall.restrict_published_ports, fw_config(sources=()), {}).uploads[UNIT_PATH].decode()
    assert "ExecStart=/bin/bash /srv/mlflow/data-firewall.sh apply 5432,9000 ''\n" in unit
    assert "# Only no other host may reach" in unit


def test_paths_are_quoted_in_the_unit():
    unit = plan(firewall.restrict_published_ports, fw_config(stack_dir="/srv/ml flow"), {}).uploads[UNIT_PATH].decode()
    assert "ExecStop=/bin/bash '/srv/ml flow/data-firewall.sh' remove\n" in unit


def test_a_converged_data_host_plans_nothing():
    config = fw_config()
    assert plan(firewall.restrict_published_ports, config, converged_facts(config)).changing == {}


@pytest.mark.parametrize("rules", ["other", "none"])
def test_rules_missing_on_the_host_are_applied_again_in_one_reload(rules):
    """E.g. after `nft flush ruleset`: the files are right, the unit active, the rules gone."""
    config = fw_config()
    assert plan(firewall.restrict_published_ports, config, converged_facts(config, rules=rules)).changing == {
        f"{STEP} | Apply the firewall rules again (changed, or not in place)": [
            "systemctl reload mlflow-data-firewall.service"]}


def test_a_disabled_unit_is_enabled_and_its_missing_rules_applied_again():
    config = fw_config()
    facts = converged_facts(config, rules="none")
    facts["SystemdEnabled"] = {}
    assert plan(firewall.restrict_published_ports, config, facts).changing == {
        f"{STEP} | Enable mlflow-data-firewall.service (it runs before Docker starts)": [
            "systemctl enable mlflow-data-firewall.service"],
        f"{STEP} | Apply the firewall rules again (changed, or not in place)": [
            "systemctl reload mlflow-data-firewall.service"]}


def test_a_stopped_unit_is_started_which_applies_the_rules():
    config = fw_config()
    facts = converged_facts(config, rules="none")
    facts["SystemdStatus"] = {"mlflow-data-firewall.service": False}
    assert plan(firewall.restrict_published_ports, config, facts).changing == {
        f"{STEP} | Start mlflow-data-firewall.service": ["systemctl start mlflow-data-firewall.service"]}


def test_another_source_rewrites_the_unit_and_reloads_it():
    facts = converged_facts(fw_config())  # the fact asks for the new rules: not in place
    facts["DataFirewallRules"] = "other"
    changing = plan(firewall.restrict_published_ports, fw_config(sources=SOURCES + ("10.20.0.13",)), facts).changing
    assert changing[f"{STEP} | Upload mlflow-data-firewall.service"][0] == f"upload {UNIT_PATH}"
    assert {name: commands for name, commands in changing.items() if "Upload" not in name} == {
        f"{STEP} | Reload systemd's units": ["systemctl daemon-reload"],
        f"{STEP} | Apply the firewall rules again (changed, or not in place)": [
            "systemctl reload mlflow-data-firewall.service"],
    }


def test_a_new_script_is_applied_even_when_the_rules_look_in_place():
    facts = converged_facts(fw_config())
    facts["Sha1File"][SCRIPT_PATH] = sha1("an older script")
    changing = plan(firewall.restrict_published_ports, fw_config(), facts).changing
    assert list(changing) == [f"{STEP} | Upload data-firewall.sh",
                              f"{STEP} | Apply the firewall rules again (changed, or not in place)"]


@pytest.mark.parametrize("overrides, message", [
    ({"sources": ("10.20.0.11", "2001:db8::1")}, "firewall_sources: '2001:db8::1' is not an IPv4 address"),
    ({"sources": ("10.20.0.0/24",)}, "firewall_sources: '10.20.0.0/24' is not an IPv4 address"),
    ({"sources": ("tracking1",)}, "firewall_sources: 'tracking1' is not an IPv4 address"),
    ({"ports": (5432, 0)}, "firewall_ports: 0 is not a port number (1-65535)"),
    ({"ports": ("9000",)}, "firewall_ports: '9000' is not a port number (1-65535)"),
    ({"ports": ()}, "firewall_ports: a data host publishes at least one port"),
])
def test_bad_settings_stop_the_plan_before_anything_changes(overrides, message):
    with pytest.raises(DeployError, match=f"data host firewall on {HOST_NAME}: .*" + re.escape(message)):
        plan(firewall.restrict_published_ports, fw_config(**overrides), {})


# --- every other role ------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["standalone", "tracking", "balancer"])
def test_a_host_that_never_was_a_data_host_plans_nothing_after_one_fact(role):
    result = plan(firewall.restrict_published_ports, fw_config(role=role, sources=(), ports=()), {})
    assert result.ops == [] and result.uploads == {}
    assert result.asked == [("DataFirewallRules", None)]


def test_a_former_data_host_without_rules_loses_its_files():
    changing = plan(firewall.restrict_published_ports, fw_config(role="tracking"),
                    former_data_host_facts(unit_running=False, rules="files")).changing
    assert list(changing) == [f"{STEP} | Disable mlflow-data-firewall.service", f"{STEP} | Remove {UNIT_PATH}",
                              f"{STEP} | Remove {SCRIPT_PATH}", f"{STEP} | Reload systemd's units"]


def test_a_former_data_host_stops_the_unit_and_loses_its_files():
    """Stopping the unit removes the rules (ExecStop): the ports are open as before."""
    changing = plan(firewall.restrict_published_ports, fw_config(role="tracking"), former_data_host_facts()).changing
    assert changing == {
        f"{STEP} | Stop mlflow-data-firewall.service (not a data host): its rules go": [
            "systemctl stop mlflow-data-firewall.service"],
        f"{STEP} | Disable mlflow-data-firewall.service": ["systemctl disable mlflow-data-firewall.service"],
        f"{STEP} | Remove {UNIT_PATH}": [f"rm -f {UNIT_PATH}"],
        f"{STEP} | Remove {SCRIPT_PATH}": [f"rm -f {SCRIPT_PATH}"],
        f"{STEP} | Reload systemd's units": ["systemctl daemon-reload"],
    }


def test_rules_left_without_a_running_unit_are_removed_by_the_script():
    changing = plan(firewall.restrict_published_ports, fw_config(role="standalone"),
                    former_data_host_facts(unit_running=False, rules="other")).changing
    assert list(changing) == [f"{STEP} | Remove the data host's firewall rules",
                              f"{STEP} | Disable mlflow-data-firewall.service", f"{STEP} | Remove {UNIT_PATH}",
                              f"{STEP} | Remove {SCRIPT_PATH}", f"{STEP} | Reload systemd's units"]
    assert changing[f"{STEP} | Remove the data host's firewall rules"] == [f"bash {SCRIPT_PATH} remove"]


def test_the_fact_checks_the_rules_with_the_script_on_the_host():
    fact = firewall.DataFirewallRules()
    command = fact.command(SCRIPT_PATH, "5432,9000", "10.20.0.11,10.20.0.12").get_raw_value()
    assert command.startswith(f"if test -f {SCRIPT_PATH} && bash {SCRIPT_PATH} check 5432,9000 10.20.0.11,10.20.0.12 ")
    assert "iptables -w -n -L MLFLOW-DATA" in command and "ip6tables -w -n -L MLFLOW-DATA" in command
    assert f"test -e {UNIT_PATH} ; then echo files;" in command
    assert fact.command(SCRIPT_PATH, "5432", "").get_raw_value().count(" check 5432 '' ") == 1
    assert [fact.process([word]) for word in ("applied", "other", "files", "none")] == [
        "applied", "other", "files", "none"]
    assert fact.process([]) == "none" and fact.default() == "none"


# --- the script, for real, in a network namespace of its own -------------------------------

def _netns_available() -> bool:
    if not (shutil.which("unshare") and shutil.which("iptables-restore")):
        return False
    return subprocess.run(["unshare", "--net", "iptables", "-w", "-S"], capture_output=True).returncode == 0


netns = pytest.mark.skipif(not _netns_available(), reason="needs root, unshare and iptables")


def in_netns(script: str) -> subprocess.CompletedProcess:
    """Run bash `script` in a fresh network namespace ($FW: the firewall script)."""
    return subprocess.run(["unshare", "--net", "bash", "-c", f"set -e\nFW={SCRIPT}\n{script}"],
                          capture_output=True, text=True, timeout=60)


@netns
def test_the_script_for_two_ports_and_two_sources():
    result = in_netns('bash $FW apply 5432,9000 10.20.0.11,10.20.0.12 >/dev/null\n'
                      'iptables -w -S; echo ---; ip6tables -w -S')
    assert result.returncode == 0, result.stderr
    v4, v6 = result.stdout.split("---\n")
    match = "-p tcp -m conntrack --ctstate DNAT --ctorigdstport {} --ctdir ORIGINAL -j"
    assert v4.splitlines()[3:] == [
        # DOCKER-USER did not exist yet (dockerd not started): made, with the jump as its first rule.
        "-N DOCKER-USER", "-N MLFLOW-DATA", "-A DOCKER-USER -j MLFLOW-DATA",
        f"-A MLFLOW-DATA -s 10.20.0.11/32 {match.format(5432)} RETURN",
        f"-A MLFLOW-DATA -s 10.20.0.12/32 {match.format(5432)} RETURN",
        f"-A MLFLOW-DATA {match.format(5432)} DROP",
        f"-A MLFLOW-DATA -s 10.20.0.11/32 {match.format(9000)} RETURN",
        f"-A MLFLOW-DATA -s 10.20.0.12/32 {match.format(9000)} RETURN",
        f"-A MLFLOW-DATA {match.format(9000)} DROP",
    ]
    # IPv6: docker-proxy serves these ports on [::] (INPUT): all dropped but on the loopback.
    assert v6.splitlines()[-5:] == [
        "-N MLFLOW-DATA", "-A INPUT -j MLFLOW-DATA", "-A MLFLOW-DATA -i lo -j RETURN",
        "-A MLFLOW-DATA -p tcp -m tcp --dport 5432 -m conntrack --ctdir ORIGINAL -j DROP",
        "-A MLFLOW-DATA -p tcp -m tcp --dport 9000 -m conntrack --ctdir ORIGINAL -j DROP",
    ]


@netns
def test_the_script_applies_again_without_duplicates_and_keeps_dockers_own_rules():
    result = in_netns(
        "iptables -w -N DOCKER-USER; iptables -w -A DOCKER-USER -j RETURN  # as dockerd leaves it\n"
        "bash $FW apply 5432,9000 10.20.0.11,10.20.0.12\n"
        "iptables -w -I DOCKER-USER -j MLFLOW-DATA  # a stray second jump\n"
        "bash $FW check 5432,9000 10.20.0.11,10.20.0.12 && echo stray-jump-passed\n"
        "bash $FW apply 5432 10.20.0.13 >/dev/null\n"
        "bash $FW check 5432 10.20.0.13 && echo check=ok\n"
        "bash $FW check 5432,9000 10.20.0.13 || echo other-ports=not-in-place\n"
        "bash $FW check 5432 10.20.0.11 || echo other-sources=not-in-place\n"
        "iptables -w -S DOCKER-USER; iptables -w -S MLFLOW-DATA; ip6tables -w -S MLFLOW-DATA")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "stray-jump-passed" not in lines
    assert lines[lines.index("check=ok"):] == [
        "check=ok", "other-ports=not-in-place", "other-sources=not-in-place",
        "-N DOCKER-USER", "-A DOCKER-USER -j MLFLOW-DATA", "-A DOCKER-USER -j RETURN",
        "-N MLFLOW-DATA",
        "-A MLFLOW-DATA -s 10.20.0.13/32 -p tcp -m conntrack --ctstate DNAT --ctorigdstport 5432 --ctdir ORIGINAL -j RETURN",
        "-A MLFLOW-DATA -p tcp -m conntrack --ctstate DNAT --ctorigdstport 5432 --ctdir ORIGINAL -j DROP",
        "-N MLFLOW-DATA", "-A MLFLOW-DATA -i lo -j RETURN",
        "-A MLFLOW-DATA -p tcp -m tcp --dport 5432 -m conntrack --ctdir ORIGINAL -j DROP",
    ]


@netns
def test_the_script_removes_every_rule_and_check_then_fails():
    result = in_netns(
        "iptables -w -N DOCKER-USER; iptables -w -A DOCKER-USER -j RETURN\n"
        "bash $FW apply 5432,9000 10.20.0.11 >/dev/null\n"
        "iptables -w -F MLFLOW-DATA  # rules lost (a flush by hand)\n"
        "bash $FW check 5432,9000 10.20.0.11 || echo flushed=not-in-place\n"
        "bash $FW remove; bash $FW remove  # twice: nothing left to do the second time\n"
        "bash $FW check 5432,9000 10.20.0.11 || echo removed=not-in-place\n"
        "iptables -w -S; ip6tables -w -S")
    assert result.returncode == 0, result.stderr
    assert "flushed=not-in-place" in result.stdout and "removed=not-in-place" in result.stdout
    assert "MLFLOW-DATA: removed; the published ports are open as before" in result.stdout
    assert "MLFLOW" not in result.stdout.split("removed=not-in-place")[1]
    assert "-A DOCKER-USER -j RETURN" in result.stdout  # Docker's own chain untouched


@pytest.mark.parametrize("args", [["apply", "5432", "10.0.0.0/8"], ["apply", "54x", "10.0.0.1"],
                                  ["apply", "5432"], ["remove", "5432"], ["flush"]])
def test_the_script_refuses_bad_arguments_before_touching_anything(args):
    result = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True)
    assert result.returncode == 2, result
