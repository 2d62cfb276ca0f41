"""The data host's firewall: the bundled PostgreSQL and MinIO it publishes for the tracking
servers are reachable from the tracking servers and load balancers only.

A data host gets files/host/data-firewall.sh (the rules, and why they look the way they do)
and mlflow-data-firewall.service, which applies them before Docker starts; any other host
loses both, with the rules, if it had them. Reads four settings of the config: `stack_dir`,
`role`, `firewall_sources` (IPv4 addresses) and `firewall_ports` (the host ports Docker
publishes there).
"""

from __future__ import annotations

import ipaddress

from pyinfra import host
from pyinfra.api import DeployError, FactBase, QuoteString, StringCommand, deploy
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from mlflow_stack.steps.stack_files import HOST_FILES, TEMPLATES

DATA_ROLE = "data"
UNIT = "mlflow-data-firewall.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
SCRIPT = "data-firewall.sh"


def script_path(config) -> str:
    return f"{config.stack_dir}/{SCRIPT}"


def script_arguments(config) -> tuple[str, str]:
    """PORTS and SOURCES as data-firewall.sh takes them: "5432,9000", "10.0.0.11,10.0.0.12"."""
    return ",".join(str(port) for port in config.firewall_ports), ",".join(config.firewall_sources)


def firewall_command(config, action: str) -> StringCommand:
    """`bash data-firewall.sh apply PORTS SOURCES` or `... remove` (no secret in it)."""
    args = [script_path(config), action, *(script_arguments(config) if action == "apply" else ())]
    return StringCommand("bash", *(QuoteString(arg) for arg in args))


def unit_context(config) -> dict:
    return {
        # systemd wants the interpreter's absolute path; the arguments are shell-quoted, which it understands.
        "apply_command": "/bin/" + firewall_command(config, "apply").get_raw_value(),
        "remove_command": "/bin/" + firewall_command(config, "remove").get_raw_value(),
        "ports_text": ", ".join(str(port) for port in config.firewall_ports),
        "sources_text": ", ".join(config.firewall_sources) or "no other host",
    }


def check_firewall_settings(config) -> None:
    """A clear error while the plan is made, before anything on the host changes."""
    problems = [f"firewall_sources: {source!r} is not an IPv4 address" for source in config.firewall_sources
                if not _is_ipv4(source)]
    problems += [f"firewall_ports: {port!r} is not a port number (1-65535)" for port in config.firewall_ports
                 if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535]
    if not config.firewall_ports:
        problems.append("firewall_ports: a data host publishes at least one port")
    if problems:
        raise DeployError(f"data host firewall on {host.name}: " + "; ".join(problems))


def _is_ipv4(value) -> bool:
    try:
        return isinstance(value, str) and str(ipaddress.IPv4Address(value)) == value
    except ValueError:
        return False


class DataFirewallRules(FactBase):
    """What of the data host's firewall is on the host: "applied": exactly the rules for these
    ports and sources (data-firewall.sh check); "other": the script, and its chain with other
    rules; "files": the script or the unit, no rules; "none": nothing (never a data host)."""

    def command(self, script: str, ports: str, sources: str) -> StringCommand:
        check = StringCommand("bash", QuoteString(script), "check", QuoteString(ports), QuoteString(sources))
        chain = "{ iptables -w -n -L MLFLOW-DATA || ip6tables -w -n -L MLFLOW-DATA; } >/dev/null 2>&1"
        return StringCommand("if test -f", QuoteString(script), "&&", check, ">/dev/null 2>&1; then echo applied;",
                             "elif test -f", QuoteString(script), "&&", chain, "; then echo other;",
                             "elif test -e", QuoteString(script), "|| test -e", UNIT_PATH, "; then echo files;",
                             "else echo none; fi")

    @staticmethod
    def default() -> str:
        return "none"

    def process(self, output) -> str:
        return output[0].strip() if output else "none"


@deploy("Restrict the data host's published ports")
def restrict_published_ports(config):
    """Data host: the ports in `firewall_ports` answer `firewall_sources` only (and the host
    itself, its containers); applied again when the script, its arguments or the rules on the
    host differ. Any other host: the unit, its script and the rules are removed if present.

    + config: the host's config; this step reads `stack_dir`, `role`, `firewall_sources`,
      `firewall_ports`

    **Example** (deploy.py, after Docker is installed, before the stack starts):

        restrict_published_ports(config)
    """
    if config.role == DATA_ROLE:
        check_firewall_settings(config)
    ports, sources = script_arguments(config)
    rules = host.get_fact(DataFirewallRules, script=script_path(config), ports=ports, sources=sources)
    if config.role != DATA_ROLE:
        _remove(config, rules)
        return
    script = files.put(name=f"Upload {SCRIPT}", src=str(HOST_FILES / SCRIPT), dest=script_path(config),
                       user="root", group="root", mode="755", create_remote_dir=True)
    unit = files.template(name=f"Upload {UNIT}", src=str(TEMPLATES / f"{UNIT}.j2"), dest=UNIT_PATH,
                          user="root", group="root", mode="644", **unit_context(config))
    systemd.daemon_reload(name="Reload systemd's units", _if=unit.did_change)
    start = systemd.service(name=f"Start {UNIT}", service=UNIT, running=True)
    systemd.service(name=f"Enable {UNIT} (it runs before Docker starts)", service=UNIT, running=None, enabled=True)
    inputs_changed = any_changed(script, unit)
    # A reload replaces the rules in one transaction (ExecReload): no moment without them.
    systemd.service(name="Apply the firewall rules again (changed, or not in place)", service=UNIT, running=None,
                    reloaded=True,
                    _if=lambda: not start.did_change() and (rules != "applied" or inputs_changed()))


def remove_firewall(config) -> None:
    """Stop and remove the data host's firewall (its rules, unit and script), wherever it is."""
    ports, sources = script_arguments(config)
    _remove(config, host.get_fact(DataFirewallRules, script=script_path(config), ports=ports, sources=sources))


def _remove(config, rules: str) -> None:
    if rules == "none":
        host.noop("not a data host, and none of its firewall is here")
        return
    stop = systemd.service(name=f"Stop {UNIT} (not a data host): its rules go", service=UNIT, running=False)
    # Rules left without the unit running (the script run by hand).
    server.shell(name="Remove the data host's firewall rules", commands=[firewall_command(config, "remove")],
                 _if=lambda: rules in ("applied", "other") and not stop.did_change())
    systemd.service(name=f"Disable {UNIT}", service=UNIT, running=None, enabled=False)
    removed = [files.file(name=f"Remove {path}", path=path, present=False)
               for path in (UNIT_PATH, script_path(config))]
    systemd.daemon_reload(name="Reload systemd's units", _if=any_changed(*removed))
