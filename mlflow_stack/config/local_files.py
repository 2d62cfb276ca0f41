"""Digests of files on the control machine, remembered by path, size and modification time.

An image archive is hundreds of MB to GBs: hashing it on every run took ~1 s per GB here, and
its copy on the host as long again (docs/dev/measured.md). Its digest is computed once per
version of the file and kept in a small cache ($XDG_CACHE_HOME/mlflow-stack, else ~/.cache);
the host's copy is named by it, so a rerun only asks whether that name exists.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

_BLOCK = 1 << 20


def cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlflow-stack" / "file-digests.json"


def sha256_of(path: str) -> str:
    """The file's sha256, from the cache while its size and mtime are unchanged."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    key = f"{real}:{stat.st_size}:{stat.st_mtime_ns}"
    cache = cache_file()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    digest = hashlib.sha256()
    with open(real, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    # Entries of files that no longer exist go; a failed write only costs the next run a hash.
    known = {k: v for k, v in known.items() if os.path.exists(k.rsplit(":", 2)[0])}
    known[key] = digest.hexdigest()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache.with_name(f".{cache.name}.{os.getpid()}")
        temporary.write_text(json.dumps(known, indent=0, sort_keys=True))
        temporary.replace(cache)
    except OSError:
        pass
    return known[key]


def content_name(path: str) -> str:
    """`<stem>-<12 hex of its sha256><suffix>`: a new content is a new name."""
    local = Path(path)
    suffix = "".join(local.suffixes[-1:])
    return f"{local.name[:len(local.name) - len(suffix)]}-{sha256_of(path)[:12]}{suffix}"


def archive_images(path: str) -> dict[str, tuple[str, ...]] | None:
    """The images a `docker save` archive holds: image id -> its tags, from the archive's
    manifest.json (read by seeking over the layers, not through them). None when that cannot be
    read without decompressing the whole file (a compressed archive, which `docker load` also
    takes) or the file is not such an archive."""
    import tarfile

    try:
        with tarfile.open(path, mode="r:") as archive:
            handle = archive.extractfile("manifest.json")
            manifest = json.load(handle) if handle else None
    except (OSError, KeyError, ValueError, tarfile.TarError):
        return None
    if not isinstance(manifest, list):
        return None
    # "Config" is "<hex>.json" (docker < 25) or "blobs/sha256/<hex>" (OCI layout): the image id.
    return {f"sha256:{entry['Config'].rsplit('/', 1)[-1].removesuffix('.json')}": tuple(entry.get("RepoTags") or ())
            for entry in manifest if isinstance(entry, dict) and isinstance(entry.get("Config"), str)} or None
