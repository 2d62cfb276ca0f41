"""Copy a classic MLflow data set (a file store, a SQLite file or a PostgreSQL database;
artifacts on disk) into the stack through its REST API, so every artifact goes through the proxy
into the bucket.

Run by the deploy (mlflow_stack/classic_import.py) as a one-off container of the MLflow image
on the compose network, with the old data mounted READ-ONLY:
    /classic/store      the file-store directory, or the SQLite file
    /classic/artifacts  the old artifact root directory
or, for a database, MLFLOW_STACK_CLASSIC_DATABASE = its postgresql:// URI (no password).
The old data is never opened for writing: a file store is read by MLflow's own file-store
reader; a SQLite file is copied into a temporary directory first (MLflow migrates an older
schema when it opens one); a database is opened in read-only sessions
(default_transaction_read_only), and only when its schema is the one this MLflow reads
without migrating it.

Idempotent: every imported run, logged model and model version carries the tag
mlflow_stack.imported_from = its id in the old store, and what already carries it is skipped.
Experiments are matched by name: an experiment that already exists in the stack (e.g.
"Default") receives the imported runs (merge). A registered model is matched by name too.

Usage: python import_classic.py plan|apply
    plan:  print what would be imported, as key=value lines; change nothing
    apply: import it, then print what was imported
On stdin, one line each: the admin's password (when MLFLOW_TRACKING_USERNAME is set), then the
old database's password (with MLFLOW_STACK_CLASSIC_DATABASE; an empty line for none).
"""

import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

STORE = Path("/classic/store")
ARTIFACTS = Path("/classic/artifacts")
DATABASE = os.environ.get("MLFLOW_STACK_CLASSIC_DATABASE")
# libpq's options: every transaction of the session read-only, so any write fails instead of
# changing the old database (MLflow would create missing tables or a default experiment).
READ_ONLY = "-c default_transaction_read_only=on"
IMPORTED = "mlflow_stack.imported_from"
COUNTS = ("experiments", "runs", "logged_models", "registered_models", "model_versions", "aliases")
TERMINAL = ("FINISHED", "FAILED", "KILLED")
BATCH = 1000  # log_batch's limit of metrics + params + tags per call


def read_only_database_uri(uri: str) -> str:
    """The old database's URI for psycopg2 (the image's driver), its sessions read-only."""
    from sqlalchemy.engine import make_url

    url = make_url(uri).set(drivername="postgresql+psycopg2")
    return url.update_query_dict({"options": READ_ONLY}).render_as_string(hide_password=False)


def check_database(uri: str) -> None:
    """Refuse, before MLflow opens it, an old database that is not read-only in this session or
    whose schema this MLflow would migrate (mlflow db upgrade writes; a read-only session
    would only make it fail half-way)."""
    import sqlalchemy
    from mlflow.store.db.utils import _get_latest_schema_revision

    engine = sqlalchemy.create_engine(uri)
    try:
        with engine.connect() as connection:
            read_only = connection.exec_driver_sql("SHOW default_transaction_read_only").scalar()
            revision = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    except sqlalchemy.exc.SQLAlchemyError as error:  # psycopg2's message names the cause, never the password
        raise SystemExit(f"the old database ({DATABASE}) cannot be read: {error.orig or error}")
    finally:
        engine.dispose()
    head = _get_latest_schema_revision()
    if read_only != "on":
        raise SystemExit(f"the old database ({DATABASE}) did not open read-only; nothing was imported")
    if revision != head:
        raise SystemExit(f"the old database ({DATABASE}) has MLflow schema revision {revision}; this image's MLflow "
                         f"reads {head} only and would have to migrate it, which this import never does. Copy it "
                         "(pg_dump into a new database), run `mlflow db upgrade` on the copy, and import the copy. "
                         "Nothing was imported.")
    print(f"database_read_only={read_only}")
    print(f"database_revision={revision}")


def open_source(workdir: str):
    """A client of the old store that cannot change it."""
    from mlflow import MlflowClient

    if DATABASE:
        uri = read_only_database_uri(DATABASE)
        check_database(uri)
    elif STORE.is_dir():
        # MLflow's own file-store reader (3.17 opens one only when told to). It creates .trash
        # and models/ when they are missing: it gets a private directory of links to the old
        # entries, where those two can be made. (`mlflow migrate-filestore` is not used: it
        # stops on the duplicate metric lines that a 3.x log_model writes into a file store.)
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        root = Path(workdir) / "store"
        root.mkdir()
        for entry in STORE.iterdir():
            (root / entry.name).symlink_to(entry)
        for name in (".trash", "models"):
            (root / name).mkdir(exist_ok=True)
        uri = root.as_uri()
    else:
        # A copy: MLflow migrates an older SQLite schema when it opens one. The backup API
        # reads a consistent snapshot; mode=ro never creates a journal beside the old file.
        copy = Path(workdir) / "classic.db"
        with sqlite3.connect(f"file:{STORE}?mode=ro", uri=True) as old, sqlite3.connect(copy) as new:
            old.backup(new)
        uri = f"sqlite:///{copy}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def pages(search, **kwargs):
    token = None
    while True:
        page = search(page_token=token, **kwargs)
        yield from page
        token = page.token
        if not token:
            return


def local_dir(uri: str | None) -> Path | None:
    """Where an artifact URI of the old server lies under the mounted artifact root: the
    longest tail of its path that exists there (the old server saw the root under another
    path, e.g. /app/mlruns in its container)."""
    if not uri:
        return None
    path = uri.split(":", 1)[1] if ":" in uri.split("/", 1)[0] else uri
    parts = [p for p in path.split("/") if p]
    for start in range(len(parts)):
        candidate = ARTIFACTS.joinpath(*parts[start:])
        if candidate.is_dir():
            return candidate
    return None


def has_files(path: Path | None) -> bool:
    return path is not None and any(p.is_file() for p in path.rglob("*"))


class Import:
    def __init__(self, source, stack):
        self.source, self.stack = source, stack
        self.counts = dict.fromkeys(COUNTS, 0)
        self.run_ids: dict[str, str] = {}    # old run id -> run id in the stack
        self.model_ids: dict[str, str] = {}  # old logged model id -> id in the stack

    def run(self, apply: bool) -> dict:
        from mlflow.entities import ViewType

        # Oldest first, so the stack numbers them in the old order.
        experiments = pages(self.source.search_experiments, view_type=ViewType.ALL)
        for experiment in sorted(experiments, key=lambda e: (e.creation_time or 0, e.experiment_id)):
            self.experiment(experiment, apply)
        for model in pages(self.source.search_registered_models):
            self.registered_model(model, apply)
        return self.counts

    # --- experiments, runs, logged models ---------------------------------------------------
    def experiment(self, old, apply: bool) -> None:
        from mlflow.entities import ViewType

        target = self.stack.get_experiment_by_name(old.name)
        imported = {}
        if target is not None:
            for run in pages(self.stack.search_runs, experiment_ids=[target.experiment_id],
                             run_view_type=ViewType.ALL, max_results=1000):
                if IMPORTED in run.data.tags:
                    imported[run.data.tags[IMPORTED]] = run.info.run_id
                elif apply and "mlflow_stack.importing" in run.data.tags and run.info.lifecycle_stage == "active":
                    self.stack.delete_run(run.info.run_id)  # left half-done by an interrupted import
        self.run_ids.update(imported)
        runs = [run for run in pages(self.source.search_runs, experiment_ids=[old.experiment_id],
                                     run_view_type=ViewType.ALL, max_results=1000,
                                     order_by=["attributes.start_time ASC"])
                if run.info.run_id not in imported]
        models = [model for model in pages(self.source.search_logged_models, experiment_ids=[old.experiment_id])]
        done_models = {}
        if target is not None:
            done_models = {m.tags[IMPORTED]: m.model_id
                           for m in pages(self.stack.search_logged_models, experiment_ids=[target.experiment_id])
                           if IMPORTED in m.tags}
        self.model_ids.update(done_models)
        models = [model for model in models if model.model_id not in done_models]
        self.counts["experiments"] += target is None
        self.counts["runs"] += len(runs)
        self.counts["logged_models"] += len(models)
        if not apply or (target is not None and not runs and not models):
            return

        # A deleted experiment is filled while active, then deleted again; an active one in the
        # stack that a deleted old one merges into stays active.
        deleted = target.lifecycle_stage == "deleted" if target else old.lifecycle_stage == "deleted"
        if target is None:
            tags = {**old.tags, IMPORTED: old.experiment_id}
            experiment_id = self.stack.create_experiment(old.name, tags=tags)
            target = self.stack.get_experiment(experiment_id)
        if target.lifecycle_stage == "deleted":
            self.stack.restore_experiment(target.experiment_id)
        for run in runs:
            self.copy_run(run, target.experiment_id)
        for model in models:
            self.copy_logged_model(model, target.experiment_id)
        if deleted:
            self.stack.delete_experiment(target.experiment_id)

    def copy_run(self, old, experiment_id: str) -> None:
        from mlflow.entities import Metric, Param, RunTag

        info, data = old.info, old.data
        tags = {key: value for key, value in data.tags.items() if key != "mlflow.runName"}
        new = self.stack.create_run(experiment_id, start_time=info.start_time, run_name=info.run_name,
                                    tags={"mlflow_stack.importing": info.run_id})
        run_id = new.info.run_id
        # dict.fromkeys: a file store can hold the same value twice (3.x log_model logs them again).
        metrics = list(dict.fromkeys(Metric(m.key, m.value, m.timestamp, m.step)
                                     for key in data.metrics for m in self.source.get_metric_history(info.run_id, key)))
        params = [Param(key, value) for key, value in data.params.items()]
        run_tags = [RunTag(key, value) for key, value in tags.items()]
        for start in range(0, len(metrics), BATCH):
            self.stack.log_batch(run_id, metrics=metrics[start:start + BATCH])
        for start in range(0, len(params), 100):
            self.stack.log_batch(run_id, params=params[start:start + 100])
        for start in range(0, len(run_tags), 100):
            self.stack.log_batch(run_id, tags=run_tags[start:start + 100])
        folder = local_dir(info.artifact_uri)
        if has_files(folder):
            self.stack.log_artifacts(run_id, str(folder))
        if info.status in TERMINAL:
            self.stack.set_terminated(run_id, info.status, end_time=info.end_time)
        # Last: a run interrupted before this line is imported again on the next run.
        self.stack.set_tag(run_id, IMPORTED, info.run_id)
        self.stack.delete_tag(run_id, "mlflow_stack.importing")
        if info.lifecycle_stage == "deleted":
            self.stack.delete_run(run_id)
        self.run_ids[info.run_id] = run_id
        print(f"run {info.run_id} -> {run_id} ({len(metrics)} metric values)", file=sys.stderr, flush=True)

    def copy_logged_model(self, old, experiment_id: str) -> None:
        new = self.stack.create_logged_model(
            experiment_id, name=old.name, source_run_id=self.run_ids.get(old.source_run_id),
            tags={**old.tags, IMPORTED: old.model_id}, params=old.params or None, model_type=old.model_type)
        folder = local_dir(old.artifact_location)
        if has_files(folder):
            self.stack.log_model_artifacts(new.model_id, str(folder))
        self.stack.finalize_logged_model(new.model_id, old.status)
        self.model_ids[old.model_id] = new.model_id
        print(f"logged model {old.model_id} -> {new.model_id}", file=sys.stderr, flush=True)

    # --- the model registry -----------------------------------------------------------------
    def registered_model(self, old, apply: bool) -> None:
        from mlflow.exceptions import MlflowException

        try:
            target = self.stack.get_registered_model(old.name)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            target = None
        query = f"name = '{old.name}'"
        done = {}
        if target is not None:
            done = {v.tags[IMPORTED]: v.version for v in pages(self.stack.search_model_versions, filter_string=query)
                    if IMPORTED in v.tags}
        versions = sorted(pages(self.source.search_model_versions, filter_string=query), key=lambda v: int(v.version))
        missing = [v for v in versions if f"{old.name}/{v.version}" not in done]
        aliases = {alias: version for alias, version in old.aliases.items()
                   if target is None or alias not in target.aliases}
        self.counts["registered_models"] += target is None
        self.counts["model_versions"] += len(missing)
        self.counts["aliases"] += len(aliases)
        if not apply:
            return
        if target is None:
            self.stack.create_registered_model(old.name, tags=old.tags, description=old.description)
        numbers = {key.rsplit("/", 1)[1]: version for key, version in done.items()}
        for version in missing:
            source = self.version_source(version)
            # The server wants the logged model's id with a models:/ source (a SQLite store's
            # versions may not carry it themselves).
            model_id = source[len("models:/"):] if source.startswith("models:/m-") else None
            new = self.stack.create_model_version(
                old.name, source, run_id=self.run_ids.get(version.run_id),
                tags={**version.tags, IMPORTED: f"{old.name}/{version.version}"}, description=version.description,
                model_id=model_id)
            if version.current_stage and version.current_stage != "None":
                self.stack.transition_model_version_stage(old.name, new.version, version.current_stage)
            numbers[str(version.version)] = new.version
        for alias, version in aliases.items():
            self.stack.set_registered_model_alias(old.name, alias, numbers[str(version)])

    def version_source(self, version) -> str:
        """The version's source in the stack: the imported logged model or run, never a path
        of the old server."""
        source = version.source
        if source.startswith("models:/") and source[len("models:/"):] in self.model_ids:
            return f"models:/{self.model_ids[source[len('models:/'):]]}"
        if source.startswith("runs:/"):
            run_id, _, path = source[len("runs:/"):].partition("/")
            return f"runs:/{self.run_ids.get(run_id, run_id)}/{path}"
        if version.run_id in self.run_ids:
            # A path inside the old run's artifacts, e.g. <old artifact URI of the run>/model.
            old_run = self.source.get_run(version.run_id)
            if source.startswith(old_run.info.artifact_uri):
                return f"runs:/{self.run_ids[version.run_id]}{source[len(old_run.info.artifact_uri):]}"
        if getattr(version, "model_id", None) in self.model_ids:
            return f"models:/{self.model_ids[version.model_id]}"
        raise SystemExit(f"model version {version.name}/{version.version}: its source {source!r} is neither a run's "
                         "artifact nor a logged model; nothing can upload it")


def main() -> None:
    mode = sys.argv[1]
    if os.environ.get("MLFLOW_TRACKING_USERNAME"):
        os.environ["MLFLOW_TRACKING_PASSWORD"] = sys.stdin.readline().rstrip("\n")
    if DATABASE:
        password = sys.stdin.readline().rstrip("\n")
        if password:
            os.environ["PGPASSWORD"] = password  # libpq reads it; the URI never holds it
    from mlflow import MlflowClient

    started = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="classic-")
    try:
        counts = Import(open_source(workdir), MlflowClient()).run(apply=mode == "apply")
    except Exception as error:
        cause = getattr(error, "orig", None)
        if DATABASE and "read-only transaction" in str(cause):
            raise SystemExit(f"MLflow tried to write to the old database ({DATABASE}) while opening it (it creates "
                             f"tables it misses); the read-only session refused: {str(cause).strip()}. Nothing was "
                             "changed there; is it an MLflow database of this schema?") from None
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for key in COUNTS:
        print(f"{key}={counts[key]}")
    print(f"seconds={time.monotonic() - started:.1f}")


if __name__ == "__main__":
    main()
