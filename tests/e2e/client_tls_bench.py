"""A remote client measuring what a user feels: log_metric latency, and an artifact of
argv[1] MB uploaded (log_artifact) and downloaded again (download_artifacts, verified).
MLFLOW_TRACKING_URI and the credentials (and REQUESTS_CA_BUNDLE for TLS) come from the
environment, as do MLflow's own switches (presigned multipart, its threshold). Prints
RESULT=<json>."""

import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import requests

size = int(sys.argv[1]) * 1000 * 1000
work = Path(tempfile.mkdtemp(dir="."))
upload = work / "blob.bin"
digest = hashlib.sha256()
with open(upload, "wb") as handle:
    for _ in range(size // (1 << 20)):
        block = os.urandom(1 << 20)
        digest.update(block)
        handle.write(block)
    rest = os.urandom(size % (1 << 20))
    digest.update(rest)
    handle.write(rest)

# The same round trip without MLflow's password check (basic-auth hashes it on every call).
session = requests.Session()
health = []
for _ in range(30):
    started = time.perf_counter()
    session.get(os.environ["MLFLOW_TRACKING_URI"] + "/health", timeout=30).raise_for_status()
    health.append(time.perf_counter() - started)

mlflow.set_experiment("e2e-tls-bench")
with mlflow.start_run() as run:
    mlflow.log_metric("warm-up", 0.0)
    latencies = []
    for step in range(30):
        started = time.perf_counter()
        mlflow.log_metric("latency", float(step), step=step)
        latencies.append(time.perf_counter() - started)
    started = time.perf_counter()
    mlflow.log_artifact(str(upload), artifact_path="bench")
    upload_seconds = time.perf_counter() - started
started = time.perf_counter()
local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="bench/blob.bin",
                                            dst_path=str(work / "down"))
download_seconds = time.perf_counter() - started
check = hashlib.sha256()
with open(local, "rb") as handle:
    for block in iter(lambda: handle.read(1 << 20), b""):
        check.update(block)
assert check.hexdigest() == digest.hexdigest(), "downloaded bytes differ"
print("RESULT=" + json.dumps({"log_metric_ms_median": round(statistics.median(latencies) * 1000, 1),
                              "health_ms_median": round(statistics.median(health) * 1000, 1),
                              "upload_MBps": round(size / 1e6 / upload_seconds, 1),
                              "download_MBps": round(size / 1e6 / download_seconds, 1)}))
