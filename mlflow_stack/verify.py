"""Prove the stack works from where pyinfra runs, then tell the user how to use it."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
import uuid

from pyinfra import host, state
from pyinfra.api import deploy, operation
from pyinfra.operations import python

from mlflow_stack.config import StackConfig, config_from_host


logger = logging.getLogger("pyinfra")


class SmokeTestError(RuntimeError):
    pass


def _request(method: str, url: str, body: bytes | None = None, content_type: str = "application/json") -> bytes:
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        raise SmokeTestError(f"{method} {url} -> HTTP {error.code}: {error.read()[:300]!r}") from None
    except urllib.error.URLError as error:
        raise SmokeTestError(f"{method} {url} -> {error.reason}") from None


def smoke_test(tracking_uri: str, attempts: int = 10) -> str:
    """Experiment, run, metric, artifact up and down through the proxy, then clean up.
    Returns a one-line report; raises SmokeTestError naming the failing call."""
    api = f"{tracking_uri}/api/2.0/mlflow"

    def call(path: str, payload: dict) -> dict:
        return json.loads(_request("POST", f"{api}/{path}", json.dumps(payload).encode()) or b"{}")

    for attempt in range(attempts):  # the server may still be warming up its workers
        try:
            _request("GET", f"{tracking_uri}/health")
            break
        except SmokeTestError:
            if attempt == attempts - 1:
                raise
            time.sleep(3)

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
        _request("PUT", artifact, payload, "application/octet-stream")
        echoed = _request("GET", artifact)
        if echoed != payload:
            raise SmokeTestError(f"artifact read back differs: sent {payload!r}, got {echoed[:80]!r}")
        _request("DELETE", artifact)
        call("runs/delete", {"run_id": run_id})
    finally:
        call("experiments/delete", {"experiment_id": experiment_id})
    return f"smoke test passed against {tracking_uri}: experiment, run, metric, artifact round trip"


def summary(config: StackConfig) -> str:
    return (
        f"MLflow is at {config.tracking_uri} | clients need only: "
        f"export MLFLOW_TRACKING_URI={config.tracking_uri} | "
        f"secrets: {config.secrets_file} on {host.name} (root, 0600)"
    )


def _run_smoke_test(state, host, tracking_uri: str, logs_hint: str) -> bool:
    """pyinfra callback: True on success; on failure one error line and False, which fails
    the operation without a traceback (pyinfra uses the return value only of callbacks that
    take `state, host` first)."""
    try:
        logger.info(f"{host.print_prefix}{smoke_test(tracking_uri)}")
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


@deploy("Verify the stack from the control machine")
def verify_stack(config: StackConfig | None = None, started=None):
    """Smoke-test over HTTP whenever the stack was (re)started (`started`: a callable saying
    so), or always when run on its own; then print where to point clients."""
    config = config or config_from_host()
    gate = {"_if": started} if started is not None else {}
    python.call(
        name=f"Smoke-test MLflow at {config.tracking_uri}",
        function=_run_smoke_test,
        tracking_uri=config.tracking_uri,
        logs_hint=f"ssh {host.name} sudo docker compose --project-name {config.compose_project} logs mlflow minio",
        **gate,
    )
    report(name="Summary", text=summary(config))
