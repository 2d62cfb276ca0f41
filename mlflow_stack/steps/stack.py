"""Load image archives, build the MLflow image, and bring the stack up only when needed."""

from __future__ import annotations

import os
from pathlib import Path

from pyinfra import host
from pyinfra.api import StringCommand, deploy
from pyinfra.facts.docker import DockerImages
from pyinfra.facts.files import File
from pyinfra.operations import docker, files, server
from pyinfra.operations.util import any_changed

from mlflow_stack.config.cluster import STANDALONE
from mlflow_stack.config import StackConfig, config_from_host
from mlflow_stack.config.local_files import archive_images
from mlflow_stack.facts.host import BackendsChecked, ComposeServices, DatabasePasswordState
from mlflow_stack.services import stack_is_healthy
from mlflow_stack.steps.stack_files import mlflow_image_ref, remove_stale_files, script_command


@deploy("Load image archives")
def load_image_archives(config: StackConfig | None = None):
    """For air-gapped hosts: upload `docker save` tarballs and load each one not loaded yet.
    The host's copy is named by its content (config.image_archive_names) and gets a marker once
    loaded: a rerun asks whether the marker exists, and hashes a GB-sized file on neither side.
    A host that has an archive's images already (the same ids and tags: pulled, built, loaded
    by hand, or baked into the server's disk image) gets only the marker, not GBs it would load
    for nothing. Returns the loads (a new image: the stack must come up again)."""
    config = config or config_from_host()
    loads, wanted = [], {}
    for archive, name in zip(config.docker_image_archives, config.image_archive_names):
        remote, marker = f"{config.stack_dir}/images/{name}", f"{config.stack_dir}/images/{name}.loaded"
        wanted.update({name: archive, f"{name}.loaded": archive})
        if host.get_fact(File, path=marker):
            continue  # loaded by an earlier run, or its images were found on the host
        copy = host.get_fact(File, path=remote)
        uploaded = bool(copy) and copy.get("size") == os.path.getsize(archive)
        archived = None if uploaded else archive_images(archive)
        if archived and images_on_host(archived, host.get_fact(DockerImages)):
            files.file(name=f"Note that the host has the images of {Path(archive).name} already", path=marker,
                       user="root", group="root", mode="600")
            continue
        if not uploaded:
            files.put(name=f"Upload image archive {Path(archive).name}", src=archive, dest=remote,
                      user="root", group="root", mode="600")
        loads.append(server.shell(name=f"Load image archive {Path(archive).name}",
                                  commands=[f"docker load --input {remote} && touch {marker}"]))
    # An archive dropped from the config is only disk space on the host now.
    remove_stale_files(f"{config.stack_dir}/images", wanted)
    return loads


def images_on_host(archived: dict[str, tuple[str, ...]], on_host: list[dict] | None) -> bool:
    """Does the host have every image of the archive, by id, with each of its tags? (A tag that
    names another image there would be moved by the load.)"""
    tags = {image.get("Id"): set(image.get("RepoTags") or ()) for image in on_host or ()}
    return all(image in tags and set(wanted) <= tags[image] for image, wanted in archived.items())


@deploy("Build the MLflow image and start the stack")
def start_stack(config: StackConfig | None = None, changed=()):
    """Bring the stack up when an input changed (`changed` operations, a new image) or a
    service is not healthy; then wait for health. Returns a callable telling whether the
    stack was (re)started, for steps that follow a start.

    In a cluster the data host is up before the balancer, the balancer (which the tracking
    servers' S3 calls pass) before the first tracking server, and that one, which makes or
    migrates the schema once for the cluster, before the others. pyinfra orders operations
    across hosts by each host's own sequence of them: so every host plans the start of every
    role, in that order, and runs only its own (the others are skipped)."""
    config = config or config_from_host()
    healthy = stack_is_healthy(host.get_fact(ComposeServices, project=config.compose_project), config.services)
    external = config.external_database or config.external_s3
    # The external backends were reached with exactly the current secrets and files (check-backends.sh).
    checked = host.get_fact(BackendsChecked, stack_dir=config.stack_dir) if external else True

    builds = [docker.build(
        name="Build the MLflow image (only when its inputs changed)",
        path=config.build_dir,
        tags=[mlflow_image_ref(config)],
    )] if config.builds_mlflow_image else []
    inputs_changed = any_changed(*builds, *(op for op in changed if op is not None))  # None: nothing to do

    def needs_up() -> bool:
        return not healthy or not checked or inputs_changed()

    role, first = config.role, config.keeps_cluster_state
    _bring_up(config, needs_up, healthy, external, role == "data", "the data host's turn")
    _bring_up(config, needs_up, healthy, external, role == "balancer", "the balancer's turn")
    _bring_up(config, needs_up, healthy, external, role == "tracking" and first, "the first tracking server's turn")
    _bring_up(config, needs_up, healthy, external, role == STANDALONE or (role == "tracking" and not first),
              "the other servers' turn")
    return needs_up


def _bring_up(config: StackConfig, needs_up, healthy: bool, external: bool, mine: bool, turn: str) -> None:
    """The start in one role's turn: on the hosts of that role when needed, skipped elsewhere."""
    if not mine:
        needs_up = lambda: False  # noqa: E731 - planned only to order the turns
    label = "" if mine else f" [{turn}]"
    if external:
        # Before anything restarts: a wrong password or an unreachable backend stops the deploy
        # here, with the running stack untouched.
        server.shell(name=f"Check the external backends from the host{label}", commands=[check_command(config)],
                     _if=needs_up)

    docker.compose(
        name=("Start the stack" if healthy else "Start the stack (a service is not healthy)") + label,
        project_directory=config.stack_dir,
        project_name=config.compose_project,
        _if=needs_up,
        # compose itself gives up on an unhealthy dependency with a one-line reason; the
        # next step then fails the deploy with the failing services' logs.
        _ignore_errors=True,
        # compose waits for a dependency's health without a limit of its own.
        compose_command=f"timeout {config.mlflow_health_timeout} docker compose",
    )
    server.shell(
        name=f"Wait until every service is healthy{label}",
        commands=[wait_command(config, *config.started_long_running, oneshots=config.started_oneshots)],
        _if=needs_up,
    )


def check_command(config: StackConfig) -> StringCommand:
    """Reach each external backend from a one-off MLflow container, with the stack's own
    environment (secrets from .env through compose, never in argv)."""
    return script_command(f"{config.stack_dir}/check-backends.sh", shell="sh", stack_dir=config.stack_dir,
                          project=config.compose_project, database="yes" if config.external_database else None,
                          s3=config.minio_bucket if config.external_s3 else None)


def wait_command(config: StackConfig, *services: str, oneshots: tuple[str, ...] = ()) -> str:
    return str(script_command(f"{config.stack_dir}/wait-healthy.sh", shell="sh", project=config.compose_project,
                              timeout=config.mlflow_health_timeout, interval=config.mlflow_health_start_interval,
                              oneshot=tuple(oneshots), service=tuple(services)))


@deploy("Apply the database password")
def apply_database_password(config: StackConfig | None = None, secrets=None):
    """Give the database role the password in the secrets file before MLflow restarts with
    it: when the secrets changed on this run (`secrets`: their operation), or the running
    database does not accept the file's password (lost and regenerated, restored, edited),
    or the database is not running so it cannot be asked. Returns the operation: when it ran,
    MLflow must be restarted with the password."""
    config = config or config_from_host()
    if "postgres" not in config.service_names:
        host.noop("the database's password is its administrator's (postgres_password must match it)")
        return None
    state = host.get_fact(DatabasePasswordState, stack_dir=config.stack_dir, project=config.compose_project,
                          user=config.postgres_user, database=config.postgres_db)
    secrets_changed = secrets.did_change if secrets is not None else (lambda: False)
    return server.shell(
        name="Give the database role the password in the secrets file",
        commands=[script_command(f"{config.stack_dir}/apply-db-password.sh", shell="sh", stack_dir=config.stack_dir,
                                 project=config.compose_project, db_role=config.postgres_user,
                                 database=config.postgres_db, timeout=config.mlflow_health_timeout)],
        _if=lambda: state in ("differs", "unknown") or (state != "none" and secrets_changed()),
    )
