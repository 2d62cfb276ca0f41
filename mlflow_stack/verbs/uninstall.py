"""`pyinfra inventory.py uninstall.py`: take the stack off a host, keeping its data.

Stops and removes the stack's containers and network, its timers and their units, a data
host's firewall, the files the deploy wrote (compose file, env and auth files, build context,
scripts, image archives, the CA certificates it added to the host's store) and the MLflow image
it built. Kept: the database, the objects, the backups, the secrets files and the TLS CA and
certificate, so a later `deploy.py` brings the same stack back with the same data, passwords
and CA. `uninstall_data = True` with `uninstall_confirm` naming the host removes those too (the
whole stack directory, the backup directory, the account); `uninstall_docker = True` removes
Docker's packages as well.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.docker import DockerImages
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

from mlflow_stack.config import StackConfig, config_from_host
from mlflow_stack.facts.host import ComposeServices
from mlflow_stack.services import node_exporter
from mlflow_stack.steps.docker_engine import DISTRO_PACKAGES, OFFICIAL_PACKAGES
from mlflow_stack.steps.firewall import remove_firewall
from mlflow_stack.steps.schedules import BACKUP_UNIT, GC_UNIT, UNIT_DIR
from mlflow_stack.steps.stack_files import BACKEND_CHECK_SCRIPTS, HELPER_SCRIPTS, HOST_CA_DIR, backend_ca_files

# What the deploy writes in the stack directory besides the data and the secrets.
WRITTEN_FILES = ("compose.yaml", "mlflow.env", "auth.ini", "nginx.conf", "balancer.conf", "users.synced",
                 *HELPER_SCRIPTS, *BACKEND_CHECK_SCRIPTS)
WRITTEN_DIRS = ("build", "images", node_exporter.TEXTFILE_DIR)


@deploy("Remove the MLflow stack")
def uninstall(config: StackConfig | None = None):
    config = config or config_from_host()
    stack, project = config.stack_dir, config.compose_project
    if host.get_fact(ComposeServices, project=project):
        # By project name: works without the compose file too (compose finds the containers by label).
        server.shell(name="Stop and remove the stack's containers and network",
                     commands=[f"docker compose --project-name {project} down --remove-orphans"])
    units = []
    for unit in (BACKUP_UNIT, GC_UNIT):
        if host.get_fact(File, path=f"{UNIT_DIR}/{unit}.timer"):
            systemd.service(name=f"Stop and disable {unit}.timer", service=f"{unit}.timer", running=False,
                            enabled=False)
        units += [files.file(name=f"Remove {UNIT_DIR}/{unit}.{kind}", path=f"{UNIT_DIR}/{unit}.{kind}",
                             present=False) for kind in ("timer", "service")]
    systemd.daemon_reload(name="Reload systemd's units", _if=any_changed(*units))
    remove_firewall(config)
    for name in (*WRITTEN_FILES, *backend_ca_files(config).values()):
        files.file(name=f"Remove {stack}/{name}", path=f"{stack}/{name}", present=False)
    for name in WRITTEN_DIRS:
        files.directory(name=f"Remove {stack}/{name}", path=f"{stack}/{name}", present=False)
    host_ca = files.directory(name=f"Remove {HOST_CA_DIR}", path=HOST_CA_DIR, present=False)
    server.shell(name="Update the host's CA store", commands=["update-ca-certificates --fresh"], _if=host_ca.did_change)
    built = sorted(tag for image in (host.get_fact(DockerImages) or []) for tag in image.get("RepoTags") or []
                   if tag.startswith(f"{config.mlflow_image}:"))
    if built:
        server.shell(name="Remove the MLflow images the deploy built", commands=[f"docker image rm {' '.join(built)}"])
    if config.uninstall_data:
        files.directory(name=f"Remove {stack} with the data, backups, secrets and CA", path=stack, present=False)
        files.directory(name=f"Remove {config.backups_dir}", path=config.backups_dir, present=False)
        server.user(name=f"Remove user {config.stack_user}", user=config.stack_user, present=False)
        server.group(name=f"Remove group {config.stack_user}", group=config.stack_user, present=False)
    else:
        host.noop(f"kept in {stack}: data/, the backups, .env, users.env, ca/ and tls/ (deploy.py brings them back)")
    if config.uninstall_docker:
        packages = sorted({*OFFICIAL_PACKAGES, *(name for names in DISTRO_PACKAGES.values() for name in names)})
        apt.packages(name="Remove Docker's packages", packages=packages, present=False)
        files.file(name="Remove /etc/docker/daemon.json", path="/etc/docker/daemon.json", present=False)
