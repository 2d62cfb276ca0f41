"""files/image/import_classic.py against real MLflow stores, no server: an old file store made by
the MLflow client, copied into a SQLite store standing in for the stack (the importer takes any
MlflowClient as its destination; the e2e test gives it the stack's REST API)."""

from __future__ import annotations

import hashlib
import importlib.util
from unittest import mock
from pathlib import Path

import pytest

from .helpers import REPO


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        digest.update(f"{path.relative_to(root)} {stat.st_size} {stat.st_mode} {stat.st_mtime_ns}".encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def importer(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("import_classic", REPO / "files" / "image" / "import_classic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "STORE", tmp_path / "old")
    monkeypatch.setattr(module, "ARTIFACTS", tmp_path / "old")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    # A SQLite store's default artifact root is ./mlruns: inside tmp_path, not the checkout.
    monkeypatch.chdir(tmp_path)
    return module


@pytest.fixture
def old_store(tmp_path, importer) -> dict:
    """A classic file store: one experiment, a finished run with a metric history and an
    artifact, a deleted run, a registered model version from the run with an alias."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    uri = (tmp_path / "old").as_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("training", tags={"team": "vision"})
    run = client.create_run(experiment, start_time=1000, run_name="first").info.run_id
    client.log_batch(run, metrics=[Metric("loss", 1.0, 1001, 0), Metric("loss", 0.5, 1002, 1)])
    client.log_param(run, "lr", "0.1")
    client.log_text(run, "weights", "model/weights.txt")
    client.set_terminated(run, "FINISHED", end_time=2000)
    deleted = client.create_run(experiment, start_time=1500).info.run_id
    client.delete_run(deleted)
    client.create_registered_model("classic")
    client.create_model_version("classic", f"runs:/{run}/model", run_id=run)
    client.set_registered_model_alias("classic", "champion", "1")
    return {"client": client, "run": run, "deleted": deleted}


def workdir(tmp_path) -> str:
    """The importer's temporary directory (tempfile.mkdtemp in main)."""
    (tmp_path / "work").mkdir()
    return str(tmp_path / "work")


def stack_client(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/stack.db"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def imported_runs(stack) -> dict:
    from mlflow.entities import ViewType

    experiment = stack.get_experiment_by_name("training")
    runs = stack.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    tag = "mlflow_stack.imported_from"
    return {run.data.tags[tag]: run for run in runs if tag in run.data.tags}


def test_everything_is_copied_once_and_the_old_store_is_left_as_it_was(importer, old_store, tmp_path):
    stack = stack_client(tmp_path)
    (tmp_path / "old" / ".trash").rmdir()  # a store whose reader would create it
    before = tree_digest(tmp_path / "old")
    source = importer.open_source(workdir(tmp_path))

    counts = {"experiments": 1, "runs": 2, "logged_models": 0, "registered_models": 1, "model_versions": 1,
              "aliases": 1}
    assert importer.Import(source, stack).run(apply=False) == counts
    assert importer.Import(source, stack).run(apply=True) == counts
    assert importer.Import(source, stack).run(apply=False) == dict.fromkeys(counts, 0)

    runs = imported_runs(stack)
    first, deleted = runs[old_store["run"]], runs[old_store["deleted"]]
    assert [(m.step, m.timestamp, m.value) for m in stack.get_metric_history(first.info.run_id, "loss")] \
        == [(0, 1001, 1.0), (1, 1002, 0.5)]
    assert (first.info.start_time, first.info.end_time, first.info.status) == (1000, 2000, "FINISHED")
    assert first.data.params == {"lr": "0.1"} and first.info.run_name == "first"
    assert "mlflow_stack.importing" not in first.data.tags
    assert deleted.info.lifecycle_stage == "deleted"
    assert [f.path for f in stack.list_artifacts(first.info.run_id, "model")] == ["model/weights.txt"]
    assert stack.get_experiment_by_name("training").tags["team"] == "vision"
    version = stack.get_model_version_by_alias("classic", "champion")
    assert (str(version.version), version.source, version.run_id) == \
        ("1", f"runs:/{first.info.run_id}/model", first.info.run_id)
    assert tree_digest(tmp_path / "old") == before
    assert not (tmp_path / "old" / ".trash").exists()


def test_a_run_left_half_copied_is_replaced(importer, old_store, tmp_path):
    stack = stack_client(tmp_path)
    source = importer.open_source(workdir(tmp_path))
    experiment = stack.create_experiment("training")
    half = stack.create_run(experiment, tags={"mlflow_stack.importing": old_store["run"]}).info.run_id

    assert importer.Import(source, stack).run(apply=True)["runs"] == 2
    assert stack.get_run(half).info.lifecycle_stage == "deleted"
    assert imported_runs(stack)[old_store["run"]].info.run_id != half


def test_a_sqlite_store_is_read_from_a_copy(importer, old_store, tmp_path, monkeypatch):
    """An old SQLite file is copied before MLflow opens it (MLflow would migrate an older schema in place)."""
    from mlflow import MlflowClient

    old_db = tmp_path / "old.db"
    MlflowClient(tracking_uri=f"sqlite:///{old_db}").create_experiment("from-sqlite")
    before = hashlib.sha256(old_db.read_bytes()).hexdigest()
    monkeypatch.setattr(importer, "STORE", old_db)
    source = importer.open_source(workdir(tmp_path))
    assert source.get_experiment_by_name("from-sqlite") is not None
    assert source.tracking_uri == f"sqlite:///{tmp_path / 'work' / 'classic.db'}"
    assert hashlib.sha256(old_db.read_bytes()).hexdigest() == before


def test_a_deleted_experiment_stays_deleted_and_an_active_one_it_merges_into_stays_active(importer, tmp_path):
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    uri = (tmp_path / "old").as_uri()
    old = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for name in ("gone", "kept"):
        experiment = old.create_experiment(name)
        old.set_terminated(old.create_run(experiment).info.run_id)
        old.delete_experiment(experiment)
    stack = stack_client(tmp_path)
    stack.create_experiment("kept")

    assert importer.Import(importer.open_source(workdir(tmp_path)), stack).run(apply=True)["runs"] == 2
    gone, kept = stack.get_experiment_by_name("gone"), stack.get_experiment_by_name("kept")
    assert (gone.lifecycle_stage, kept.lifecycle_stage) == ("deleted", "active")
    runs = stack.search_runs([gone.experiment_id, kept.experiment_id], run_view_type=ViewType.ALL)
    # The old store reports the runs of a deleted experiment as deleted: so are their copies.
    assert sorted((run.info.experiment_id, run.info.lifecycle_stage) for run in runs) \
        == sorted([(gone.experiment_id, "deleted"), (kept.experiment_id, "deleted")])


def test_an_old_database_is_opened_by_psycopg2_in_read_only_sessions(importer):
    uri = importer.read_only_database_uri("postgresql://old@postgres:5432/classic?sslmode=require")
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    assert url.drivername == "postgresql+psycopg2" and url.password is None
    assert dict(url.query) == {"options": "-c default_transaction_read_only=on", "sslmode": "require"}


class FakeConnection:
    """What check_database asks a PostgreSQL session, answered from `answers`."""

    def __init__(self, answers):
        self.answers = answers

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def exec_driver_sql(self, sql):
        return mock.Mock(scalar=mock.Mock(return_value=self.answers[sql]))


@pytest.fixture
def old_database(importer, monkeypatch):
    """The importer with a fake engine; returns the answers to edit."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    answers = {"SHOW default_transaction_read_only": "on",
               "SELECT version_num FROM alembic_version": _get_latest_schema_revision()}
    engine = mock.Mock(connect=lambda: FakeConnection(answers))
    monkeypatch.setattr("sqlalchemy.create_engine", lambda uri: engine)
    monkeypatch.setattr(importer, "DATABASE", "postgresql://old@postgres/classic")
    return answers


def test_an_old_database_of_this_mlflow_s_schema_in_a_read_only_session_is_read(importer, old_database, capsys):
    importer.check_database("postgresql+psycopg2://old@postgres/classic")
    assert "database_read_only=on" in capsys.readouterr().out


def test_an_old_database_of_another_schema_revision_is_refused_before_mlflow_opens_it(importer, old_database):
    old_database["SELECT version_num FROM alembic_version"] = "0584bdc529eb"  # MLflow 2.22
    with pytest.raises(SystemExit, match="schema revision 0584bdc529eb; this image's MLflow reads .* only and would "
                                         "have to migrate it.*Nothing was imported"):
        importer.check_database("postgresql+psycopg2://old@postgres/classic")


def test_a_session_that_is_not_read_only_is_refused(importer, old_database):
    old_database["SHOW default_transaction_read_only"] = "off"
    with pytest.raises(SystemExit, match="did not open read-only; nothing was imported"):
        importer.check_database("postgresql+psycopg2://old@postgres/classic")
