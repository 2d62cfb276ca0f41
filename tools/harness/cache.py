"""Content-addressed cache for slow-to-build artifacts (rootfs trees, VM images, SSH key)."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator


def cache_root() -> Path:
    root = Path(os.environ.get("MLFLOW_STACK_CACHE", "/var/cache/mlflow-stack-tests"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _digest(inputs: list[str | bytes]) -> str:
    h = hashlib.sha256()
    for item in inputs:
        data = item.encode() if isinstance(item, str) else bytes(item)
        # Length prefix so ["ab", "c"] and ["a", "bc"] hash differently.
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def cached_path(kind: str, inputs: list[str | bytes]) -> Path:
    """Path where the artifact of `kind` built from `inputs` lives (may not exist yet)."""
    return cache_root() / f"{kind}-{_digest(inputs)[:20]}"


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    # Serialise concurrent builders of the same artifact (e.g. parallel pytest workers).
    lock_file = path.with_name(path.name + ".lock")
    with open(lock_file, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    with open("/proc/self/mounts") as fh:
        points = [line.split()[1].replace("\\040", " ") for line in fh]
    return sorted((m for m in points if m.startswith(prefix)), key=len, reverse=True)


def _unmount_below(path: Path) -> None:
    # A killed debootstrap leaves proc/sys mounted inside its target, and a container's
    # dockerd can leak overlay/nsfs mounts into the host namespace: unmount (lazily, deepest
    # first) before deleting.
    for mp in _mounts_below(path):
        subprocess.run(["umount", "-l", mp], check=False, capture_output=True)


def remove_tree(path: Path, attempts: int = 3) -> None:
    """Delete `path` for real: unmount what is mounted below it, retry, raise if it stays."""
    for attempt in range(attempts):
        if path.is_dir() and not path.is_symlink():
            _unmount_below(path)
            # --one-file-system: never descend into anything still mounted below it.
            r = subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False,
                               capture_output=True, text=True)
        elif path.exists() or path.is_symlink():
            path.unlink()
            return
        else:
            return
        if not os.path.lexists(path):
            return
        time.sleep(0.5 * (attempt + 1))  # e.g. a process of a dying container still writing
    raise RuntimeError(f"could not remove {path}: {r.stderr.strip()[-500:]} "
                       f"(mounts below it: {_mounts_below(path)[:5]})")


def trash_dir() -> Path:
    return cache_root() / ".trash"


def discard_tree(path: Path) -> None:
    """Remove `path` from its place at once and delete it in the background.

    Deleting a used target's tree (a rootfs with docker.io and images, a VM disk after a
    deploy) took 3-35 s on this host (ext4 mounted with `discard`, I/O shared with a TCG VM):
    that was CI time on every test. We unmount what is mounted below it, rename it into
    `<cache>/.trash/` (same filesystem: instant) and start a detached `rm -rf`; leftovers of an
    interrupted delete are removed by the next discard_tree() and by `prune`.
    """
    if not os.path.lexists(path):
        return
    if not path.is_dir() or path.is_symlink():
        path.unlink()
        return
    _unmount_below(path)
    trash = trash_dir()
    trash.mkdir(exist_ok=True)
    dest = trash / f"{path.name}-{os.getpid()}-{time.monotonic_ns()}"
    try:
        os.rename(path, dest)
    except OSError:  # another filesystem: delete in place
        remove_tree(path)
        return
    # Older entries whose deleter died (host reboot, SIGKILL) are deleted along with it;
    # rm on a tree another rm is deleting is harmless.
    victims = [str(dest)] + [str(p) for p in trash.iterdir()
                             if p != dest and time.time() - p.lstat().st_mtime > 600]
    # sh exits at once; the rm is reparented to init, so no zombie and nothing to wait for.
    subprocess.run(["sh", "-c", 'nice -n 10 rm -rf --one-file-system "$@" </dev/null >/dev/null 2>&1 &',
                    "sh", *victims], check=False)


def build_cached(kind: str, inputs: list[str | bytes], builder: Callable[[Path], None]) -> Path:
    """Return the cached artifact, building it with builder(tmp_path) if missing.

    The builder writes into a temporary sibling path which is renamed into place only on
    success, so a crashed build never leaves a half-finished artifact under the final name.
    """
    final = cached_path(kind, inputs)
    if final.exists():
        os.utime(final)  # last-use time, for prune()
        return final
    with _lock(final):
        if final.exists():
            return final
        tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
        # Leftovers of earlier crashed builds (any pid) are garbage now that we hold the lock.
        for stale in final.parent.glob(f"{final.name}.tmp-*"):
            remove_tree(stale)
        try:
            builder(tmp)
            os.rename(tmp, final)
        except BaseException:
            remove_tree(tmp)
            raise
    return final


def prune(max_age_days: float, kinds: tuple[str, ...] = ("debootstrap", "rootfs", "docker-data", "vm-image")) -> list[Path]:
    """Delete artifacts of `kinds` not used for max_age_days (callers make sure none is in use)."""
    cutoff = time.time() - max_age_days * 86400
    removed = []
    if trash_dir().is_dir():
        remove_tree(trash_dir())
    for path in sorted(cache_root().iterdir()):
        if not path.name.startswith(kinds) or path.name.endswith(".lock"):
            continue
        if path.stat().st_mtime < cutoff:
            remove_tree(path)
            path.with_name(path.name + ".lock").unlink(missing_ok=True)
            removed.append(path)
    return removed
