"""Defaults for every host. Override per group (group_data/<group>.py), per host (inventory.py)
or for one run (`pyinfra --data key=value`). Each key is mirrored in README.md's settings table.
Keys are flat and component-prefixed; an override replaces the whole value (no deep merge)."""

# --- Docker engine -------------------------------------------------------------------------
# "official": Docker's own apt repo (docker-ce + compose plugin), works on Debian 12/13 and
# Ubuntu 22.04/24.04. "distro": the distribution's packages, only where they ship Compose v2
# (Debian 13 docker.io + docker-compose, Ubuntu 24.04 docker.io + docker-compose-v2).
docker_source = "official"
# Base URL of Docker's apt repo; "/debian" or "/ubuntu" is appended. Point it at a mirror if needed.
docker_apt_url = "https://download.docker.com/linux"
# json-file log rotation for every container: size of one file, number of files kept.
docker_log_max_size = "10m"
docker_log_max_file = 3
# Keep containers running while dockerd restarts (daemon.json "live-restore").
docker_live_restore = True
# Local `docker save` tarballs uploaded and loaded before the stack starts: for air-gapped
# servers, or images built elsewhere. Empty: images are pulled from their registries.
docker_image_archives = []
# Local PEM files the host and the MLflow image build trust in addition to the system CAs
# (hosts behind a TLS-intercepting proxy, private registries or package mirrors).
extra_ca_certificates = []

# --- Service account and layout ------------------------------------------------------------
# Directory on the host holding compose.yaml, the build context, secrets and data/.
stack_dir = "/srv/mlflow"
# Name of the compose project (prefix of container names).
compose_project = "mlflow"
# System user/group every container runs as; owns data/postgres, data/minio, data/mlruns.
# The ids sit outside Debian's dynamic system range (100-999) so they cannot clash with
# accounts that packages create later.
stack_user = "mlflow"
stack_uid = 10001
stack_gid = 10001

# --- MLflow --------------------------------------------------------------------------------
# MLflow release installed from PyPI into the image built on the host.
mlflow_version = "3.17.2"
# Pinned companions installed next to MLflow: the PostgreSQL driver (the backend URI names
# psycopg2 explicitly: SQLAlchemy 2.1 maps a plain postgresql:// to psycopg 3) and the S3 client.
mlflow_psycopg2_version = "2.9.11"
mlflow_boto3_version = "1.44.8"
# Repository of the MLflow image built on the host; the tag is derived from its inputs.
mlflow_image = "mlflow-stack/mlflow"
# Base image of the MLflow Dockerfile (Debian-based, with pip).
python_image = "python:3.12-slim"
# Package index used by pip during the image build (a mirror or proxy can stand in).
pip_index_url = "https://pypi.org/simple"
# Address and port the MLflow server is published on.
mlflow_bind_address = "0.0.0.0"
mlflow_port = 5000
# Name clients use to reach this server (tracking URI and the S3 endpoint MLflow hands to
# clients). None: the inventory host name.
mlflow_public_host = None
# More DNS names / IPs clients may use; all are allowed as Host headers.
mlflow_public_names = []
# uvicorn workers. 1 keeps per-request latency low (several workers add ~44 ms per call
# from clients that keep their connection open; uvicorn issue #3149).
mlflow_workers = 1
# MLflow 3 sends anonymous usage telemetry by default; lab servers often may not phone home.
mlflow_disable_telemetry = True
# Seconds to wait for every service to become healthy after (re)starting the stack.
mlflow_health_timeout = 300

# --- PostgreSQL (backend store) ------------------------------------------------------------
postgres_image = "postgres:17"
postgres_db = "mlflow"
postgres_user = "mlflow"
# None: generated on the host on the first run and kept there (mode 0600). Or set it here, or
# in the environment of the pyinfra run as MLFLOW_STACK_POSTGRES_PASSWORD.
postgres_password = None

# --- MinIO (artifact store) ----------------------------------------------------------------
# MinIO's community edition is in maintenance; any S3 server with MinIO's env contract fits.
minio_image = "minio/minio:RELEASE.2025-09-07T16-13-09Z"
minio_root_user = "mlflow"
# None: generated on the host on first run. Or set it, or MLFLOW_STACK_MINIO_ROOT_PASSWORD.
minio_root_password = None
# The S3 API: MLflow 3.17 clients download artifacts with presigned URLs that point at it,
# so it must be reachable by clients (it never hands out credentials).
minio_api_bind_address = "0.0.0.0"
minio_api_port = 9000
# The web console, published on 127.0.0.1 only (use an SSH tunnel).
minio_console_port = 9001
# Bucket and key prefix of the artifact store.
minio_bucket = "mlflow"
minio_bucket_prefix = "artifacts"

# --- Secrets -------------------------------------------------------------------------------
# Generated passwords to replace with new ones on this run, e.g.
# `pyinfra inventory.py deploy.py --data rotate_secrets=postgres_password,minio_root_password`.
# A one-off request: leave it empty here (set here, every run would rotate again).
rotate_secrets = []
