"""Import of a classic MLflow data set (issue 11), on one container target over SSH with the
real pyinfra CLI. The stack is deployed; on the target, the MLflow client inside the built
MLflow image writes a classic data set the way the classic setup does (a store and `file://`
artifacts on a bind mount, seen as /app in the container); `import_classic.py` brings it in; a
client on this machine finds everything through the stack. First a file store, then a SQLite
store with one large artifact, whose experiments have the same names (merged).

The tests share the target and run in order.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from .support import Deployer, read_secrets, run_client, s3_client

pytestmark = pytest.mark.e2e

FILE_STORE = "/srv/classic-fs"      # the old server's bind mount: /app in its container
SQLITE_STORE = "/srv/classic-sqlite"
LARGE = 256 * 1024 * 1024
COUNTED = "2 experiments, 6 runs, 2 logged models, 1 registered models, 2 model versions, 1 aliases"


def make_classic_data(target, directory: str, uri: str, model: str, large: int = 0) -> dict:
    """tests/e2e/classic_data.py in the stack's MLflow image, as root (as classic containers
    run), the host directory mounted at /app."""
    script = (Path(__file__).parent / "classic_data.py").read_text()
    target.ssh(f"mkdir -p {directory} /srv/classic-tools && printf %s {shlex.quote(script)} > "
               "/srv/classic-tools/classic_data.py")
    image = "$(docker inspect -f '{{.Config.Image}}' $(docker compose --project-name mlflow ps -q mlflow))"
    out = target.ssh(f"docker run --rm --user 0:0 -v {directory}:/app -v /srv/classic-tools:/tools:ro -w /app "
                     f"-e MLFLOW_ALLOW_FILE_STORE=true -e MLFLOW_DISABLE_TELEMETRY=true {image} "
                     f"python /tools/classic_data.py {uri} {model} {large}", timeout=900).stdout
    return json.loads(next(line[7:] for line in out.splitlines() if line.startswith("RESULT=")))


def tree_digest(target, directory: str) -> str:
    """Every path, size, mode and mtime, and every file's content, of the old data."""
    return target.ssh(f"cd {directory} && {{ find . -printf '%p %s %m %T@\\n' | sort; "
                      "find . -type f -print0 | sort -z | xargs -0 sha256sum; } | sha256sum").stdout


@pytest.fixture(scope="module")
def deployer(container_target, settings, tmp_path_factory):
    deployer = Deployer(container_target, settings, workdir=tmp_path_factory.mktemp("deploy-import"))
    deployer.run().check()
    return deployer


def distinct(metrics: dict) -> dict:
    return {key: list(dict.fromkeys(map(tuple, values))) for key, values in metrics.items()}


def check_imported(made: dict, found: dict, model: str) -> None:
    imported = found["runs"]
    assert set(made["runs"]) <= set(imported)
    for source, experiment in made["runs"].items():
        run = imported[source]
        assert run["experiment"] == experiment
        # steps, timestamps, values; the file store holds some twice (3.x log_model logs them again)
        assert distinct(run["metrics"]) == distinct(made["metrics"][source])
        assert run["times"] == made["times"][source]
        assert run["lifecycle"] == ("deleted" if source in made["deleted"] else "active")
        assert run["artifact_uri"].startswith("mlflow-artifacts:/"), run["artifact_uri"]
    assert all(not e["location"].startswith("file:") for e in found["experiments"].values()), found["experiments"]
    assert found["aliases"] == {"champion": "2"}
    assert found["versions"]["1"]["stage"] == "Archived"
    assert {v["run_id"] for v in found["versions"].values()} == {imported[r]["id"] for r in made["model_runs"]}
    assert found["predict_by_alias"] == pytest.approx(41.0) and found["predict_by_run"] == pytest.approx(41.0)
    assert found["notes"] == "slope 4.0\n"


def test_file_store_is_imported_once_and_left_unchanged(container_target, deployer, tmp_path, record):
    target = container_target
    made = make_classic_data(target, FILE_STORE, "file:///app/mlruns", "classic-model")
    before = tree_digest(target, FILE_STORE)
    store = {"classic_backend_store": f"{FILE_STORE}/mlruns"}

    dry = deployer.run(overrides=store, deploy="import_classic.py", extra_args=("--dry",)).check()
    assert f"Import {FILE_STORE}/mlruns into the stack: {COUNTED}" in dry.stdout + dry.stderr

    imported = deployer.run(overrides=store, deploy="import_classic.py").check()
    record("import_file_store_seconds", round(imported.seconds, 1))
    assert f"Import a classic MLflow data set | Import {FILE_STORE}/mlruns into the stack: {COUNTED}" \
        in imported.changed, imported.changed

    found = json.loads(run_client("client_read_imported.py", f"http://{target.address}:5000", tmp_path / "client",
                                  "classic-model", made["model_runs"][-1]))
    check_imported(made, found, "classic-model")
    assert found["experiments"]["classic-training"]["tags"]["team"] == "vision"
    # The artifacts are objects in the bucket now.
    s3 = s3_client(f"http://{target.address}:9000", read_secrets(target))
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow", Prefix="artifacts/")["Contents"]]
    assert sum(key.endswith("/MLmodel") for key in keys) == 2, keys
    assert sum(key.endswith("/notes/summary.txt") for key in keys) == 3, keys

    again = deployer.run(overrides=store, deploy="import_classic.py").check()
    record("import_rerun_seconds", round(again.seconds, 1))
    assert again.changed == [], again.changed
    assert deployer.run().check().changed == []
    assert tree_digest(target, FILE_STORE) == before


def test_sqlite_store_with_a_large_artifact_merges_into_same_named_experiments(container_target, deployer,
                                                                                tmp_path, record):
    target = container_target
    made = make_classic_data(target, SQLITE_STORE, "sqlite:////app/mlflow.db", "classic-sqlite-model", LARGE)
    before = tree_digest(target, SQLITE_STORE)
    # Artifacts default to the SQLite file's directory (/app/mlruns in the old container).
    store = {"classic_backend_store": f"{SQLITE_STORE}/mlflow.db"}

    imported = deployer.run(overrides=store, deploy="import_classic.py").check()
    record("import_sqlite_with_256mib_seconds", round(imported.seconds, 1))
    counted = "6 runs, 2 logged models, 1 registered models, 2 model versions, 1 aliases"  # experiments exist
    assert f"Import a classic MLflow data set | Import {SQLITE_STORE}/mlflow.db into the stack: {counted}" \
        in imported.changed, imported.changed

    found = json.loads(run_client("client_read_imported.py", f"http://{target.address}:5000", tmp_path / "client",
                                  "classic-sqlite-model", made["model_runs"][-1]))
    check_imported(made, found, "classic-sqlite-model")
    large = found["runs"][made["model_runs"][-1]]
    assert "data" in large["artifacts"]
    s3 = s3_client(f"http://{target.address}:9000", read_secrets(target))
    key = f"artifacts/{large['artifact_uri'].split(':/', 1)[1]}/data/large.bin"
    assert s3.head_object(Bucket="mlflow", Key=key)["ContentLength"] == LARGE

    again = deployer.run(overrides=store, deploy="import_classic.py").check()
    assert again.changed == [], again.changed
    assert tree_digest(target, SQLITE_STORE) == before
