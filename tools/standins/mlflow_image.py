"""The MLflow image the deploy builds, built once on this machine and cached as an archive.

    from tools.standins.mlflow_image import with_mlflow_image
    settings = with_mlflow_image(settings)   # adds the archive to docker_image_archives

What a user with an air-gapped server does: build the image elsewhere, hand it over with
`docker_image_archives`. The deploy loads it, finds the tag it would build (the tag is a hash of
the image's inputs: mlflow_stack.steps.stack_files.mlflow_image_ref) and builds nothing. A target that
is handed it skips its own pip install of ~90 packages (a minute on a container target, over
four in the software-emulated VM). Settings that change an input (another uid, MLflow release,
CA) make another tag: that target builds it itself, as it would without the archive.

The archive is named by the tag, so it is built once per set of inputs, with the stand-in
python base from the stand-in archive, on a private dockerd (dockerd.py).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path

from mlflow_stack.config import load_config
from mlflow_stack.steps.stack_files import build_context, mlflow_image_ref

from .build import _docker_build, _log, _mark_in_use, ensure_standin_archive
from .dockerd import cache_dir, host_dockerd

PREFIX = "mlflow-image-"


def archive_for(ref: str) -> Path:
    return cache_dir() / f"{PREFIX}{ref.replace('/', '_').replace(':', '_')}.tar"


def ensure_mlflow_image_archive(settings: dict) -> Path:
    """The archive of the image the deploy would build for `settings` (built if missing)."""
    config = load_config(dict(settings), "image-build", environ={})
    ref = mlflow_image_ref(config)
    target = archive_for(ref)
    if target.is_file():
        _mark_in_use(target)
        return target
    with open(cache_dir() / "mlflow-image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():
            return target
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="mlflow-image-", dir=cache_dir()) as work, host_dockerd() as daemon:
            context = Path(work) / "context"
            for relative, data in build_context(config).items():
                (context / relative).parent.mkdir(parents=True, exist_ok=True)
                (context / relative).write_bytes(data)
            daemon.docker("load", "--input", str(ensure_standin_archive()), timeout=600)
            _docker_build(daemon, ref, context, Path(work) / "build.log")
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            daemon.docker("save", "--output", str(tmp), ref, timeout=600)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        _log(f"built {ref} into {target.name} in {time.monotonic() - started:.0f}s")
    return target


def with_mlflow_image(settings: dict) -> dict:
    """`settings` with the MLflow image's archive among its docker_image_archives."""
    archive = str(ensure_mlflow_image_archive(settings))
    return {**settings, "docker_image_archives": [*settings.get("docker_image_archives", []), archive]}
