"""Every fact deploy.py reads on a host that needs nothing, listed up front so they are asked in
one round trip (facts/prefetch.py). A fact missing here is still asked, one command more; a
unit test (tests/unit/test_planned_facts.py) keeps this list equal to what the steps ask.
"""

from __future__ import annotations

from pathlib import Path

from pyinfra.facts.apt import AptSources
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.docker import DockerImage
from pyinfra.facts.files import Directory, File, FindFiles, Sha1File
from pyinfra.facts.server import Groups, LinuxDistribution, Os, Users
from pyinfra.facts.systemd import SystemdEnabled, SystemdStatus

from mlflow_stack.facts import host as facts
from mlflow_stack.steps.auth import users_argument
from mlflow_stack.config.certificates import RENEW_DAYS
from mlflow_stack.config import StackConfig
from mlflow_stack.steps.docker_engine import KEYRING, LEGACY_APT_FILES
from mlflow_stack.facts.prefetch import PlannedFact
from mlflow_stack.steps.firewall import DATA_ROLE, UNIT_PATH, DataFirewallRules, script_arguments, script_path
from mlflow_stack.steps.schedules import BACKUP_UNIT, GC_UNIT, UNIT_DIR
from mlflow_stack.services import data_dirs
from mlflow_stack.steps.stack_files import (BACKEND_CHECK_SCRIPTS, HELPER_SCRIPTS, HOST_CA_DIR, backend_ca_files,
                                      build_context, ca_certificates, mlflow_image_ref)


def _uploaded(path: str) -> list[PlannedFact]:
    """What files.put / files.template ask of their destination."""
    return [(File, {"path": path}), (Sha1File, {"path": path}), (Directory, {"path": str(Path(path).parent)})]


def _unit(service: str) -> list[PlannedFact]:
    """What systemd.service asks."""
    arguments = {"user_mode": False, "machine": None, "user_name": None, "services": [service]}
    return [(SystemdStatus, arguments), (SystemdEnabled, dict(arguments))]


def _listed(path: str) -> PlannedFact:
    """What remove_stale_files asks."""
    return (FindFiles, {"path": path, "quote_path": True})


def planned_facts(config: StackConfig) -> list[PlannedFact]:
    stack, project = config.stack_dir, config.compose_project
    database = {"stack_dir": stack, "project": project, "user": config.postgres_user, "database": config.postgres_db}
    planned: list[PlannedFact] = [(LinuxDistribution, {}), (DebPackages, {}), (Os, {}), (Groups, {}), (Users, {}),
                                  (facts.ComposeServices, {"project": project})]
    # install_docker
    planned += _uploaded("/etc/docker/daemon.json") + _unit("docker.service")
    if config.docker_source == "official":
        planned += [(File, {"path": path}) for path in (*LEGACY_APT_FILES, KEYRING)]
        planned += [(Directory, {"path": "/etc/apt/keyrings"}), (AptSources, {})]
    # restrict_published_ports
    ports, sources = script_arguments(config)
    planned.append((DataFirewallRules, {"script": script_path(config), "ports": ports, "sources": sources}))
    if config.role == DATA_ROLE:
        planned += _uploaded(script_path(config)) + _uploaded(UNIT_PATH) + _unit(Path(UNIT_PATH).name)
    # create_service_account
    planned.append((facts.IdOwners, {"uid": config.stack_uid, "gid": config.stack_gid, "account": config.stack_user}))
    planned += [(Directory, {"path": path}) for path in (stack, config.build_dir, config.data_dir)]
    planned += [(Directory, {"path": f"{config.data_dir}/{name}"}) for name in data_dirs(config.services)]
    # ensure_secrets, ensure_user_passwords
    planned += [(facts.EnvFileDigests, {"path": config.secrets_file}),
                (facts.EnvFileDigests, {"path": config.users_file})]
    # upload_stack_files
    planned.append(_listed(HOST_CA_DIR))
    planned += [step for name in ca_certificates(config) for step in _uploaded(f"{HOST_CA_DIR}/{name}")]
    if config.builds_mlflow_image:
        planned += [(Directory, {"path": f"{config.build_dir}/ca-certificates"}),
                    _listed(f"{config.build_dir}/ca-certificates")]
        planned += [step for relative in build_context(config) for step in _uploaded(f"{config.build_dir}/{relative}")]
        planned.append((DockerImage, {"object_id": mlflow_image_ref(config)}))
    written = ["compose.yaml", "mlflow.env", "auth.ini", "balancer.conf", "nginx.conf", *HELPER_SCRIPTS,
               *BACKEND_CHECK_SCRIPTS, *backend_ca_files(config).values()]
    planned += [step for name in written for step in _uploaded(f"{stack}/{name}")]
    planned.append((File, {"path": config.auth_config_file}))
    # ensure_certificates
    if config.tls != "off":
        planned += [(Directory, {"path": config.tls_dir}), (Directory, {"path": config.ca_dir}),
                    (facts.TlsCertificates, {"ca_dir": config.ca_dir, "tls_dir": config.tls_dir,
                                             "seconds": RENEW_DAYS * 86400})]
        planned += _uploaded(f"{config.ca_dir}/ca.crt") + _uploaded(f"{config.tls_dir}/ca.crt")
    # load_image_archives
    planned.append(_listed(f"{stack}/images"))
    planned += [(File, {"path": f"{stack}/images/{name}{marker}"}) for name in config.image_archive_names
                for marker in ("", ".loaded")]
    # apply_database_password, protect_data, start_stack
    if "postgres" in config.service_names:
        planned += [(facts.DatabasePasswordState, database), (facts.DatabaseCluster, dict(database))]
    if config.external_database or config.external_s3:
        planned.append((facts.BackendsChecked, {"stack_dir": stack}))
    # sync_users
    if config.mlflow_auth and config.keeps_cluster_state:
        planned.append((facts.AuthUsersState, {"stack_dir": stack, "project": project,
                                                "admin": config.mlflow_auth_admin_user,
                                                "users": users_argument(config)}))
    # schedule_backups, schedule_gc
    for unit in (BACKUP_UNIT, GC_UNIT):
        planned += _uploaded(f"{UNIT_DIR}/{unit}.service") + _uploaded(f"{UNIT_DIR}/{unit}.timer")
        planned += _unit(f"{unit}.timer")
    return planned
