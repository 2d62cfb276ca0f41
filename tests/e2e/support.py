"""Run the real pyinfra CLI against a target and read its result; talk to the stack.

The deploy reaches the stand-ins only through settings a real user has: image names,
docker_source, image archives (air-gapped hosts) and extra CA certificates.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import pprint
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from mlflow_stack.facts.host import ComposeServices
from mlflow_stack.services import active_services, stack_is_healthy
from tools.harness.targets import _proc_start_time

REPO = Path(__file__).resolve().parents[2]
# Authentication is on by default: the suite gives the admin password (a user may, like any
# secret) and its clients use it, as a lab's users would use theirs. test_auth.py covers
# generated passwords and listed users.
E2E_ADMIN_USER = "admin"
E2E_ADMIN_PASSWORD = "e2e-admin-" + uuid.uuid4().hex
PYTHON = sys.executable
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))


@dataclass
class DeployResult:
    returncode: int
    seconds: float
    stdout: str
    stderr: str
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    remote_commands: int = 0
    # Inventory name -> the operations that changed something there (several hosts in one run).
    changed_on: dict[str, list[str]] = field(default_factory=dict)

    def check(self) -> "DeployResult":
        assert self.returncode == 0, f"deploy failed ({self.returncode}):\n{self.stderr[-6000:]}"
        return self


class Deployer:
    """Writes an inventory for one target and runs `pyinfra -y INVENTORY deploy.py`."""

    def __init__(self, target, settings: dict, user: str = "root", workdir: Path | None = None,
                 name: str | None = None):
        self.target = target
        self.name = name or target.address  # the inventory name: the address, or a DNS name
        self.user = user
        self.settings = dict(settings)
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"deploy-{target.name}-"))

    def inventory(self, overrides: dict | None = None) -> Path:
        data = {**self.target.inventory_data(self.user), **self.settings, **(overrides or {})}
        path = self.workdir / "inventory.py"
        path.write_text(f"mlflow_servers = [({self.name!r}, {pprint.pformat(data)})]\n")
        return path

    def run(self, overrides: dict | None = None, extra_args: tuple[str, ...] = (), env: dict | None = None,
            deploy: str = "deploy.py") -> DeployResult:
        inventory = self.inventory(overrides)
        # --json gives the per-operation result; -v lets us count the remote commands.
        command = [PYINFRA, "-y", "--json", *extra_args, str(inventory), deploy]
        started = time.monotonic()
        # run_watched: like subprocess.run, but aborts (TargetDied + console tail) if the target dies.
        proc = self.target.run_watched(command, cwd=REPO, capture_output=True, text=True,
                                       env={**os.environ, **(env or {})}, timeout=3600)
        result = DeployResult(proc.returncode, time.monotonic() - started, proc.stdout, proc.stderr)
        _read_json_result(result)
        return result


class InventoryDeployer(Deployer):
    """Writes an inventory of several groups of targets ({group: [(inventory name, target)]})
    and runs pyinfra on all of them at once."""

    def __init__(self, groups: dict[str, list[tuple[str, object]]], settings: dict, workdir: Path | None = None,
                 group_settings: dict[str, dict] | None = None):
        first = next(target for members in groups.values() for _, target in members)
        super().__init__(first, settings, workdir=workdir)
        self.groups = groups
        self.group_settings = group_settings or {}  # a group's own settings (group_data/<group>.py)

    def inventory(self, overrides: dict | None = None) -> Path:
        lines = []
        for group, members in self.groups.items():
            entries = [(name, {**target.inventory_data(self.user), **self.settings,
                               **self.group_settings.get(group, {}), **(overrides or {})})
                       for name, target in members]
            lines.append(f"{group} = {pprint.pformat(entries)}\n")
        path = self.workdir / "inventory.py"
        path.write_text("".join(lines))
        return path


def _read_json_result(result: DeployResult) -> None:
    start = result.stdout.find('{"plan"')
    if start < 0:
        return
    data = json.loads(result.stdout[start:])
    for op in (data.get("results") or {}).get("operations", []):  # no results with --dry
        for name in op["success"]:
            result.changed_on.setdefault(name, []).append(op["name"])
        if op["error"]:
            result.errors.append(op["name"])
        elif op["success"]:
            result.changed.append(op["name"])
        else:
            result.unchanged.append(op["name"])
    result.remote_commands = count_remote_commands(result.stderr)


def count_remote_commands(log: str) -> int:
    """Commands pyinfra ran on the host (facts and operations), from its debug log."""
    return len(re.findall(r"Running command on ", log))


def compose_status(target, project: str = "mlflow") -> dict[str, dict]:
    """The deploy's own ComposeServices fact, read over SSH: the same command, the same parse."""
    fact = ComposeServices()
    return fact.process(target.ssh(fact.command(project)).stdout.splitlines())


def assert_stack_healthy(target, services=None, tls: str = "off") -> None:
    """Healthy as the deploy decides it (mlflow_stack/services/); `services`: the target's
    topology (config.services), else all bundled with the `tls` setting (the suite's shared
    settings have "off")."""
    status = compose_status(target)
    assert stack_is_healthy(status, services or active_services(tls)), status


def wait_until_healthy(target, timeout: float, tls: str = "off", every: float = 3) -> None:
    """After a reboot: the stack healthy within `timeout`, brought back by Docker alone. Every
    step is bounded: each ssh aborts within seconds if the target dies (TargetDied, with the
    console's last lines for a VM), and the loop checks the target's liveness."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            assert_stack_healthy(target, tls=tls)
            return
        except (AssertionError, KeyError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
            target.assert_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"stack not healthy {timeout:.0f} s after the reboot: "
                                     f"{compose_status(target)}") from None
            time.sleep(every)


def read_secrets(target) -> dict[str, str]:
    text = target.ssh("cat /srv/mlflow/.env").stdout
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def http_json(url: str, payload: dict | None = None, ca: str | None = None) -> dict:
    """A call to the tracking API as the suite's admin (https: trusting the CA file `ca`)."""
    data = json.dumps(payload).encode() if payload is not None else None
    token = base64.b64encode(f"{E2E_ADMIN_USER}:{E2E_ADMIN_PASSWORD}".encode()).decode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json",
                                                              "Authorization": f"Basic {token}"},
                                     method="POST" if data else "GET")
    context = ssl.create_default_context(cafile=ca) if ca else None
    with urllib.request.urlopen(request, timeout=30, context=context) as response:
        return json.loads(response.read() or b"{}")


def run_status(deployer, fmt: str = "text") -> DeployResult:
    """status.py, which must plan no operation."""
    result = deployer.run(overrides={"status_format": fmt}, deploy="status.py").check()
    assert result.changed == [] and result.unchanged == [], "status.py must plan no operation"
    return result


def status_hosts(result: DeployResult) -> dict[str, dict]:
    """Inventory name -> that host's part of status.py's JSON document (status_format = "json")."""
    start = result.stdout.index('{\n  "hosts"')
    return json.loads(result.stdout[start:result.stdout.index("\n}\n", start) + 2])["hosts"]


def status_document(result: DeployResult) -> dict:
    """The one host's part of status.py's JSON document."""
    hosts = status_hosts(result)
    assert len(hosts) == 1, list(hosts)
    return next(iter(hosts.values()))


def client_env(tracking_uri: str, home: Path) -> dict:
    """MLFLOW_TRACKING_URI and the user's credentials: no S3 credentials, no endpoint, no shared filesystem."""
    return {"PATH": os.environ["PATH"], "HOME": str(home), "MLFLOW_TRACKING_URI": tracking_uri,
            "MLFLOW_TRACKING_USERNAME": E2E_ADMIN_USER, "MLFLOW_TRACKING_PASSWORD": E2E_ADMIN_PASSWORD,
            # no traffic beyond the test hosts
            "MLFLOW_DISABLE_TELEMETRY": "true", "OPENBLAS_NUM_THREADS": "1"}


def run_client(script: str, tracking_uri: str, workdir: Path, *args: str, timeout: float = 600,
               env: dict | None = None) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([PYTHON, str(Path(__file__).with_name(script)), *args], cwd=workdir,
                          env={**client_env(tracking_uri, workdir), **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stderr[-4000:]}"
    results = [line[len("RESULT="):] for line in proc.stdout.splitlines() if line.startswith("RESULT=")]
    assert len(results) == 1, proc.stdout
    return results[0]


@contextlib.contextmanager
def control_machine_hosts_entry(name: str, address: str, hosts_path: Path = Path("/etc/hosts")):
    """Make `name` resolve to `address` on this (the control) machine only, as a lab's
    clients have it in /etc/hosts or an internal zone; the target knows nothing of it.
    The file is rewritten under a lock: `make test` runs end-to-end modules side by side.
    Each line names the process that wrote it: a line left by a process that is gone (a run
    killed before its cleanup) is removed, else it would send the name to an old address."""
    marker = f"# mlflow-stack e2e {os.getpid()} {_proc_start_time(os.getpid())} {uuid.uuid4().hex}"
    with _hosts_file(hosts_path) as hosts:
        kept = [line for line in hosts.read_text().splitlines(keepends=True) if not _left_by_a_gone_process(line)]
        hosts.write_text("".join(kept) + f"{address} {name} {marker}\n")
    try:
        yield name
    finally:
        with _hosts_file(hosts_path) as hosts:
            hosts.write_text("".join(line for line in hosts.read_text().splitlines(keepends=True)
                                     if marker not in line))


def _left_by_a_gone_process(line: str) -> bool:
    parts = line.split("# mlflow-stack e2e ", 1)
    if len(parts) < 2:
        return False
    fields = parts[1].split()
    if len(fields) < 3 or not fields[0].isdigit():
        return True  # the older format, without its writer: left by an earlier run
    return str(_proc_start_time(int(fields[0]))) != fields[1]  # gone, or its pid reused


@contextlib.contextmanager
def _hosts_file(path: Path = Path("/etc/hosts")):
    with open("/run/lock/mlflow-stack-e2e-hosts.lock" if Path("/run/lock").is_dir()
              else "/tmp/mlflow-stack-e2e-hosts.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield path


def s3_client(endpoint: str, secrets: dict, verify: str | None = None):
    """`verify`: a CA file for an https endpoint (the TLS proxy's)."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", verify=verify,
                        aws_access_key_id="mlflow", aws_secret_access_key=secrets["MINIO_ROOT_PASSWORD"])


def bucket_keys(target, secrets: dict, prefix: str = "") -> list[str]:
    """Object keys in the artifact bucket, through the S3 API with the server's credentials."""
    s3 = s3_client(f"http://{target.address}:9000", secrets)
    keys, token = [], None
    while True:
        kwargs = {"Bucket": "mlflow", "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
        page = s3.list_objects_v2(**kwargs)
        keys += [obj["Key"] for obj in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return keys
        token = page["NextContinuationToken"]


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def cleanup_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def stack_warnings(document: dict) -> list[str]:
    """status.py's warnings of a host but the free space of its filesystem: a container target's
    filesystem is this machine's, shared with everything else that runs here."""
    return [warning for warning in document["warnings"] if "% free on the filesystem of" not in warning]
