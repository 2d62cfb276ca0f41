"""A data host's stand-in for tests/e2e/test_firewall.py: Docker installed as the deploy does,
the stand-in images loaded, and one web server published on the data host's ports (5432 and
9000) plus a port the firewall is not told about (8080), on a network of its own as compose
makes one.

    pyinfra INVENTORY tests/e2e/published_services.py   (host data: the suite's settings)
"""

from pyinfra.operations import server

from mlflow_stack.config import config_from_host
from mlflow_stack.steps.docker_engine import install_docker
from mlflow_stack.steps.stack import load_image_archives
from tools.standins.build import STANDIN_IMAGES

# As PID 1 in its container Python ignores SIGTERM unless told: the host's shutdown would wait 90 s.
WEB_SERVER = ("import signal, sys, http.server; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); "
              "http.server.test(http.server.SimpleHTTPRequestHandler, port=5432)")

config = config_from_host()
install_docker(config)
load_image_archives(config)
server.shell(name="Publish a web server on ports 5432, 9000 and 8080", commands=[
    "docker rm -f published >/dev/null 2>&1 || true",
    "docker network inspect data-net >/dev/null 2>&1 || docker network create data-net",
    "docker run -d --name published --network data-net --restart unless-stopped "
    f"-p 5432:5432 -p 9000:5432 -p 8080:5432 {STANDIN_IMAGES['python']} python3 -c '{WEB_SERVER}'",
])
