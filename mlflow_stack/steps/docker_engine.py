"""Docker Engine + Compose v2 from Docker's apt repo or the distribution, and daemon.json."""

from __future__ import annotations

import json
from io import StringIO

from pyinfra import host
from pyinfra.api import DeployError, deploy
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import apt, files, systemd

from mlflow_stack.config import StackConfig, config_from_host

# (distribution id, major, minor) -> codename Docker's repo uses.
SUPPORTED_RELEASES = {
    ("debian", 12, None): "bookworm",
    ("debian", 13, None): "trixie",
    ("ubuntu", 22, 4): "jammy",
    ("ubuntu", 24, 4): "noble",
}
OFFICIAL_PACKAGES = ["docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin", "docker-compose-plugin"]
# Distribution packages that ship Compose v2, per release; releases missing here have none.
DISTRO_PACKAGES = {
    ("debian", 13): ["docker.io", "docker-compose"],
    ("ubuntu", 24): ["docker.io", "docker-compose-v2"],
}
# Packages that clash with docker-ce (Docker's install guide removes them first).
CONFLICTING_PACKAGES = ["docker.io", "docker-doc", "docker-compose", "docker-compose-v2", "podman-docker", "containerd", "runc"]
# Left behind by older install guides; a second repo entry for the same URL breaks apt.
LEGACY_APT_FILES = [
    "/etc/apt/sources.list.d/docker.list",
    "/etc/apt/trusted.gpg.d/docker.gpg",
    "/etc/apt/keyrings/docker.gpg",
]
KEYRING = "/etc/apt/keyrings/docker.asc"
# The health checks' start_interval (services/model.py) needs Docker Engine 25; Compose refuses it
# on an older one. A fresh install from either source is newer; an engine already installed is kept.
MIN_ENGINE_MAJOR = 25
ENGINE_PACKAGES = ("docker-ce", "docker.io")


def detect_release() -> tuple[str, int, str]:
    """(id, major, codename) of a supported release, or a DeployError naming what was found."""
    dist = host.get_fact(LinuxDistribution)
    dist_id = (dist.get("release_meta") or {}).get("ID", str(dist.get("name"))).lower()
    major, minor = dist.get("major"), dist.get("minor")
    key = (dist_id, major, minor if dist_id == "ubuntu" else None)
    if key not in SUPPORTED_RELEASES:
        found = f"{dist.get('name')} {major}" + (f".{minor:02d}" if minor is not None else "")
        raise DeployError(
            f"unsupported operating system on {host.name}: found {found}; "
            "supported: Debian 12, Debian 13, Ubuntu 22.04, Ubuntu 24.04"
        )
    return dist_id, major, SUPPORTED_RELEASES[key]


def daemon_json(config: StackConfig) -> str:
    settings = {
        "live-restore": config.docker_live_restore,
        "log-driver": "json-file",
        "log-opts": {"max-size": config.docker_log_max_size, "max-file": str(config.docker_log_max_file)},
    }
    return json.dumps(settings, indent=2, sort_keys=True) + "\n"


@deploy("Install Docker Engine and Compose v2")
def install_docker(config: StackConfig | None = None):
    config = config or config_from_host()
    dist_id, major, codename = detect_release()
    if config.docker_source == "official":
        packages = _official_repo(config, dist_id, codename)
    else:
        packages = DISTRO_PACKAGES.get((dist_id, major))
        if packages is None:
            raise DeployError(
                f"docker_source = 'distro': {dist_id} {major} on {host.name} has no Compose v2 package; "
                "use docker_source = 'official' (or upgrade to Debian 13 / Ubuntu 24.04)"
            )
    refuse_an_old_engine(packages)
    apt.packages(name="Install Docker packages", packages=packages, update=_missing(packages))

    daemon = files.put(
        name="Write /etc/docker/daemon.json",
        src=StringIO(daemon_json(config)),
        dest="/etc/docker/daemon.json",
        user="root",
        group="root",
        mode="644",
    )
    systemd.service(
        name="Enable and start Docker",
        service="docker.service",
        running=True,
        enabled=True,
    )
    systemd.service(
        name="Restart Docker to apply daemon.json",
        service="docker.service",
        restarted=True,
        _if=daemon.did_change,
    )


def _official_repo(config: StackConfig, dist_id: str, codename: str) -> list[str]:
    apt.packages(name="Remove packages that conflict with docker-ce", packages=CONFLICTING_PACKAGES, present=False)
    for path in LEGACY_APT_FILES:
        files.file(name=f"Remove legacy Docker apt file {path}", path=path, present=False)
    prerequisites = ["ca-certificates", "curl"]
    apt.packages(name="Install apt prerequisites", packages=prerequisites, update=_missing(prerequisites))
    files.directory(name="Ensure /etc/apt/keyrings exists", path="/etc/apt/keyrings", mode="755")
    files.download(
        name="Download Docker's apt signing key",
        src=f"{config.docker_apt_url}/{dist_id}/gpg",
        dest=KEYRING,
        mode="644",
    )
    repo = apt.sources_file(
        name="Add Docker's apt repository",
        filename="docker",
        uris=[f"{config.docker_apt_url}/{dist_id}"],
        suites=[codename],
        components=["stable"],
        signed_by=KEYRING,
    )
    apt.update(name="Update apt lists for Docker's repository", _if=repo.did_change)
    return OFFICIAL_PACKAGES


def engine_major(version: str) -> int | None:
    """26 of "26.1.5+dfsg1-9", "5:27.3.1-1~debian.12~bookworm" or "24.0.7-0ubuntu4"."""
    digits = version.split(":")[-1].split(".")[0]
    return int(digits) if digits.isdigit() else None


def refuse_an_old_engine(packages: list[str]) -> None:
    """A DeployError before any change when the engine this deploy keeps is older than 25."""
    installed = host.get_fact(DebPackages)
    for name in (name for name in packages if name in ENGINE_PACKAGES):
        for version in installed.get(name, []):
            major = engine_major(version)
            if major is not None and major < MIN_ENGINE_MAJOR:
                raise DeployError(
                    f"on {host.name}: Docker Engine {version} ({name}) is older than {MIN_ENGINE_MAJOR}, which the "
                    f"stack's health checks need (Compose's healthcheck.start_interval); upgrade it first "
                    f"(apt-get install --only-upgrade {name}) and run the deploy again")


def _missing(packages: list[str]) -> bool:
    """Refresh apt lists only when something is to be installed: a time-based refresh would
    make an unchanged rerun report a change."""
    installed = host.get_fact(DebPackages)
    return any(name not in installed for name in packages)
