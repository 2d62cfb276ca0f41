"""The proxy sends /api/2.0/mlflow/ to `mlflow-api`, MLflow's Flask app under gunicorn
(services/mlflow_api.py). That is right only while MLflow's FastAPI app (what uvicorn serves)
answers none of those paths itself: checked here against the MLflow installed for the tests,
the release the deploy pins by default. A release that moves such a route must fail this."""

from __future__ import annotations

import asyncio
import re

import pytest

from mlflow_stack.services.mlflow_api import PATH_PREFIX

FLASK_ANSWER = 299  # what the stand-in for MLflow's Flask app answers: the request reached Flask


@pytest.fixture(scope="module")
def asgi_status(monkeypatch_module):
    monkeypatch_module.setenv("MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE", "true")  # no Host check here
    from flask import Flask
    from mlflow.server.fastapi_app import create_fastapi_app

    flask_stand_in = Flask("flask_stand_in")

    @flask_stand_in.route("/<path:anything>", methods=["GET", "POST", "PATCH", "DELETE", "PUT"])
    def reached_flask(anything):
        return "flask", FLASK_ANSWER

    app = create_fastapi_app(flask_stand_in)

    def status(method: str, path: str) -> int:
        """The status MLflow's FastAPI app answers `method path` with (no body, no lifespan)."""
        started = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                started.append(message["status"])

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
                 "headers": [(b"host", b"localhost")], "server": ("localhost", 80), "client": ("127.0.0.1", 1)}
        asyncio.run(app(scope, receive, send))
        return started[0]

    return status


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def flask_routes_under(prefix: str) -> list[tuple[str, str]]:
    from mlflow.server import app as mlflow_flask_app

    routes = []
    for rule in mlflow_flask_app.url_map.iter_rules():
        if rule.rule.startswith(prefix):
            path = re.sub(r"<[^>]+>", "x", rule.rule)
            routes += [(method, path) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return routes


def test_every_tracking_api_route_is_flask_s_so_gunicorn_serves_it_whole(asgi_status):
    routes = flask_routes_under(PATH_PREFIX)
    assert ("POST", f"{PATH_PREFIX}runs/log-metric") in routes and len(routes) > 50
    taken = [(method, path, code) for method, path in routes if (code := asgi_status(method, path)) != FLASK_ANSWER]
    assert taken == [], f"MLflow's FastAPI app answers these itself; gunicorn would not serve them: {taken}"


@pytest.mark.parametrize("method, path", [("POST", "/v1/traces"), ("GET", "/api/2.0/mlflow-artifacts/artifacts/x"),
                                          ("GET", "/api/3.0/mlflow/server-info")])
def test_the_fastapi_only_routes_are_outside_the_prefix_and_answered_by_fastapi(asgi_status, method, path):
    # The probe can tell: these never reach the Flask app, so they must stay with uvicorn (mlflow).
    assert not path.startswith(PATH_PREFIX)
    assert asgi_status(method, path) != FLASK_ANSWER
