"""Prove the stack works from where pyinfra runs, then tell the user how to use it."""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import ssl
import time
import urllib.error
import urllib.request
import uuid

from pyinfra import host, state
from pyinfra.api import QuoteString, StringCommand, deploy, operation
from pyinfra.api.arguments import pop_global_arguments
from pyinfra.operations import python

from mlflow_stack.config import StackConfig, certificates, config_from_host


logger = logging.getLogger("pyinfra")
_PRIVILEGE_ARGUMENTS = ("_sudo", "_sudo_user", "_use_sudo_login", "_sudo_password", "_preserve_sudo_env", "_su_user",
                        "_use_su_login", "_preserve_su_env", "_su_shell", "_su_password", "_doas", "_doas_user",
                        "_dzdo", "_dzdo_user")


class SmokeTestError(RuntimeError):
    pass


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _plain_request(method: str, url: str, body: bytes | None = None, content_type: str = "application/json",
                   headers: dict[str, str] | None = None, ca_file: str | None = None, timeout: float = 30) -> bytes:
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Content-Type": content_type, **(headers or {})})
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        raise SmokeTestError(f"{method} {url} -> HTTP {error.code}: {error.read()[:300]!r}") from None
    except urllib.error.URLError as error:
        raise SmokeTestError(f"{method} {url} -> {error.reason}") from None
    except TimeoutError:  # a read timeout is not wrapped in URLError
        raise SmokeTestError(f"{method} {url} -> no answer within {timeout:g} s") from None
    except OSError as error:  # a connection dropped mid-answer
        raise SmokeTestError(f"{method} {url} -> {error}") from None


def request_timeout(health_timeout: int) -> int:
    """Seconds one smoke-test call may take: a host slow enough to need a longer health
    timeout (an emulated VM) answers its first calls slowly too (cold imports, the first
    password check of each worker)."""
    return max(30, health_timeout // 5)


def smoke_test(tracking_uri: str, attempts: int = 10, credentials: tuple[str, str] | None = None,
               ca_file: str | None = None, health_only: bool = False, timeout: float = 30) -> str:
    """Experiment, run, metric, artifact up and down through the proxy, then clean up, as the
    user of `credentials` (None: anonymously), trusting `ca_file` (None: the system's CAs)
    for https. Returns a one-line report; raises SmokeTestError naming the failing call."""
    api = f"{tracking_uri}/api/2.0/mlflow"
    auth = basic_auth(*credentials) if credentials else {}
    _request = functools.partial(_plain_request, ca_file=ca_file, timeout=timeout)

    def call(path: str, payload: dict) -> dict:
        return json.loads(_request("POST", f"{api}/{path}", json.dumps(payload).encode(), headers=auth) or b"{}")

    for attempt in range(attempts):  # the server may still be warming up its workers
        try:
            _request("GET", f"{tracking_uri}/health")
            break
        except SmokeTestError:
            if attempt == attempts - 1:
                raise
            time.sleep(3)
    if health_only:
        return f"health check passed through {tracking_uri}"

    experiment_id = call("experiments/create", {"name": f"pyinfra-smoke-{uuid.uuid4().hex[:12]}"})["experiment_id"]
    try:
        run = call("runs/create", {"experiment_id": experiment_id, "start_time": int(time.time() * 1000)})["run"]
        run_id = run["info"]["run_id"]
        call("runs/log-metric", {"run_id": run_id, "key": "smoke", "value": 1.0,
                                 "timestamp": int(time.time() * 1000), "step": 0})
        artifact_uri = run["info"]["artifact_uri"]
        if not artifact_uri.startswith("mlflow-artifacts:"):
            raise SmokeTestError(f"artifacts are not proxied: run artifact URI is {artifact_uri}")
        path = artifact_uri.split(":", 1)[1].lstrip("/")
        artifact = f"{tracking_uri}/api/2.0/mlflow-artifacts/artifacts/{path}/smoke.txt"
        payload = f"smoke {uuid.uuid4().hex}".encode()
        _request("PUT", artifact, payload, "application/octet-stream", headers=auth)
        echoed = _request("GET", artifact, headers=auth)
        if echoed != payload:
            raise SmokeTestError(f"artifact read back differs: sent {payload!r}, got {echoed[:80]!r}")
        _request("DELETE", artifact, headers=auth)
        call("runs/delete", {"run_id": run_id})
    finally:
        call("experiments/delete", {"experiment_id": experiment_id})
    who = f" as {credentials[0]}" if credentials else ""
    return f"smoke test passed against {tracking_uri}{who}: experiment, run, metric, artifact round trip"


def summary(config: StackConfig) -> str:
    """Where the server is and how a client gets in; where credentials are, never their values."""
    if config.role == "data":
        return (f"data host of the cluster: PostgreSQL on port {config.postgres_port} and S3 on port "
                f"{config.minio_api_port}, open to {', '.join(config.firewall_sources)} only | "
                f"secrets: {config.secrets_file} on {host.name} (root, 0600)")
    lines = [f"MLflow is at {config.tracking_uri}"]
    if config.role == "tracking" and config.cluster.public_host:
        lines = [f"tracking server of the cluster at {config.tracking_uri}; clients use the balancer: "
                 f"{'http' if config.tls == 'off' else 'https'}://{config.cluster.public_host}:{config.mlflow_port}"]
    if config.tls == "self-signed":
        lines.append(f"TLS with this deploy's own CA: clients trust {os.path.abspath(config.ca_local_path)} (copy it to "
                     "them): export REQUESTS_CA_BUNDLE=<that file> (MLFLOW_TRACKING_SERVER_CERT_PATH alone covers "
                     "the tracking API but not the presigned artifact downloads)")
    if not config.mlflow_auth:
        lines += [f"clients need only: export MLFLOW_TRACKING_URI={config.tracking_uri}",
                  "authentication is OFF (mlflow_auth = False): anyone who reaches the port can read, change "
                  "and delete every experiment, run and model"]
    else:
        lines += [f"clients: export MLFLOW_TRACKING_URI={config.tracking_uri} MLFLOW_TRACKING_USERNAME=<user> "
                  "MLFLOW_TRACKING_PASSWORD=<password>",
                  f"admin user {config.mlflow_auth_admin_user!r}: its password is MLFLOW_AUTH_ADMIN_PASSWORD in "
                  f"{config.secrets_file} on {host.name} (root, 0600); read it with: "
                  f"ssh {host.data.get('ssh_user') or 'root'}@{host.data.get('ssh_hostname') or host.name} "
                  f"sudo sed -n 's/^MLFLOW_AUTH_ADMIN_PASSWORD=//p' {config.secrets_file}"]
        if config.mlflow_auth_users:
            names = ", ".join(user.name for user in config.mlflow_auth_users)
            lines.append(f"users {names}: passwords in {config.users_file} on {host.name} (root, 0600), "
                         "one `name=password` line each")
        if config.tracking_uri.startswith("http:"):
            lines.append("WARNING: plain HTTP: user names and passwords cross the network in clear text; use the "
                         "server only on a network you trust (or through an SSH tunnel)")
    lines.append(f"secrets: {config.secrets_file} on {host.name} (root, 0600)")
    if config.tls == "files" and config.tls_cert_file:
        # The deploy renews its own certificate; the lab's own files are the lab's to renew.
        left = certificates.days_left(config.tls_cert_file)
        if left < certificates.WARN_DAYS:
            lines.append(f"WARNING: the TLS certificate {config.tls_cert_file} (tls_cert_file) expires in {left} days, "
                         f"on {certificates.expires(config.tls_cert_file):%Y-%m-%d}: put a new one in its place "
                         "and rerun the deploy")
    return " | ".join(lines)


def run_as_the_deploy(state, host, command, print_output: bool = False):
    """Run a command from a pyinfra callback as the deploy's operations run (a sudo user's
    inventory becomes root the same way); returns (ok, output) and prints nothing by default."""
    arguments, _ = pop_global_arguments(state, host, {})
    connector_arguments = {k: v for k, v in arguments.items() if k in _PRIVILEGE_ARGUMENTS}
    return host.run_shell_command(command, print_output=print_output, print_input=False, **connector_arguments)


def read_host_secret(state, host, path: str, key: str) -> str:
    """One value of a root-only env file on the host, read at execution time (so a value
    changed on this run counts) without showing it: not echoed, not in the command line."""
    command = StringCommand("sed", "-n", QuoteString(f"s/^{key}=//p"), QuoteString(path))
    ok, output = run_as_the_deploy(state, host, command)
    value = output.stdout.strip() if ok else ""
    if not value:
        raise SmokeTestError(f"cannot read {key} from {path} on {host.name}")
    return value


def _run_smoke_test(state, host, tracking_uri: str, logs_hint: str, admin: tuple[str, str, str] | None = None,
                    ca_file: str | None = None, health_only: bool = False, timeout: float = 30) -> bool:
    """pyinfra callback: True on success; on failure one error line and False, which fails
    the operation without a traceback (pyinfra uses the return value only of callbacks that
    take `state, host` first). `admin`: (user, secrets file, key of its password) when the
    server requires authentication."""
    try:
        credentials = None
        if admin:
            user, path, key = admin
            credentials = (user, read_host_secret(state, host, path, key))
        outcome = smoke_test(tracking_uri, credentials=credentials, ca_file=ca_file, health_only=health_only,
                             timeout=timeout)
        logger.info(f"{host.print_prefix}{outcome}")
        return True
    except SmokeTestError as error:
        host.log_styled(f"smoke test failed: {error}. Check that the name in the URL resolves and the port is "
                        f"reachable from here, and the server's log: {logs_hint}", fg="red", log_func=logger.error)
        return False


@operation()
def report(text: str):
    """Show text in pyinfra's output without changing anything.

    + text: what to show; " | " separates lines

    **Example:**

    .. code:: python

        report(name="Summary", text="MLflow is at http://mlflow.lab:5000")
    """
    if state.is_executing:  # not again while pyinfra looks for changes before asking
        for part in text.split(" | "):
            logger.info(f"{host.print_prefix}{part}")
    host.noop(text)
    return
    yield


def run_smoke_test(config: StackConfig, **op_args):
    """The smoke test as an operation, signed in as the admin (whose password the callback
    reads on the host) when the server requires authentication."""
    # A balancer keeps no password: through it, the health of the tracking servers behind it.
    health_only = config.role == "balancer"
    admin = (config.mlflow_auth_admin_user, config.secrets_file, "MLFLOW_AUTH_ADMIN_PASSWORD") \
        if config.mlflow_auth and not health_only else None
    return python.call(
        name=f"{'Health-check' if health_only else 'Smoke-test'} MLflow at {config.tracking_uri}",
        function=_run_smoke_test,
        tracking_uri=config.tracking_uri,
        logs_hint=f"ssh {host.name} sudo docker compose --project-name {config.compose_project} logs "
                  + " ".join(name for name in (*config.mlflow_servers, "minio", "balancer") if name in config.service_names),
        admin=admin,
        ca_file=config.ca_local_path,
        health_only=health_only,
        timeout=request_timeout(config.mlflow_health_timeout),
        **op_args,
    )


@deploy("Verify the stack from the control machine")
def verify_stack(config: StackConfig | None = None, started=None, restarted=()):
    """Smoke-test over HTTP whenever the stack was (re)started (`started`: a callable saying
    so; `restarted`: operations that restarted services), or always when run on its own;
    then print where to point clients."""
    config = config or config_from_host()
    gate = {"_if": lambda: started() or any(op.did_change() for op in restarted)} if started is not None else {}
    if config.role != "data":  # a data host runs no MLflow; its tracking servers' smoke tests use it
        run_smoke_test(config, **gate)
    report(name="Summary", text=summary(config))
