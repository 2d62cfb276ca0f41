"""The health checks that run every 5 s in every stack, run here for real against a local HTTP
server: MLflow's (services/model.answers_http, in bash: no interpreter started each time) and
the stand-in MinIO's `mc ready` (tools/standins/images/minio/mc, in bash for the same reason)."""

from __future__ import annotations

import contextlib
import http.server
import subprocess
import threading

import pytest
import yaml

from mlflow_stack.services.model import answers_http
from mlflow_stack.steps.stack_files import compose_file

from .helpers import REPO, make_config

MC = REPO / "tools" / "standins" / "images" / "minio" / "mc"


@contextlib.contextmanager
def server(statuses: dict[str, int]):
    """127.0.0.1:<port> answering each path with its status (404 for others); yields (port, paths asked)."""
    asked = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append((self.path, self.headers.get("Host")))
            self.send_response(statuses.get(self.path, 404))
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1], asked
    finally:
        httpd.shutdown()
        httpd.server_close()


def probe(port: int, path: str = "/health") -> int:
    command = answers_http(port, path)[-1]
    return subprocess.run(["bash", "-c", command], capture_output=True, timeout=10).returncode


@pytest.mark.parametrize("status, healthy", [(200, True), (503, False), (401, False)])
def test_the_http_probe_passes_on_200_only(status, healthy):
    with server({"/health": status}) as (port, asked):
        assert (probe(port) == 0) is healthy
    assert asked == [("/health", f"127.0.0.1:{port}")]


def test_the_http_probe_fails_when_nothing_listens():
    with server({}) as (port, _):
        pass
    assert probe(port) != 0


@pytest.mark.parametrize("tls", ["off", "self-signed"])
def test_every_mlflow_server_is_checked_by_the_bash_probe(tls):
    config = make_config(tls=tls)
    services = yaml.safe_load(compose_file(config))["services"]
    assert len(config.mlflow_servers) == (1 if tls == "off" else 2)
    for name in config.mlflow_servers:
        assert services[name]["healthcheck"]["test"] == answers_http(5000, "/health"), name


def mc(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(MC), *args], capture_output=True, text=True, timeout=20, env=env or {})


def test_the_stand_in_mc_is_ready_when_minio_s_health_answers_200():
    with server({"/minio/health/ready": 200}) as (port, asked):
        result = mc("ready", "local", env={"MC_HOST_local": f"http://user:secret@127.0.0.1:{port}"})
    assert result.returncode == 0 and "The cluster 'local' is ready" in result.stdout
    assert asked == [("/minio/health/ready", f"127.0.0.1:{port}")]


def test_the_stand_in_mc_falls_back_to_live_then_reports_unreachable():
    with server({"/minio/health/live": 200}) as (port, asked):
        assert mc("ready", "local", env={"MC_HOST_local": f"http://127.0.0.1:{port}"}).returncode == 0
    assert [path for path, _ in asked] == ["/minio/health/ready", "/minio/health/live"]
    with server({}) as (port, _):
        down = mc("ready", "local", env={"MC_HOST_local": f"http://127.0.0.1:{port}"})
    assert down.returncode == 1 and "unreachable" in down.stderr


def test_the_stand_in_mc_refuses_unknown_aliases_and_commands():
    assert mc("ready", "elsewhere").returncode == 1
    assert mc("ls", "local").returncode == 2
