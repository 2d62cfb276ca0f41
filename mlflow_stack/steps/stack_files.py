"""Write compose.yaml from the service modules, render templates/ from the config, and upload them
with files/ and the build context to the host."""

from __future__ import annotations

import hashlib
from io import BytesIO, StringIO
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, deploy
from pyinfra.facts.files import FindFiles
from pyinfra.operations import files, server
from pyinfra.operations.util import any_changed

from mlflow_stack.config import StackConfig, config_from_host
from mlflow_stack.config.releases import EXPORTER_LOCK
from mlflow_stack import services
from mlflow_stack.services import mlflow_api, node_exporter, proxy

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "templates"
# Verbatim files: scripts uploaded to the host and run there; programs copied into the MLflow image.
HOST_FILES = REPO / "files" / "host"
IMAGE_FILES = REPO / "files" / "image"
HOST_CA_DIR = "/usr/local/share/ca-certificates/mlflow-stack"
# Shell helpers the deploy runs on the host (not inputs of the stack itself).
HELPER_SCRIPTS = ("wait-healthy.sh", "apply-db-password.sh", "backup-before-migrate.sh", "backup.sh", "restore.sh",
                  "gc.sh", "tls-certs.sh", "job-result.sh")
# Only a host with an external backend has something to check before a start.
BACKEND_CHECK_SCRIPTS = ("check-backends.sh", "check_backends.py")

# trim_blocks: a loop's own lines leave nothing in the rendered file.
_jinja = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, keep_trailing_newline=True,
                     trim_blocks=True)


def render(template: str, config: StackConfig) -> str:
    return _jinja.get_template(template).render(**template_context(config))


def template_context(config: StackConfig) -> dict:
    context = {name: getattr(config, name) for name in config.__dataclass_fields__}
    context.update(
        data_dir=config.data_dir,
        s3_public_endpoint=config.s3_public_endpoint,
        s3_internal_endpoint=config.s3_internal_endpoint,
        minio_network_aliases=list(config.minio_network_aliases),
        proxy_network_aliases=list(config.proxy_network_aliases),
        artifacts_destination=config.artifacts_destination,
        mlflow_app_options=list(config.mlflow_app_options),
        mlflow_worker_count=config.mlflow_worker_count,
        mlflow_api_path=mlflow_api.PATH_PREFIX,
        metrics_locations=proxy.metrics_locations(config.metrics_networks, config.services),
        allowed_hosts=",".join(config.allowed_hosts),
        database_address=config.database_address,
        database_uri_options=config.database_uri_options,
        s3_access_key_id=config.s3_access_key_id,
        s3_secret_reference=config.s3_secret_reference,
        mlflow_s3_env=list(config.mlflow_s3_env),
        cluster_extra_hosts=list(config.cluster_extra_hosts),
        balancer_upstreams=list(config.balancer_upstreams),
        balancer_s3_upstream=config.balancer_s3_upstream,
    )
    return context


def compose_file(config: StackConfig) -> str:
    """compose.yaml, written from the service modules (mlflow_stack/services/)."""
    # MLflow reads auth.ini at start only: its digest in the compose file recreates MLflow on a change.
    auth_ini = _jinja.get_template("auth.ini.j2").render(**template_context(config))
    context = services.ComposeContext(config, mlflow_image=mlflow_image_ref(config),
                                      auth_ini_digest=hashlib.sha256(auth_ini.encode()).hexdigest()[:16])
    return services.compose_file(context)


def backend_ca_files(config: StackConfig) -> dict[str, str]:
    """Local CA file of an external backend -> its name in the stack directory (by content)."""
    given = ((config.postgres_ca_file, config.postgres_ca_name), (config.s3_ca_file, config.s3_ca_name))
    return {local: name for local, name in given if local is not None}


def ca_certificates(config: StackConfig) -> dict[str, bytes]:
    """Extra CA files by the name update-ca-certificates needs (*.crt)."""
    return {f"{Path(path).stem}.crt": Path(path).read_bytes() for path in config.extra_ca_certificates}


def build_context(config: StackConfig) -> dict[str, bytes]:
    """Relative path in build/ -> content: everything the MLflow image is made from."""
    dockerfile = _jinja.get_template("Dockerfile.j2").render(**template_context(config))
    context = {
        "Dockerfile": dockerfile.encode(),
        # The programs the image runs (files/image/): all of them, copied to /opt/mlflow-stack/.
        **{path.name: path.read_bytes() for path in sorted(IMAGE_FILES.glob("*.py"))},
        "requirements.lock": config.mlflow_lock,
        "exporter.lock": EXPORTER_LOCK.read_bytes(),
    }
    context.update({f"ca-certificates/{name}": data for name, data in ca_certificates(config).items()})
    return context


def mlflow_image_ref(config: StackConfig) -> str:
    """Tag derived from the image's inputs: a changed input means a new tag, and so a build;
    unchanged inputs find the tag present and build nothing."""
    digest = hashlib.sha256()
    for name, data in sorted(build_context(config).items()):
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return f"{config.mlflow_image}:{config.mlflow_version}-{digest.hexdigest()[:12]}"


def script_command(path: str, *, shell: str = "bash", **options: str | int | tuple[str, ...] | None) -> StringCommand:
    """`bash PATH --an-option VALUE ...`: a host script (files/host/) with named options, each
    quoted; an option of None is left out, a tuple's values each get the option."""
    args = [path]
    for key, value in options.items():
        for item in value if isinstance(value, tuple) else () if value is None else (value,):
            args += [f"--{key.replace('_', '-')}", str(item)]
    return StringCommand(shell, *(QuoteString(arg) for arg in args))


def remove_stale_files(directory: str, wanted: dict) -> list:
    """Remove files in `directory` that are not named in `wanted`; returns the operations."""
    present = host.get_fact(FindFiles, path=directory, quote_path=True) or []
    return [
        files.file(name=f"Remove {path} (no longer configured)", path=path, present=False)
        for path in sorted(present)
        if path.rsplit("/", 1)[-1] not in wanted
    ]


@deploy("Upload the stack files")
def upload_stack_files(config: StackConfig | None = None):
    """Returns the operations whose change means the stack must be brought up again."""
    config = config or config_from_host()
    changed = []

    certificates = ca_certificates(config)
    host_store = [
        files.put(name=f"Trust CA certificate {name} on the host", src=BytesIO(data),
                  dest=f"{HOST_CA_DIR}/{name}", user="root", group="root", mode="644")
        for name, data in certificates.items()
    ]
    host_store += remove_stale_files(HOST_CA_DIR, certificates)
    server.shell(name="Update the host's CA store", commands=["update-ca-certificates --fresh"],
                 _if=any_changed(*host_store))

    if config.builds_mlflow_image:  # a cluster's balancer runs no MLflow image
        files.directory(name="Ensure the build context has a CA folder", path=f"{config.build_dir}/ca-certificates",
                        user="root", group="root", mode="755")
        # A certificate dropped from the config must leave the image too.
        changed += remove_stale_files(f"{config.build_dir}/ca-certificates", certificates)
        for relative, data in build_context(config).items():
            changed.append(files.put(name=f"Upload build/{relative}", src=BytesIO(data),
                                     dest=f"{config.build_dir}/{relative}", user="root", group="root", mode="644"))

    if "node-exporter" in config.service_names:
        # The timers' results (job-result.sh writes them as root), read by the node exporter.
        files.directory(name="Create the metrics textfile directory", path=f"{config.stack_dir}/{node_exporter.TEXTFILE_DIR}",
                        user="root", group="root", mode="755")
    changed.append(files.put(name="Upload compose.yaml", src=StringIO(compose_file(config)),
                             dest=f"{config.stack_dir}/compose.yaml", user="root", group="root", mode="644"))
    if "mlflow" in config.service_names:  # not on a cluster's data host or balancer
        changed.append(files.put(name="Upload mlflow.env", src=StringIO(render("mlflow.env.j2", config)),
                                 dest=f"{config.stack_dir}/mlflow.env", user="root", group="root", mode="600"))
        changed.append(files.put(name="Upload auth.ini", src=StringIO(render("auth.ini.j2", config)),
                                 dest=config.auth_config_file, user="root", group="root", mode="644"))
    if "balancer" in config.service_names:
        changed.append(files.put(name="Upload balancer.conf", src=StringIO(render("balancer.conf.j2", config)),
                                 dest=f"{config.stack_dir}/balancer.conf", user="root", group="root", mode="644"))
    for local, name in backend_ca_files(config).items():
        changed.append(files.put(name=f"Upload {name} (CA of the external backend)", src=local,
                                 dest=f"{config.stack_dir}/{name}", user="root", group="root", mode="644"))
    for script in HELPER_SCRIPTS + (BACKEND_CHECK_SCRIPTS if config.external_database or config.external_s3 else ()):
        files.put(name=f"Upload {script}", src=str(HOST_FILES / script),
                  dest=f"{config.stack_dir}/{script}", user="root", group="root", mode="755")

    server.shell(
        name="Validate compose.yaml on the host",
        commands=[f"docker compose --project-directory {config.stack_dir} config --quiet"],
        _if=any_changed(*changed),
    )
    return changed
