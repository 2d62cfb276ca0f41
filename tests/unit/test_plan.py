"""Facts in, commands out: what each deploy step runs on a fresh, a converged and an odd host."""

from __future__ import annotations

import hashlib
import json
import os
import re
import runpy
from pathlib import Path

import pytest
from pyinfra.api import DeployError
from pyinfra.facts.apt import AptSourcesFile

from mlflow_stack import services
from mlflow_stack.config import certificates
from mlflow_stack.steps import (auth, docker_engine, schedules, secrets, service_account, stack, stack_files, tls,
                                upgrades)
from mlflow_stack.services import BUILT_IMAGE, LONG_RUNNING_SERVICES, ONESHOT_SERVICES, secret_keys
from mlflow_stack.steps.stack_files import HOST_CA_DIR, mlflow_image_ref, compose_file, render

from .helpers import HOST_NAME, NON_DEFAULT, REPO, host_data, make_config
from .plan import plan, sha1, sha256

KEYRING = "/etc/apt/keyrings/docker.asc"
SOURCES_FILE = "/etc/apt/sources.list.d/docker.sources"
LEGACY_FILES = ["/etc/apt/sources.list.d/docker.list", "/etc/apt/trusted.gpg.d/docker.gpg", "/etc/apt/keyrings/docker.gpg"]
OFFICIAL = ["docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin", "docker-compose-plugin"]
DISTRO = {"debian13": ["docker.io", "docker-compose"], "ubuntu2404": ["docker.io", "docker-compose-v2"]}
PREREQUISITES = ["ca-certificates", "curl"]


def release(name, major, minor, dist_id, codename=None):
    meta = {"ID": dist_id, "NAME": name}
    if codename:
        meta["VERSION_CODENAME"] = codename
    return {"name": name, "major": major, "minor": minor, "release_meta": meta}


# key -> (LinuxDistribution fact, (id, Docker repo codename) or None when unsupported)
RELEASES = {
    "debian12": (release("Debian", 12, None, "debian", "bookworm"), ("debian", "bookworm")),
    "debian13": (release("Debian", 13, None, "debian", "trixie"), ("debian", "trixie")),
    "ubuntu2204": (release("Ubuntu", 22, 4, "ubuntu", "jammy"), ("ubuntu", "jammy")),
    "ubuntu2404": (release("Ubuntu", 24, 4, "ubuntu", "noble"), ("ubuntu", "noble")),
    "centos9": (release("CentOS Stream", 9, None, "centos"), None),
    "debian11": (release("Debian", 11, None, "debian", "bullseye"), None),
    "ubuntu2004": (release("Ubuntu", 20, 4, "ubuntu", "focal"), None),
}
SUPPORTED = [key for key, (_, repo) in RELEASES.items() if repo]
FOUND = {"centos9": "CentOS Stream 9", "debian11": "Debian 11", "ubuntu2004": "Ubuntu 20.04"}
HEALTHY = {
    **{name: {"state": "running", "health": "healthy", "exit_code": 0} for name in LONG_RUNNING_SERVICES},
    **{name: {"state": "exited", "health": "", "exit_code": 0} for name in ONESHOT_SERVICES},
}
# The DatabaseCluster fact on a host without a database cluster yet.
NO_CLUSTER = {"pg_version": None, "revision": None, "running": False}
GIVEN = dict(postgres_password="Pg-Given.Secret_0123", minio_root_password="Minio~Given.Secret_4567")


def fresh_facts(distro: str = "debian12") -> dict:
    return {
        "LinuxDistribution": RELEASES[distro][0],
        "Os": "Linux",
        "Which": {"useradd": "/usr/sbin/useradd", "curl": "/usr/bin/curl", "systemctl": "/usr/bin/systemctl"},
        "IdOwners": {"user": None, "group": None},
        # no data/postgres/PG_VERSION yet
        "DatabasePasswordState": "none",
        "DatabaseCluster": NO_CLUSTER,
    }


def all_steps(config):
    """deploy.py without the HTTP smoke test."""
    docker_engine.install_docker(config)
    service_account.create_service_account(config)
    secrets_op = secrets.ensure_secrets(config)
    user_passwords = auth.ensure_user_passwords(config)
    changed = [secrets_op, *stack_files.upload_stack_files(config)]
    certificates_changed = tls.ensure_certificates(config)
    changed += stack.load_image_archives(config)
    stack.apply_database_password(config, secrets=secrets_op)
    upgrades.protect_data(config)
    stack.start_stack(config, changed=changed)
    tls.reload_certificates(config, certificates_changed)
    auth.sync_users(config, changed=[secrets_op, user_passwords])
    schedules.schedule_backups(config)
    schedules.schedule_gc(config)


def root_file(mode: int) -> dict:
    return {"user": "root", "group": "root", "mode": mode, "size": 1}


def expected_file_modes(config) -> dict[str, int]:
    """Every file the deploy writes, with the mode it must end up with (all root-owned)."""
    modes = {
        KEYRING: 644, SOURCES_FILE: 644, "/etc/docker/daemon.json": 644,
        f"{config.stack_dir}/build/Dockerfile": 644, f"{config.stack_dir}/build/create_bucket.py": 644,
        f"{config.stack_dir}/build/migrate_db.py": 644, f"{config.stack_dir}/build/requirements.lock": 644,
        f"{config.stack_dir}/build/auth_users.py": 644, f"{config.stack_dir}/auth.ini": 644,
        f"{config.stack_dir}/build/cached_basic_auth.py": 644,
        f"{config.stack_dir}/compose.yaml": 644, f"{config.stack_dir}/mlflow.env": 600,
        f"{config.stack_dir}/wait-healthy.sh": 755, f"{config.stack_dir}/apply-db-password.sh": 755,
        f"{config.stack_dir}/backup-before-migrate.sh": 755, f"{config.stack_dir}/backup.sh": 755,
        f"{config.stack_dir}/restore.sh": 755, f"{config.stack_dir}/gc.sh": 755,
        f"{config.stack_dir}/build/artifacts_archive.py": 644, f"{config.stack_dir}/build/backup_manifest.py": 644,
        f"{config.stack_dir}/build/import_classic.py": 644,
        f"{config.stack_dir}/tls-certs.sh": 755, f"{config.stack_dir}/job-result.sh": 755,
        f"{config.stack_dir}/build/exporter.lock": 644,
        "/etc/systemd/system/mlflow-backup.service": 644, "/etc/systemd/system/mlflow-backup.timer": 644,
        f"{config.stack_dir}/.env": 600,
    }
    if config.gc_keep_deleted_runs:
        modes.update({"/etc/systemd/system/mlflow-gc.service": 644, "/etc/systemd/system/mlflow-gc.timer": 644})
    if config.tls != "off":
        modes[f"{config.stack_dir}/nginx.conf"] = 644
    for path in config.extra_ca_certificates:
        name = path.rsplit("/", 1)[-1].rsplit(".", 1)[0] + ".crt"
        modes[f"{HOST_CA_DIR}/{name}"] = 644
        modes[f"{config.stack_dir}/build/ca-certificates/{name}"] = 644
    for name in config.image_archive_names:
        modes[f"{config.stack_dir}/images/{name}"] = 600
    if config.external_database or config.external_s3:
        modes.update({f"{config.stack_dir}/{script}": 755 for script in stack_files.BACKEND_CHECK_SCRIPTS})
    modes.update({f"{config.stack_dir}/{name}": 644 for name in stack_files.backend_ca_files(config).values()})
    return modes


def converged_facts(config, distro: str = "debian12") -> dict:
    """Facts as a successful run leaves the host: file contents are what a fresh run uploads."""
    dist_id, _ = RELEASES[distro][1]
    uploads = plan(all_steps, config, fresh_facts(distro)).uploads
    modes = expected_file_modes(config)
    assert set(uploads) <= set(modes), f"uploads without an expected mode: {set(uploads) - set(modes)}"
    user = config.stack_user
    directories = {path: {"user": "root", "group": "root", "mode": 755} for path in (
        "/etc/apt/keyrings", "/etc/apt/sources.list.d", "/etc/docker", "/etc/systemd/system", config.stack_dir, f"{config.stack_dir}/build",
        f"{config.stack_dir}/build/ca-certificates", f"{config.stack_dir}/data", f"{config.stack_dir}/images",
        HOST_CA_DIR)}
    for subdir, mode in (("postgres", 700), ("minio", 750), ("mlruns", 750)):
        directories[f"{config.stack_dir}/data/{subdir}"] = {"user": user, "group": user, "mode": mode}
    timers = {"mlflow-gc.timer": True} if config.gc_keep_deleted_runs else {}
    packages = PREREQUISITES + (OFFICIAL if config.docker_source == "official" else DISTRO[distro])
    sha1s = {path: sha1(data) for path, data in uploads.items()}
    files_present = {path: root_file(mode) for path, mode in modes.items()}
    tls_state = certificates.CertificateState()
    if config.tls == "self-signed":
        packages = [*packages, "openssl"]
        directories[config.tls_dir] = {"user": "root", "group": "root", "mode": 755}
        directories[config.ca_dir] = {"user": "root", "group": "root", "mode": 700}
        tls_state = certificates.CertificateState(True, True, True, True,
                                                  certificates.subject_alt_names(config.tls_names))
        # The CA certificate fetched on an earlier run (to the test's directory: conftest.py).
        ca_file = f"{config.ca_dir}/ca.crt"
        Path(config.ca_local_path).parent.mkdir(parents=True, exist_ok=True)
        Path(config.ca_local_path).write_bytes(b"the CA certificate")
        sha1s[ca_file], files_present[ca_file] = sha1(b"the CA certificate"), root_file(644)
    facts = fresh_facts(distro)
    facts.update(
        DebPackages={name: ["27.3.1-1"] for name in packages},
        File=files_present,
        Directory=directories,
        Sha1File=sha1s,
        TlsCertificates=tls_state,
        SystemdStatus={"docker.service": True, "mlflow-backup.timer": True, **timers},
        SystemdEnabled={"docker.service": True, "mlflow-backup.timer": True, **timers},
        Groups=[user],
        Users={user: {"home": config.stack_dir, "shell": "/usr/sbin/nologin", "group": user, "groups": [],
                      "comment": "MLflow stack containers", "uid": config.stack_uid, "gid": config.stack_gid}},
        IdOwners={"user": user, "group": user},
        # generated values are unknown here: any non-empty value's digest will do
        EnvFileDigests={
            config.secrets_file: {key: sha256(value or f"generated-{key}")
                                  for key, value in secrets.secret_values(config).items()},
            config.users_file: {user.name: sha256(user.password or f"generated-{user.name}")
                                for user in config.mlflow_auth_users}},
        DockerImage={mlflow_image_ref(config): [{"Id": "sha256:" + "0" * 64}]},
        ComposeServices={config.compose_project: running_services(config)},
        DatabasePasswordState="matches",
        DatabaseCluster=converged_cluster(config),
        AuthUsersState="in-sync",
        BackendsChecked=True,  # asked only with an external backend
    )
    if SOURCES_FILE in uploads:
        entry = AptSourcesFile.from_deb822_lines(uploads[SOURCES_FILE].decode().splitlines())
        facts["AptSources"] = entry.expand_to_repos()
    assert dist_id
    return facts


def running_services(config) -> dict:
    """The ComposeServices fact of a healthy stack, each service started from its configured image."""
    images = {service.name: mlflow_image_ref(config) if service.image == BUILT_IMAGE else getattr(config, service.image)
              for service in config.services}
    return {name: {**status, "image": images[name]} for name, status in HEALTHY.items() if name in images}


def converged_cluster(config) -> dict:
    """The DatabaseCluster fact of a running database at the configured MLflow's schema, made
    by the configured PostgreSQL major."""
    return {"pg_version": upgrades.image_major(config.postgres_image) or "17",
            "revision": config.mlflow_schema_revision, "running": True}


def installed(commands: list[str]) -> list[str]:
    """Package names of the `apt-get install` commands, in order."""
    names = []
    for command in commands:
        match = re.search(r"apt-get .* install (.+)$", command)
        if match:
            names += match[1].split()
    return names


def index(commands: list[str], pattern: str) -> int:
    hits = [i for i, command in enumerate(commands) if re.search(pattern, command)]
    assert hits, f"no command matches {pattern!r}"
    return hits[0]


# --- Docker engine ---------------------------------------------------------------------------


@pytest.mark.parametrize("distro", SUPPORTED)
def test_official_repo_on_a_fresh_host(distro):
    config = make_config(docker_source="official")
    dist_id, codename = RELEASES[distro][1]
    result = plan(docker_engine.install_docker, config, fresh_facts(distro))
    commands = result.commands
    assert installed(result.op("Install Docker Engine and Compose v2 | Install Docker packages").commands) == OFFICIAL
    sources = result.uploads[SOURCES_FILE].decode()
    assert f"URIs: {config.docker_apt_url}/{dist_id}" in sources.splitlines()
    assert f"Suites: {codename}" in sources.splitlines()
    assert "Components: stable" in sources.splitlines()
    assert f"Signed-By: {KEYRING}" in sources.splitlines()
    assert any(f"{config.docker_apt_url}/{dist_id}/gpg" in c for c in commands)
    assert any(re.search(rf"^mv \S+ {re.escape(KEYRING)}$", c) for c in commands)
    # apt learns about the repo before docker-ce is installed
    last_update = max(i for i, c in enumerate(commands) if c == "apt-get update")
    assert last_update > index(commands, f"upload {SOURCES_FILE}")
    assert last_update < index(commands, "install docker-ce")
    assert not any(f"rm -f {path}" in c for c in commands for path in LEGACY_FILES)  # none present


@pytest.mark.parametrize("distro", SUPPORTED)
def test_official_repo_removes_legacy_files_and_conflicting_packages(distro):
    config = make_config(docker_source="official")
    facts = fresh_facts(distro)
    facts["File"] = {path: root_file(644) for path in LEGACY_FILES}
    facts["DebPackages"] = {"docker.io": ["20.10"], "runc": ["1.1"], "vim": ["9"]}
    commands = plan(docker_engine.install_docker, config, facts).commands
    for path in LEGACY_FILES:
        assert any(re.fullmatch(rf"rm -f {re.escape(path)}", c) for c in commands), path
    removal = [c for c in commands if re.search(r"apt-get .* remove ", c)]
    assert len(removal) == 1 and "docker.io" in removal[0] and "runc" in removal[0] and "vim" not in removal[0]
    assert index(commands, " remove ") < index(commands, "install docker-ce")


@pytest.mark.parametrize("distro", sorted(DISTRO))
def test_distro_packages_where_they_ship_compose_v2(distro):
    config = make_config(docker_source="distro")
    result = plan(docker_engine.install_docker, config, fresh_facts(distro))
    assert installed(result.commands) == DISTRO[distro]
    assert SOURCES_FILE not in result.uploads
    assert not any("download.docker.com" in c or " remove " in c for c in result.commands)


@pytest.mark.parametrize("source, package, version", [
    ("distro", "docker.io", "24.0.7-0ubuntu4"), ("official", "docker-ce", "5:24.0.9-1~ubuntu.24.04~noble")])
def test_an_installed_engine_older_than_25_is_refused_before_any_change(source, package, version):
    facts = fresh_facts("ubuntu2404")
    facts["DebPackages"] = {package: [version], "vim": ["9"]}
    with pytest.raises(DeployError, match=r"Docker Engine .* older than 25") as caught:
        plan(docker_engine.install_docker, make_config(docker_source=source), facts)
    assert version in str(caught.value) and f"--only-upgrade {package}" in str(caught.value)


@pytest.mark.parametrize("version", ["26.1.5+dfsg1-9+b1", "5:27.3.1-1~debian.12~bookworm", "25.0.0-1"])
def test_an_installed_engine_of_25_or_later_is_kept(version):
    assert docker_engine.engine_major(version) >= 25
    facts = fresh_facts("debian13")
    facts["DebPackages"] = {"docker.io": [version], "docker-compose": ["2.26.1-4"]}
    commands = plan(docker_engine.install_docker, make_config(docker_source="distro"), facts).commands
    assert not [c for c in commands if "apt-get" in c and "docker.io" in c], commands  # kept as it is


@pytest.mark.parametrize("distro", ["debian12", "ubuntu2204"])
def test_distro_packages_without_compose_v2_are_refused(distro):
    with pytest.raises(DeployError, match="Compose v2") as caught:
        plan(docker_engine.install_docker, make_config(docker_source="distro"), fresh_facts(distro))
    assert "official" in str(caught.value) and HOST_NAME in str(caught.value)


@pytest.mark.parametrize("source", ["official", "distro"])
@pytest.mark.parametrize("distro", sorted(FOUND))
def test_unsupported_release_names_what_was_found(distro, source):
    with pytest.raises(DeployError) as caught:
        plan(docker_engine.install_docker, make_config(docker_source=source), fresh_facts(distro))
    message = str(caught.value)
    assert FOUND[distro] in message and HOST_NAME in message
    assert "Debian 12" in message and "Ubuntu 24.04" in message  # what is supported


def test_daemon_json_follows_the_config():
    config = make_config(docker_log_max_size="50m", docker_log_max_file=7, docker_live_restore=False)
    uploaded = plan(docker_engine.install_docker, config, fresh_facts()).uploads["/etc/docker/daemon.json"]
    assert json.loads(uploaded) == {"live-restore": False, "log-driver": "json-file",
                                    "log-opts": {"max-size": "50m", "max-file": "7"}}


def test_changed_daemon_json_restarts_a_running_docker():
    config = make_config()
    facts = converged_facts(config)
    facts["Sha1File"]["/etc/docker/daemon.json"] = sha1("{}\n")
    changing = plan(docker_engine.install_docker, config, facts).changing
    assert list(changing) == ["Install Docker Engine and Compose v2 | Write /etc/docker/daemon.json",
                              "Install Docker Engine and Compose v2 | Restart Docker to apply daemon.json"]
    assert changing["Install Docker Engine and Compose v2 | Restart Docker to apply daemon.json"] == [
        "systemctl restart docker.service"]


def test_stopped_docker_is_started_and_enabled():
    config = make_config()
    facts = converged_facts(config)
    facts["SystemdStatus"] = {"docker.service": False}
    facts["SystemdEnabled"] = {"docker.service": False}
    assert plan(docker_engine.install_docker, config, facts).commands == [
        "systemctl start docker.service", "systemctl enable docker.service"]


@pytest.mark.parametrize("source, distro", [("official", d) for d in SUPPORTED] + [("distro", d) for d in DISTRO])
def test_converged_docker_host_runs_nothing(source, distro):
    config = make_config(docker_source=source)
    assert plan(docker_engine.install_docker, config, converged_facts(config, distro)).changing == {}


def test_missing_package_refreshes_apt_lists_first():
    config = make_config()
    facts = converged_facts(config)
    del facts["DebPackages"]["docker-compose-plugin"]
    changing = plan(docker_engine.install_docker, config, facts).changing
    assert list(changing) == ["Install Docker Engine and Compose v2 | Install Docker packages"]
    commands = changing["Install Docker Engine and Compose v2 | Install Docker packages"]
    assert commands[0] == "apt-get update" and installed(commands) == ["docker-compose-plugin"]


# --- service account -------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [{}, NON_DEFAULT], ids=["default", "non_default"])
def test_service_account_on_a_fresh_host(extra):
    config = make_config(**extra)
    result = plan(service_account.create_service_account, config, fresh_facts())
    commands = result.commands
    user, uid, gid = config.stack_user, config.stack_uid, config.stack_gid
    assert f"groupadd -r {user} --gid {gid}" in commands
    useradd = [c for c in commands if c.startswith("useradd ")]
    assert len(useradd) == 1
    for part in (f"--uid {uid}", f"-g {user}", f"-d {config.stack_dir}", "-s /usr/sbin/nologin", "-r"):
        assert part in useradd[0], part
    assert useradd[0].endswith(f" {user}")
    assert index(commands, "^groupadd") < index(commands, "^useradd")
    for path in (config.stack_dir, f"{config.stack_dir}/build", f"{config.stack_dir}/data"):
        assert f"chown root:root {path}" in commands and f"chmod 755 {path}" in commands
    for subdir, mode in (("postgres", 700), ("minio", 750), ("mlruns", 750)):
        path = f"{config.stack_dir}/data/{subdir}"
        assert f"mkdir -p {path}" in commands
        assert f"chmod {mode} {path}" in commands and f"chown {user}:{user} {path}" in commands


def test_converged_service_account_runs_nothing():
    config = make_config(**NON_DEFAULT)
    assert plan(service_account.create_service_account, config, converged_facts(config)).changing == {}


def test_wrong_owner_of_a_data_dir_is_fixed():
    config = make_config()
    facts = converged_facts(config)
    path = f"{config.stack_dir}/data/postgres"
    facts["Directory"][path] = {"user": "root", "group": "root", "mode": 755}
    assert plan(service_account.create_service_account, config, facts).commands == [
        f"chmod 700 {path}", f"chown {config.stack_user}:{config.stack_user} {path}"]


@pytest.mark.parametrize("owners, text", [
    ({"user": "postgres", "group": None}, "stack_uid = 10001 already belongs to user 'postgres'"),
    ({"user": None, "group": "docker"}, "stack_gid = 10001 already belongs to group 'docker'"),
])
def test_id_owned_by_another_name_is_refused(owners, text):
    facts = fresh_facts()
    facts["IdOwners"] = owners
    with pytest.raises(DeployError) as caught:
        plan(service_account.create_service_account, make_config(), facts)
    assert text in str(caught.value) and HOST_NAME in str(caught.value)


def test_existing_stack_user_with_other_ids_is_refused():
    # server.user/group never change ids: the data would be chowned to 998 while the
    # containers run as 10001 and PostgreSQL could not open its data.
    config = make_config()
    facts = converged_facts(config)
    facts["Users"][config.stack_user].update(uid=998, gid=998)
    # 10001 is free: the account has 998
    facts["IdOwners"] = {"user": None, "group": None, "name_uid": 998, "name_gid": 998}
    with pytest.raises(DeployError, match="998"):
        plan(service_account.create_service_account, config, facts)


# --- secrets ---------------------------------------------------------------------------------


def stdin_of(command) -> str | None:
    return getattr(command, "connector_arguments", {}).get("_stdin")


def test_fresh_host_generates_both_passwords_on_the_host():
    config = make_config()
    result = plan(secrets.ensure_secrets, config, fresh_facts())
    (op,) = [op for op in result.ops if op.commands]
    generate = [c for c in op.commands if "/dev/urandom" in c]
    assert len(generate) == 1 and generate[0].startswith("umask 077;")
    # the file is rewritten without the generated keys, then the new values are appended
    # (the keys the default topology's services read: SECRET_FILE_KEYS also holds external-only ones)
    keys = secret_keys(config.services)
    assert f"grep -v -E '^({'|'.join(keys)})=' " in generate[0]
    assert generate[0].endswith(f"> {config.secrets_file}.new && mv {config.secrets_file}.new {config.secrets_file}")
    for key in keys:
        assert f'echo "{key}=$(' in generate[0]
    assert op.commands[-1] == f"chown root:root {config.secrets_file} && chmod 600 {config.secrets_file}"
    assert not any(stdin_of(c) for c in op.raw)


def test_given_passwords_travel_only_on_stdin():
    config = make_config(**GIVEN)
    (op,) = [op for op in plan(secrets.ensure_secrets, config, fresh_facts()).ops if op.commands]
    for secret in GIVEN.values():
        assert not any(secret in command for command in op.commands), "secret on a command line"
    stdin = [stdin_of(c) for c in op.raw if stdin_of(c)]
    assert len(stdin) == 1
    assert sorted(stdin[0].splitlines()) == sorted(
        [f"POSTGRES_PASSWORD={GIVEN['postgres_password']}", f"MINIO_ROOT_PASSWORD={GIVEN['minio_root_password']}"])
    assert op.commands[0].startswith("umask 077;")
    # only the secrets not given are generated
    (generate,) = [c for c in op.commands if "/dev/urandom" in c]
    assert "POSTGRES_PASSWORD" not in generate and "MINIO_ROOT_PASSWORD" not in generate


def test_changed_given_password_is_rewritten_alone():
    config = make_config(**GIVEN)
    facts = converged_facts(config)
    facts["EnvFileDigests"][config.secrets_file]["POSTGRES_PASSWORD"] = sha256("the-old-password")
    (op,) = [op for op in plan(secrets.ensure_secrets, config, facts).ops if op.commands]
    stdin = [stdin_of(c) for c in op.raw if stdin_of(c)]
    assert stdin == [f"POSTGRES_PASSWORD={GIVEN['postgres_password']}\n"]
    assert "grep -v -E '^(POSTGRES_PASSWORD)='" in op.commands[0]


def test_missing_generated_key_is_added_and_existing_one_kept():
    config = make_config()
    facts = converged_facts(config)
    del facts["EnvFileDigests"][config.secrets_file]["MINIO_ROOT_PASSWORD"]
    (op,) = [op for op in plan(secrets.ensure_secrets, config, facts).ops if op.commands]
    assert "MINIO_ROOT_PASSWORD=" in op.commands[0] and "POSTGRES_PASSWORD" not in op.commands[0]


def test_empty_generated_key_is_generated_again():
    config = make_config()
    facts = converged_facts(config)
    facts["EnvFileDigests"][config.secrets_file]["MINIO_ROOT_PASSWORD"] = sha256("")
    (op,) = [op for op in plan(secrets.ensure_secrets, config, facts).ops if op.commands]
    assert "MINIO_ROOT_PASSWORD=" in op.commands[0] and "POSTGRES_PASSWORD" not in op.commands[0]


@pytest.mark.parametrize("given", [{}, GIVEN], ids=["generated", "given"])
def test_converged_secrets_run_nothing(given):
    config = make_config(**given)
    assert plan(secrets.ensure_secrets, config, converged_facts(config)).changing == {}


# --- stack files -----------------------------------------------------------------------------


def test_fresh_upload_writes_the_rendered_files_and_validates_them(ca_cert):
    config = make_config(extra_ca_certificates=[ca_cert])
    result = plan(stack_files.upload_stack_files, config, fresh_facts())
    assert result.uploads[f"{config.stack_dir}/compose.yaml"].decode() == compose_file(config)
    assert result.uploads[f"{config.stack_dir}/mlflow.env"].decode() == render("mlflow.env.j2", config)
    assert result.uploads[f"{config.stack_dir}/wait-healthy.sh"] == (REPO / "files/host/wait-healthy.sh").read_bytes()
    with open(ca_cert, "rb") as handle:
        assert result.uploads[f"{HOST_CA_DIR}/corp-root.crt"] == handle.read()
    commands = result.commands
    assert "update-ca-certificates --fresh" in commands
    assert commands[-1] == f"docker compose --project-directory {config.stack_dir} config --quiet"
    for path, mode in expected_file_modes(config).items():
        if path in result.uploads:
            assert f"chmod {mode} {path}" in commands and f"chown root:root {path}" in commands, path


@pytest.mark.parametrize("extra", [{}, NON_DEFAULT], ids=["default", "non_default"])
def test_converged_stack_files_run_nothing(extra, ca_cert):
    config = make_config(**extra, extra_ca_certificates=[ca_cert])
    assert plan(stack_files.upload_stack_files, config, converged_facts(config)).changing == {}


def test_changed_compose_file_is_uploaded_and_validated():
    config = make_config()
    facts = converged_facts(config)
    facts["Sha1File"][f"{config.stack_dir}/compose.yaml"] = sha1("old compose")
    changing = plan(stack_files.upload_stack_files, config, facts).changing
    assert sorted(changing) == ["Upload the stack files | Upload compose.yaml",
                                "Upload the stack files | Validate compose.yaml on the host"]


def test_removed_ca_certificate_leaves_the_build_context():
    config = make_config()
    facts = converged_facts(config)
    ca_dir = f"{config.stack_dir}/build/ca-certificates"
    stale = f"{ca_dir}/old-proxy.crt"
    facts["FindFiles"] = {ca_dir: [stale]}
    facts["File"][stale] = root_file(644)
    commands = plan(stack_files.upload_stack_files, config, facts).commands
    assert any(stale in c and c.startswith("rm") for c in commands), commands


# --- image archives and the stack --------------------------------------------------------------


def test_image_archives_are_uploaded_by_content_and_loaded(tmp_path):
    archive = tmp_path / "postgres-17.tar"
    archive.write_bytes(b"fake docker save output")
    config = make_config(docker_image_archives=[str(archive)])
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()[:12]
    remote = f"{config.stack_dir}/images/postgres-17-{digest}.tar"
    result = plan(stack.load_image_archives, config, fresh_facts())
    assert result.uploads[remote] == archive.read_bytes()
    assert f"docker load --input {remote} && touch {remote}.loaded" in result.commands
    assert f"chmod 600 {remote}" in result.commands
    assert [op for op in result.changing if op.startswith("Load image archives | Load image archive postgres-17.tar")]


def test_a_loaded_archive_is_neither_hashed_nor_asked_for_its_checksum_again(tmp_path, monkeypatch):
    archive = tmp_path / "postgres-17.tar"
    archive.write_bytes(b"fake docker save output")
    config = make_config(docker_image_archives=[str(archive)])
    remote = f"{config.stack_dir}/images/{config.image_archive_names[0]}"
    facts = converged_facts(config)
    facts["File"] = {**facts["File"], remote: {**root_file(600), "size": archive.stat().st_size},
                     f"{remote}.loaded": root_file(600)}
    def no_hash(*args, **kwargs):
        raise AssertionError("hashed an archive on a rerun")
    monkeypatch.setattr("pyinfra.api.util.get_file_sha1", no_hash)
    assert plan(stack.load_image_archives, config, facts).ops == []
    # Loaded but the marker is gone (a load that failed half-way): loaded again, not uploaded.
    del facts["File"][f"{remote}.loaded"]
    monkeypatch.undo()
    again = plan(stack.load_image_archives, config, facts)
    assert list(again.changing) == ["Load image archives | Load image archive postgres-17.tar"], again.changing
    # Another content is another name: uploaded and loaded; the old copy and marker go.
    archive.write_bytes(b"a newer docker save output")
    newer = make_config(docker_image_archives=[str(archive)])
    assert newer.image_archive_names != config.image_archive_names
    facts["File"][f"{remote}.loaded"] = root_file(600)
    facts["FindFiles"] = {**facts.get("FindFiles", {}), f"{config.stack_dir}/images": [remote, f"{remote}.loaded"]}
    replaced = plan(stack.load_image_archives, newer, facts)
    assert f"{config.stack_dir}/images/{newer.image_archive_names[0]}" in replaced.uploads
    assert {f"rm -f {remote}", f"rm -f {remote}.loaded"} <= set(replaced.commands)


def docker_save_archive(path: Path, images: dict[str, list[str]], oci: bool = False) -> Path:
    """A small tarball laid out like `docker save` output: a layer, then manifest.json."""
    import io
    import tarfile

    manifest = [{"Config": (f"blobs/sha256/{image}" if oci else f"{image}.json"), "RepoTags": tags,
                 "Layers": ["layer.tar"]} for image, tags in images.items()]
    with tarfile.open(path, "w") as archive:
        for member, data in (("layer.tar", b"x" * 10_000), ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_an_archive_whose_images_the_host_has_is_neither_uploaded_nor_loaded(tmp_path):
    archive = docker_save_archive(tmp_path / "standins.tar", {"a" * 64: ["standin/postgres:17"],
                                                             "b" * 64: ["standin/minio:x", "minio:latest"]})
    config = make_config(docker_image_archives=[str(archive)])
    marker = f"{config.stack_dir}/images/{config.image_archive_names[0]}.loaded"
    host_images = [{"Id": "sha256:" + "a" * 64, "RepoTags": ["standin/postgres:17"]},
                   {"Id": "sha256:" + "b" * 64, "RepoTags": ["minio:latest", "standin/minio:x"]}]
    facts = {**fresh_facts(), "DockerImages": host_images}
    result = plan(stack.load_image_archives, config, facts)
    assert not result.uploads and not [c for c in result.commands if "docker load" in c], result.commands
    assert list(result.changing) == [f"Load image archives | Note that the host has the images of standins.tar "
                                     "already"], result.changing
    assert f"touch {marker}" in result.text()
    # The next run sees the marker and asks nothing more (not the host's images either).
    facts["File"] = {marker: root_file(600)}
    again = plan(stack.load_image_archives, config, facts)
    assert again.ops == [] and ("DockerImages", None) not in again.asked
    # One tag on the host names another image, an image is missing, or Docker is not there yet
    # (the fact's default): uploaded and loaded.
    for other in ([host_images[0], {"Id": "sha256:" + "c" * 64, "RepoTags": ["standin/minio:x"]}], host_images[:1],
                  None):
        moved = plan(stack.load_image_archives, config, {**fresh_facts(), **({"DockerImages": other} if other else {})})
        assert f"{config.stack_dir}/images/{config.image_archive_names[0]}" in moved.uploads
        assert any("docker load" in c for c in moved.commands)


def test_the_images_of_an_archive_are_read_from_its_manifest(tmp_path):
    import gzip

    from mlflow_stack.config.local_files import archive_images
    images = {"d" * 64: ["mlflow-stack/mlflow:3.17.2-abc"]}
    for oci in (False, True):
        path = docker_save_archive(tmp_path / f"oci-{oci}.tar", images, oci=oci)
        assert archive_images(str(path)) == {"sha256:" + "d" * 64: ("mlflow-stack/mlflow:3.17.2-abc",)}
    # Compressed (`docker load` takes it; reading it would mean the whole file) or not an archive: unknown.
    (tmp_path / "c.tar.gz").write_bytes(gzip.compress((tmp_path / "oci-False.tar").read_bytes()))
    (tmp_path / "plain.tar").write_bytes(b"fake docker save output")
    assert archive_images(str(tmp_path / "c.tar.gz")) is None and archive_images(str(tmp_path / "plain.tar")) is None


def test_the_archive_digest_is_computed_once_per_version_of_the_file(tmp_path, monkeypatch):
    from mlflow_stack.config import local_files
    archive = tmp_path / "images.tar"
    archive.write_bytes(b"x" * 3_000_000)
    first = local_files.content_name(str(archive))
    assert first == f"images-{hashlib.sha256(archive.read_bytes()).hexdigest()[:12]}.tar"
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    assert local_files.content_name(str(archive)) == first and str(archive) not in opened  # from the cache
    archive.write_bytes(b"y" * 3_000_000)  # same size, new mtime: hashed again
    os.utime(archive, ns=(archive.stat().st_atime_ns, archive.stat().st_mtime_ns + 1_000_000))
    assert local_files.content_name(str(archive)) != first


def test_no_archives_no_operations():
    assert plan(stack.load_image_archives, make_config(), fresh_facts()).ops == []


def compose_up(config) -> str:
    # bounded: compose waits for a dependency's health without a limit of its own
    return (f"timeout {config.mlflow_health_timeout} docker compose --project-directory {config.stack_dir} "
            f"--project-name {config.compose_project} up -d")


def wait(config) -> str:
    return (f"sh {config.stack_dir}/wait-healthy.sh --project {config.compose_project} "
            f"--timeout {config.mlflow_health_timeout} --interval {config.mlflow_health_start_interval} "
            "--oneshot create-bucket --oneshot migrate-db "
            + " ".join(f"--service {name}" for name in services.long_running_services(config.tls)))


def test_fresh_stack_builds_starts_and_waits():
    config = make_config(**NON_DEFAULT)
    commands = plan(stack.start_stack, config, fresh_facts()).commands
    assert len(commands) == 3
    assert commands[0].startswith("docker build") and f"-t {mlflow_image_ref(config)}" in commands[0]
    assert commands[0].endswith(f" {config.stack_dir}/build")
    assert commands[1].startswith(compose_up(config))
    assert commands[2] == wait(config)


def test_unhealthy_service_brings_the_stack_up_without_a_build():
    config = make_config()
    facts = converged_facts(config)
    facts["ComposeServices"][config.compose_project] = {
        **HEALTHY, "mlflow": {"state": "exited", "health": "", "exit_code": 1}}
    commands = plan(stack.start_stack, config, facts).commands
    assert len(commands) == 2 and commands[0].startswith(compose_up(config)) and commands[1] == wait(config)


@pytest.mark.parametrize("oneshot", ONESHOT_SERVICES)
def test_failed_oneshot_brings_the_stack_up(oneshot):
    config = make_config()
    facts = converged_facts(config)
    facts["ComposeServices"][config.compose_project] = {
        **HEALTHY, oneshot: {"state": "exited", "health": "", "exit_code": 1}}
    commands = plan(stack.start_stack, config, facts).commands
    assert len(commands) == 2 and commands[0].startswith(compose_up(config)) and commands[1] == wait(config)


@pytest.mark.parametrize("oneshot", ONESHOT_SERVICES)
def test_missing_oneshot_brings_the_stack_up(oneshot):
    # e.g. a stack deployed before migrate-db existed
    config = make_config()
    facts = converged_facts(config)
    services = dict(HEALTHY)
    del services[oneshot]
    facts["ComposeServices"][config.compose_project] = services
    assert len(plan(stack.start_stack, config, facts).commands) == 2


def test_stack_is_healthy_needs_every_oneshot_exited_0():
    assert ONESHOT_SERVICES == ("create-bucket", "migrate-db")
    assert services.stack_is_healthy(HEALTHY, services.active_services("self-signed"))
    for name in ONESHOT_SERVICES:
        for status in ({"state": "running", "health": "", "exit_code": 0},
                       {"state": "exited", "health": "", "exit_code": 2}):
            assert not services.stack_is_healthy({**HEALTHY, name: status}, services.active_services("self-signed")), (name, status)


def test_new_image_tag_builds_and_restarts():
    config = make_config()
    facts = converged_facts(config)
    facts["DockerImage"] = {}
    commands = plan(stack.start_stack, config, facts).commands
    assert [c.split(" -")[0] for c in commands[:1]] == ["docker build"]
    assert commands[1].startswith(compose_up(config)) and commands[2] == wait(config)


def files_then_stack(config):
    stack.start_stack(config, changed=stack_files.upload_stack_files(config))


def test_changed_upload_brings_the_stack_up():
    config = make_config()
    facts = converged_facts(config)
    facts["Sha1File"][f"{config.stack_dir}/mlflow.env"] = sha1("old env")
    changing = plan(files_then_stack, config, facts).changing
    stack_ops = {name: cmds for name, cmds in changing.items() if name.startswith("Build the MLflow image")}
    assert [cmds for cmds in stack_ops.values()] == [[compose_up(config) + " --remove-orphans"], [wait(config)]]


def test_converged_stack_runs_nothing():
    config = make_config()
    assert plan(files_then_stack, config, converged_facts(config)).changing == {}


# --- the whole deploy --------------------------------------------------------------------------


def deploy_file(config):
    runpy.run_path(str(REPO / "deploy.py"), run_name="deploy")


@pytest.mark.parametrize("distro", SUPPORTED)
def test_deploy_py_on_a_converged_host_runs_nothing(distro):
    config = make_config()
    result = plan(deploy_file, config, converged_facts(config, distro), data=host_data())
    assert len(result.ops) > 20
    assert result.changing == {}


def test_deploy_py_on_a_fresh_host_runs_every_step_in_order():
    config = make_config()
    result = plan(deploy_file, config, fresh_facts(), data=host_data())
    steps = []
    for op in result.ops:
        step = op.name.split(" | ")[0]
        if op.commands and step not in steps:
            steps.append(step)
    assert steps == ["Install Docker Engine and Compose v2", "Create the service account and stack directories",
                     "Ensure the stack's secrets exist on the host", "Upload the stack files",
                     "Ensure the TLS certificates", "Build the MLflow image and start the stack", "Keep MLflow's users", "Schedule backups",
                     "Verify the stack from the control machine"]
    assert result.commands[-1] == "call _run_smoke_test"
