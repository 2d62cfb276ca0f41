"""Debian 13 (trixie) root filesystems for the test targets, built with debootstrap and cached."""
from __future__ import annotations

import fcntl
import functools
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from .cache import build_cached, cache_root

SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
BASE_PACKAGES = [
    "systemd-sysv", "dbus", "libpam-systemd", "openssh-server", "sudo", "ca-certificates",
    "python3", "iproute2", "curl", "ifupdown",
]
# The VM boots its own kernel (qemu -kernel/-initrd taken from the rootfs /boot).
VM_PACKAGES = ["linux-image-amd64", "initramfs-tools"]

SUDO_USER = "labadmin"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")

# Bump when the build steps below change in a way the other inputs do not capture.
BUILD_VERSION = "1"

# nspawn mounts the cgroup v1 controllers read-only; dockerd needs them writable.
CGROUP_UNIT = """\
[Unit]
Description=Make cgroup v1 controllers writable for dockerd inside systemd-nspawn
DefaultDependencies=no
ConditionVirtualization=systemd-nspawn
Before=containerd.service docker.service
After=local-fs.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for d in /sys/fs/cgroup/*/; do mount -o remount,bind,rw "$d"; done; true'

[Install]
WantedBy=multi-user.target
"""


def docker_packages() -> list[str]:
    """Debian's Docker, the packages `docker_source = "distro"` installs (with their recommended
    packages, like the deploy's apt): preinstalled in the VM and in the container targets of the
    modules that do not test the install itself (a lab server that already runs Docker). The
    install from apt on plain Debian is tested by tests/e2e/test_container.py, `make demo` and
    `make bench`. In the VM it took 103-112 s of emulated CPU per run, on a path the container
    targets prove. (Imported here, not at the top: the debootstraps run before the venv has
    pyinfra, tools/prewarm.py.)"""
    from mlflow_stack.steps.docker_engine import DISTRO_PACKAGES

    return list(DISTRO_PACKAGES[("debian", 13)])


def stack_ca_dir() -> str:
    """Where the deploy keeps the CA files of `extra_ca_certificates`."""
    from mlflow_stack.steps.stack_files import HOST_CA_DIR

    return HOST_CA_DIR


def log(msg: str) -> None:
    print(f"[harness {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def ssh_keypair() -> Path:
    """Private key (ed25519, 0600) shared by all targets; generated once into the cache, by one
    process: `make test`'s lanes and builds ask for it at the same moment, and two keys made side
    by side gave root filesystems that took the other key, targets no one could log in to."""
    key_dir = cache_root() / "ssh"
    key = key_dir / "id_ed25519"
    if key.exists() and key.with_suffix(".pub").exists():
        return key
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(key_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if key.exists() and key.with_suffix(".pub").exists():
            return key  # made by the process that held the lock before
        tmp = key_dir / f"tmp-{os.getpid()}"
        for p in (tmp, tmp.with_suffix(".pub")):
            p.unlink(missing_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mlflow-stack-tests", "-f", str(tmp)])
        os.chmod(tmp, 0o600)
        # The public half first: a key with both files in place is complete.
        os.rename(tmp.with_suffix(".pub"), key.with_suffix(".pub"))
        os.rename(tmp, key)
    return key


def host_ca_certs() -> list[Path]:
    return sorted(HOST_CA_DIR.glob("*.crt")) if HOST_CA_DIR.is_dir() else []


def host_nameserver() -> str:
    # A loopback stub (systemd-resolved's 127.0.0.53) is unreachable from a target's own
    # network namespace; use resolved's upstream list then.
    for conf in ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"):
        try:
            lines = Path(conf).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver" and not parts[1].startswith("127."):
                return parts[1]
    raise RuntimeError("no non-loopback nameserver in /etc/resolv.conf")


@functools.lru_cache(maxsize=None)
def security_mirror_reachable() -> bool:
    # Checked once per process: it is part of the rootfs cache key.
    try:
        url = f"{SECURITY_MIRROR}/dists/{SUITE}-security/InRelease"
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=5) as r:
            return r.status == 200
    except Exception:
        return False


def sources_list(with_security: bool) -> str:
    lines = [
        f"deb {MIRROR} {SUITE} main",
        f"deb {MIRROR} {SUITE}-updates main",
    ]
    if with_security:
        lines.append(f"deb {SECURITY_MIRROR} {SUITE}-security main")
    return "\n".join(lines) + "\n"


def _debootstrap(packages: list[str]) -> Path:
    def build(tmp: Path) -> None:
        log(f"debootstrap {SUITE} into {tmp} (takes ~2 min)")
        t0 = time.monotonic()
        run(["debootstrap", "--include=" + ",".join(packages), SUITE, str(tmp), MIRROR],
            stdout=subprocess.DEVNULL)
        # Downloaded .debs are dead weight in every per-target copy.
        for deb in (tmp / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        log(f"debootstrap done in {time.monotonic() - t0:.0f}s")

    return build_cached("debootstrap", [BUILD_VERSION, SUITE, MIRROR, *packages], build)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def _configure(root: Path, kind: str, pubkey: str, with_security: bool, vm_net: str | None) -> None:
    chroot = ["chroot", str(root)]
    _write(root / "etc/hostname", "mlflow-target\n")
    _write(root / "etc/hosts", "127.0.0.1 localhost\n127.0.1.1 mlflow-target\n::1 localhost ip6-localhost ip6-loopback\n")
    _write(root / "etc/apt/sources.list", sources_list(with_security))
    _write(root / "etc/network/interfaces",
           "auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n")

    # Root and the sudo user share one key.
    _write(root / "root/.ssh/authorized_keys", pubkey, 0o600)
    os.chmod(root / "root/.ssh", 0o700)
    run(chroot + ["useradd", "-m", "-s", "/bin/bash", "-G", "sudo", SUDO_USER])
    # "*" instead of the default "!" so no sshd/PAM setup treats the account as locked.
    run(chroot + ["usermod", "-p", "*", SUDO_USER])
    _write(root / f"home/{SUDO_USER}/.ssh/authorized_keys", pubkey, 0o600)
    run(chroot + ["chown", "-R", f"{SUDO_USER}:{SUDO_USER}", f"/home/{SUDO_USER}/.ssh"])
    os.chmod(root / f"home/{SUDO_USER}/.ssh", 0o700)
    _write(root / f"etc/sudoers.d/{SUDO_USER}", f"{SUDO_USER} ALL=(ALL) NOPASSWD:ALL\n", 0o440)

    # The control machine sits behind a TLS-intercepting proxy: trust its CAs (image build only).
    # The VM trusts them where the deploy puts its `extra_ca_certificates` (a server set up so
    # before): the deploy's `update-ca-certificates` took 56 s of emulated CPU there, on a path
    # every container target's first run proves.
    ca_dir = root / str(HOST_CA_DIR if kind == "container" else stack_ca_dir()).lstrip("/")
    ca_dir.mkdir(parents=True, exist_ok=True)
    for crt in host_ca_certs():
        shutil.copy(crt, ca_dir / crt.name)
        os.chmod(ca_dir / crt.name, 0o644)
    run(chroot + ["update-ca-certificates"], stdout=subprocess.DEVNULL)

    run(chroot + ["systemctl", "enable", "ssh"], stderr=subprocess.DEVNULL)

    if kind == "container":
        _write(root / "etc/systemd/system/cgroup-rw.service", CGROUP_UNIT)
        run(chroot + ["systemctl", "enable", "cgroup-rw.service"], stderr=subprocess.DEVNULL)
    else:
        _write(root / "etc/fstab", "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n")
        # allow-hotplug: udev brings eth0 up on every boot, including after a reboot.
        _write(root / "etc/network/interfaces.d/eth0", vm_net or "")
        # No console login prompt needed; serial output goes to the console log.
        _write(root / "etc/resolv.conf", f"nameserver {host_nameserver()}\n")
        # root's user manager stays (`loginctl enable-linger root`): the tests' SSH logins come
        # every 15 s or more, logind stopped it 10 s after each and the next login started it
        # again, seconds of emulated CPU each time.
        _write(root / "var/lib/systemd/linger/root", "")


def _apt_install(root: Path, packages: list[str], recommends: bool) -> None:
    policy = root / "usr/sbin/policy-rc.d"
    _write(policy, "#!/bin/sh\nexit 101\n", 0o755)  # nothing starts inside the chroot
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        run(["chroot", str(root), "apt-get", "update", "-q"], stdout=subprocess.DEVNULL, env=env)
        # No fsync per file (dpkg's unsafe-io): a half-built tree is thrown away anyway, and the
        # suite's first builds share the disk (the kernel's install: 38 -> 35 s, idle machine).
        run(["chroot", str(root), "apt-get", "install", "-y", "-q", "-o", "Dpkg::Options::=--force-unsafe-io",
             *([] if recommends else ["--no-install-recommends"]), *packages], stdout=subprocess.DEVNULL, env=env)
        run(["chroot", str(root), "apt-get", "clean"], env=env)
    finally:
        policy.unlink()


def _install_docker(root: Path) -> None:
    t0 = time.monotonic()
    _apt_install(root, docker_packages(), recommends=True)  # with recommended packages, as the deploy's apt
    log(f"Docker preinstalled in {time.monotonic() - t0:.0f}s")


def container_netconfig(index: int) -> str:
    return (f"auto host0\niface host0 inet static\n"
            f"    address 10.99.{index}.2/30\n    gateway 10.99.{index}.1\n")


def vm_netconfig(index: int) -> str:
    return (f"allow-hotplug eth0\niface eth0 inet static\n"
            f"    address 10.99.{index}.2/30\n    gateway 10.99.{index}.1\n")


def debootstrap(kind: str) -> Path:
    """The cached debootstrap a root filesystem of `kind` is made from. The VM's is the
    containers' with its kernel added (as debootstrap's --include would: no recommended
    packages; the same package list): 35-38 s of work where a second debootstrap ran 232 s
    beside the first (docs/dev/measured.md)."""
    base = _debootstrap(BASE_PACKAGES)
    if kind != "vm":
        return base

    def build(tmp: Path) -> None:
        t0 = time.monotonic()
        run(["cp", "-a", "--reflink=auto", str(base), str(tmp)])
        _apt_install(tmp, VM_PACKAGES, recommends=False)
        log(f"the VM's kernel added to the debootstrap in {time.monotonic() - t0:.0f}s")

    return build_cached("debootstrap-vm", [BUILD_VERSION, base.name, *VM_PACKAGES], build)


def build_rootfs(kind: str = "container", vm_index: int = 200, docker: bool = False) -> Path:
    """Return a cached, configured rootfs directory for kind "container" or "vm"; docker: with
    Debian's Docker installed (docker_packages())."""
    if kind not in ("container", "vm"):
        raise ValueError(kind)
    base = debootstrap(kind)
    key = ssh_keypair()
    pubkey = key.with_suffix(".pub").read_text()
    with_security = security_mirror_reachable()
    vm_net = vm_netconfig(vm_index) if kind == "vm" else None
    inputs: list[str | bytes] = [
        BUILD_VERSION, kind, base.name, pubkey, str(with_security), CGROUP_UNIT, vm_net or "",
        Path(__file__).read_bytes(), *(docker_packages() if docker else []),
    ]
    if kind == "vm":
        inputs.append(host_nameserver())
    for crt in host_ca_certs():
        inputs += [crt.name, crt.read_bytes()]

    def build(tmp: Path) -> None:
        log(f"configuring {kind} rootfs {tmp}")
        run(["cp", "-a", "--reflink=auto", str(base), str(tmp)])
        _configure(tmp, kind, pubkey, with_security, vm_net)
        if docker:
            _install_docker(tmp)

    return build_cached(f"rootfs-{kind}{'-docker' if docker else ''}", inputs, build)
