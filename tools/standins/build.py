"""Build the stand-in images and cache them as one ``docker save`` archive.

    from tools.standins.build import ensure_standin_archive, STANDIN_IMAGES
    archive = ensure_standin_archive()      # Path to a .tar for `docker load -i`

The archive holds the four images named in :data:`STANDIN_IMAGES` (they share
their Debian base layers).  Its file name carries a sha256 over every build input
(Dockerfiles, scripts, package versions, this file), so a change to any of them
builds a new archive; an existing one is returned as it is.  Building needs root:
it runs debootstrap and a private dockerd (see dockerd.py) that is stopped again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .dockerd import HostDockerd, _umount_below, cache_dir, host_dockerd

STANDIN_IMAGES = {
    "python": "standin/python:3.12-slim",
    "postgres": "standin/postgres:17",
    "minio": "standin/minio:RELEASE.standin",
    "nginx": "standin/nginx:1.28",
    "node-exporter": "standin/node-exporter:trixie",
    "postgres-exporter": "standin/postgres-exporter:trixie",
}
BASE_IMAGE = "standin/debian:trixie"
# The machine's extra CA certificates (its TLS-intercepting proxy): targets and image builds need them.
HOST_CA_CERTS = sorted(str(p) for p in Path("/usr/local/share/ca-certificates").glob("*.crt"))


def standin_settings(archive: Path) -> dict:
    """The deploy settings that put the stand-ins in place of the official images: what a user
    of an air-gapped Debian 13 server behind a TLS proxy would set."""
    return {
        "docker_source": "distro",
        "docker_image_archives": [str(archive)],
        "extra_ca_certificates": HOST_CA_CERTS,
        "python_image": STANDIN_IMAGES["python"],
        "postgres_image": STANDIN_IMAGES["postgres"],
        "minio_image": STANDIN_IMAGES["minio"],
        "proxy_image": STANDIN_IMAGES["nginx"],
        "node_exporter_image": STANDIN_IMAGES["node-exporter"],
        "postgres_exporter_image": STANDIN_IMAGES["postgres-exporter"],
    }

SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
DEBOOTSTRAP_ARGS = ["--variant=minbase", "--include=ca-certificates"]

# The S3 server under the MinIO stand-in; its wheel is fetched with pip on the host
# and checked against this hash before it goes into the image.
LOCALBUCKET_VERSION = "1.2.1"
LOCALBUCKET_WHEEL = f"localbucket-{LOCALBUCKET_VERSION}-py3-none-any.whl"
LOCALBUCKET_SHA256 = "452278528f7e3957f72d77a75b146dd0b83af1da9cd1f7c233d54724d264af3f"

HERE = Path(__file__).resolve().parent
IMAGES_DIR = HERE / "images"
ARCHIVE_PREFIX = "standin-images-"

# Keep the base small: no docs, man pages or translations in later installs.
DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
"""


def _log(message: str) -> None:
    print(f"[standins] {message}", file=sys.stderr, flush=True)


def input_files() -> list[Path]:
    """Every file whose content goes into the images, plus the build logic (build.py).

    dockerd.py is left out: how the build daemon runs does not change the images."""
    files = sorted(p for p in IMAGES_DIR.rglob("*") if p.is_file())
    return files + [HERE / "build.py"]


def inputs_digest() -> str:
    """sha256 over all build inputs: files, package pins, debootstrap settings."""
    digest = hashlib.sha256()
    settings = {
        "images": STANDIN_IMAGES,
        "base": BASE_IMAGE,
        "suite": SUITE,
        "mirror": MIRROR,
        "debootstrap": DEBOOTSTRAP_ARGS,
        "localbucket": [LOCALBUCKET_VERSION, LOCALBUCKET_SHA256],
        "dpkg_excludes": DPKG_EXCLUDES,
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for path in input_files():
        digest.update(str(path.relative_to(HERE)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def archive_path() -> Path:
    return cache_dir() / f"{ARCHIVE_PREFIX}{inputs_digest()[:20]}.tar"


def ensure_standin_archive() -> Path:
    """Return the cached archive of the stand-in images, building it if missing."""
    target = archive_path()
    if target.is_file():
        _mark_in_use(target)
        return target
    lock_path = cache_dir() / "standin-images.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; others wait for it
        if target.is_file():
            return target
        build_archive(target)
    return target


# -- building -------------------------------------------------------------------------


def _fetch_localbucket(dest: Path) -> Path:
    wheel = dest / LOCALBUCKET_WHEEL
    cached = cache_dir() / "standin-wheels" / LOCALBUCKET_WHEEL
    if cached.is_file() and _sha256(cached) == LOCALBUCKET_SHA256:
        shutil.copy2(cached, wheel)
        return wheel
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--dest", str(dest), f"localbucket=={LOCALBUCKET_VERSION}"],
        check=True,
    )
    if not wheel.is_file():
        raise RuntimeError(f"pip did not produce {wheel}")
    actual = _sha256(wheel)
    if actual != LOCALBUCKET_SHA256:
        raise RuntimeError(f"{wheel.name}: sha256 {actual}, expected {LOCALBUCKET_SHA256}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(wheel, cached)
    return wheel


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _debootstrap(rootfs: Path) -> None:
    if not shutil.which("debootstrap"):
        raise RuntimeError("debootstrap missing (apt-get install debootstrap)")
    subprocess.run(["debootstrap", *DEBOOTSTRAP_ARGS, SUITE, str(rootfs), MIRROR],
                   check=True, stdout=subprocess.DEVNULL)
    # slim it down the way Debian's own container images are
    for sub in ("var/lib/apt/lists", "var/cache/apt", "var/log", "tmp", "var/tmp"):
        path = rootfs / sub
        if path.is_dir():
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    for sub in ("usr/share/man", "usr/share/info", "usr/share/lintian"):
        shutil.rmtree(rootfs / sub, ignore_errors=True)
    for doc in (rootfs / "usr/share/doc").glob("*"):
        if doc.is_dir() and not doc.is_symlink():
            for child in doc.iterdir():
                if child.name != "copyright":
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
    locale_dir = rootfs / "usr/share/locale"
    if locale_dir.is_dir():
        for child in locale_dir.iterdir():
            if child.name != "locale.alias":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    (rootfs / "etc/dpkg/dpkg.cfg.d/standin-slim").write_text(DPKG_EXCLUDES)
    (rootfs / "etc/apt/apt.conf.d/90standin").write_text(
        'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
        'Acquire::Languages "none";\n')
    # the host's hostname/resolv.conf must not leak into the image
    for name in ("etc/hostname", "etc/resolv.conf"):
        with contextlib.suppress(FileNotFoundError):
            (rootfs / name).unlink()


def _import_base(daemon: HostDockerd, rootfs: Path) -> None:
    tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."],
                           stdout=subprocess.PIPE)
    try:
        result = subprocess.run(
            [daemon.client, "-H", daemon.host, "import", "--change", 'CMD ["bash"]',
             "--change", "ENV LANG=C.UTF-8", "-", BASE_IMAGE],
            stdin=tar.stdout, env=daemon.env(), capture_output=True)
    finally:
        tar.stdout.close()
        tar.wait()
    if result.returncode != 0 or tar.returncode != 0:
        raise RuntimeError(f"docker import failed: {result.stderr.decode(errors='replace')}")


def _docker_build(daemon: HostDockerd, tag: str, context: Path, log: Path,
                  build_args: dict[str, str] | None = None) -> None:
    args = ["build", "--network", "host", "--force-rm", "-t", tag]
    for key, value in (build_args or {}).items():
        args += ["--build-arg", f"{key}={value}"]
    with open(log, "wb") as out:
        result = subprocess.run([daemon.client, "-H", daemon.host, *args, str(context)],
                                env=daemon.env(), stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"docker build of {tag} failed; last lines of {log}:\n"
                           + log.read_text(errors="replace")[-6000:])


def _mark_in_use(archive: Path) -> None:
    """A session using an archive keeps it from being pruned by another session's build
    (a checkout with other stand-in inputs) while its deploys still upload it."""
    with contextlib.suppress(OSError):
        os.utime(archive)


# Longer than any test session: an archive a running session deploys from must stay.
ARCHIVE_KEEP_SECONDS = 12 * 3600


def _prune_old_archives(keep: Path, min_age: float = ARCHIVE_KEEP_SECONDS) -> None:
    """Delete archives of older inputs (~0.5 GB each) not used for min_age seconds."""
    now = time.time()
    for old in cache_dir().glob(f"{ARCHIVE_PREFIX}*.tar"):
        if old == keep:
            continue
        with contextlib.suppress(OSError):
            if now - old.stat().st_mtime > min_age:
                old.unlink()
                old.with_suffix(".json").unlink(missing_ok=True)
                _log(f"removed stale archive {old.name}")


def build_archive(target: Path) -> None:
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="standins-build-", dir=cache_dir()))
    try:
        _log(f"building stand-in images into {target.name} (work dir {work})")
        minio_ctx = work / "minio"
        shutil.copytree(IMAGES_DIR / "minio", minio_ctx)
        _fetch_localbucket(minio_ctx)

        t0 = time.monotonic()
        rootfs = work / "rootfs"
        _debootstrap(rootfs)
        _log(f"debootstrap {SUITE}: {time.monotonic() - t0:.0f}s")

        with host_dockerd() as daemon:
            t0 = time.monotonic()
            _import_base(daemon, rootfs)
            _log(f"imported {BASE_IMAGE}: {time.monotonic() - t0:.0f}s")
            _umount_below(rootfs)
            shutil.rmtree(rootfs, ignore_errors=True)

            # python and postgres only share the base: build them side by side
            errors: list[BaseException] = []

            def build_postgres():
                try:
                    _docker_build(daemon, STANDIN_IMAGES["postgres"], IMAGES_DIR / "postgres",
                                  work / "build-postgres.log")
                except BaseException as error:  # noqa: BLE001 - reported below
                    errors.append(error)

            t0 = time.monotonic()
            pg_thread = threading.Thread(target=build_postgres)
            pg_thread.start()
            try:
                _docker_build(daemon, STANDIN_IMAGES["python"], IMAGES_DIR / "python",
                              work / "build-python.log")
                _log(f"built {STANDIN_IMAGES['python']}: {time.monotonic() - t0:.0f}s")
                _docker_build(daemon, STANDIN_IMAGES["minio"], minio_ctx,
                              work / "build-minio.log",
                              {"LOCALBUCKET_WHEEL": LOCALBUCKET_WHEEL})
                _log(f"built {STANDIN_IMAGES['minio']}: {time.monotonic() - t0:.0f}s")
                # The rest: a Dockerfile on the base each, nothing else.
                for name in ("nginx", "node-exporter", "postgres-exporter"):
                    _docker_build(daemon, STANDIN_IMAGES[name], IMAGES_DIR / name, work / f"build-{name}.log")
                    _log(f"built {STANDIN_IMAGES[name]}: {time.monotonic() - t0:.0f}s")
            finally:
                pg_thread.join()
            if errors:
                raise errors[0]
            _log(f"built {STANDIN_IMAGES['postgres']}: {time.monotonic() - t0:.0f}s")

            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            daemon.docker("save", "-o", str(tmp), *STANDIN_IMAGES.values(), timeout=600)
            sizes = {}
            for name, tag in STANDIN_IMAGES.items():
                out = daemon.docker("image", "inspect", "--format", "{{.Size}}", tag)
                sizes[tag] = int(out.stdout.decode().strip())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        elapsed = time.monotonic() - started
        meta = {
            "archive": target.name,
            "images": STANDIN_IMAGES,
            "image_sizes_bytes": sizes,
            "archive_bytes": target.stat().st_size,
            "build_seconds": round(elapsed, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        target.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
        _log(f"archive {target} ({target.stat().st_size / 1e6:.0f} MB) in {elapsed:.0f}s")
        _prune_old_archives(keep=target)
    finally:
        _umount_below(work)
        shutil.rmtree(work, ignore_errors=True)
        for stale in cache_dir().glob(f".{ARCHIVE_PREFIX}*.tmp"):
            with contextlib.suppress(OSError):
                if stale.stat().st_mtime < time.time() - 3600 or str(os.getpid()) in stale.name:
                    stale.unlink()
