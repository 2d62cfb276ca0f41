"""Run a private dockerd on the host for building and testing the stand-in images.

The daemon gets its own data root, exec root, pid file, unix socket and a bridge
of its own, and runs with ``--iptables=false --ip-forward=false --ip-masq=false``
so it changes no firewall rule and leaves ``net.ipv4.ip_forward`` as it was
(a stock dockerd sets ip_forward=1 and the FORWARD policy to DROP and leaves
both behind).  Published ports (``-p 127.0.0.1:PORT:CPORT``) are served by
docker's userland proxy; containers have no route to the outside world, so
builds that need the network use ``--network host``.

The daemon is stopped by its PID only.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

RUN_ROOT = Path("/run/mlflow-stack-tests")
DOCKERD = "/usr/sbin/dockerd"


def docker_client() -> str:
    """The docker CLI to use: Debian's (matches the daemon), else whatever is on PATH."""
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("no docker client found (apt-get install docker.io)")


def cache_dir() -> Path:
    path = Path(os.environ.get("MLFLOW_STACK_CACHE") or "/var/cache/mlflow-stack-tests")
    path.mkdir(parents=True, exist_ok=True)
    return path


class HostDockerd:
    """A running private dockerd. Use :func:`host_dockerd` to get one."""

    def __init__(self, workdir: Path, rundir: Path, bridge: str, subnet_prefix: str):
        self.workdir = workdir
        self.rundir = rundir
        self.bridge = bridge
        self.subnet_prefix = subnet_prefix  # e.g. "10.231.17"
        self.socket = rundir / "docker.sock"
        self.pidfile = rundir / "dockerd.pid"
        self.log = workdir / "dockerd.log"
        self.proc: subprocess.Popen | None = None
        self.client = docker_client()

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DOCKER_HOST"] = self.host
        env["DOCKER_BUILDKIT"] = "0"
        env.pop("DOCKER_CONTEXT", None)
        # keep the client away from any ~/.docker config of the caller
        env["DOCKER_CONFIG"] = str(self.workdir / "client-config")
        return env

    def docker(self, *args: str, check: bool = True, capture: bool = True,
               input: bytes | None = None, timeout: float | None = None,
               stdout=None) -> subprocess.CompletedProcess:
        """Run the docker CLI against this daemon."""
        cmd = [self.client, "-H", self.host, *args]
        kwargs: dict = {"env": self.env(), "input": input, "timeout": timeout}
        if stdout is not None:
            kwargs["stdout"] = stdout
            kwargs["stderr"] = subprocess.PIPE
        elif capture:
            kwargs["capture_output"] = True
        result = subprocess.run(cmd, **kwargs)
        if check and result.returncode != 0:
            err = result.stderr.decode(errors="replace") if isinstance(result.stderr, bytes) else ""
            out = result.stdout.decode(errors="replace") if isinstance(result.stdout, bytes) else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{out}\n{err}")
        return result

    # -- lifecycle -------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        self.rundir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "client-config").mkdir(parents=True, exist_ok=True)
        config = self.workdir / "daemon.json"
        config.write_text(json.dumps({}))
        subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", f"{self.subnet_prefix}.1/24", "dev", self.bridge],
                       check=True)
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)
        cmd = [
            DOCKERD,
            "--config-file", str(config),
            "--data-root", str(self.workdir / "data"),
            "--exec-root", str(self.rundir / "exec"),
            "--pidfile", str(self.pidfile),
            "-H", self.host,
            "--bridge", self.bridge,
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--userland-proxy=true",
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited early ({self.proc.returncode}); "
                                   f"log:\n{self.log.read_text(errors='replace')[-4000:]}")
            if self.socket.exists():
                r = subprocess.run([self.client, "-H", self.host, "version"],
                                   env=self.env(), capture_output=True)
                if r.returncode == 0:
                    return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"dockerd did not answer within {timeout}s; "
                           f"log:\n{self.log.read_text(errors='replace')[-4000:]}")

    def stop(self, timeout: float = 60.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # remove containers first so dockerd's shutdown is quick
            with contextlib.suppress(Exception):
                ids = self.docker("ps", "-aq", timeout=30).stdout.decode().split()
                if ids:
                    self.docker("rm", "-f", *ids, check=False, timeout=60)
            self.proc.send_signal(signal.SIGTERM)  # our own child, by PID
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.proc = None
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        # dockerd leaves mounts behind under the data/exec roots on some failures
        for root in (self.rundir, self.workdir):
            _umount_below(root)
        shutil.rmtree(self.rundir, ignore_errors=True)


def _umount_below(root: Path) -> None:
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    targets = []
    prefix = str(root).rstrip("/") + "/"
    for line in mounts:
        fields = line.split()
        if len(fields) > 1:
            target = fields[1].replace("\\040", " ")
            if target.startswith(prefix):
                targets.append(target)
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)


def _free_subnet_prefix() -> str:
    """A 10.231.x.0/24 that no interface on the host uses yet."""
    used = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True,
                          text=True).stdout
    candidates = list(range(256))
    random.shuffle(candidates)
    for x in candidates:
        if f" 10.231.{x}." not in used:
            return f"10.231.{x}"
    raise RuntimeError("no free 10.231.x.0/24 for the dockerd bridge")


@contextlib.contextmanager
def host_dockerd(keep_data: bool = False) -> Iterator[HostDockerd]:
    """Start a private dockerd; stop it (by PID) and remove its files afterwards."""
    if os.geteuid() != 0:
        raise RuntimeError("a private dockerd needs root")
    if not os.access(DOCKERD, os.X_OK):
        raise RuntimeError(f"{DOCKERD} missing (apt-get install docker.io)")
    tag = f"{os.getpid() % 100000}{random.randint(0, 99)}"
    workdir = Path(tempfile.mkdtemp(prefix="standins-dockerd-", dir=cache_dir()))
    rundir = RUN_ROOT / f"standins-dockerd-{tag}"
    bridge = f"stdk{tag}"[:15]
    subnet = _free_subnet_prefix()
    daemon = HostDockerd(workdir, rundir, bridge, subnet)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        if not keep_data:
            _umount_below(workdir)
            shutil.rmtree(workdir, ignore_errors=True)
