"""Bring the tracking database's schema to the revision this MLflow expects, before the
server starts (run once by compose, like the bucket init). Does nothing when the schema is
already current or the database is still empty (the server creates its tables itself);
refuses a schema this MLflow does not know (a newer release made it: no downgrade exists).
The deploy takes a backup first whenever it plans a migration.

The backend URI comes from the environment (MLFLOW_BACKEND_STORE_URI), never from argv.
"""

import importlib.metadata
import os
import sys
import time

import sqlalchemy


def has_schema(uri: str) -> bool | None:
    """Whether the database has alembic's version table, asked with SQLAlchemy alone: importing
    MLflow takes seconds (34 s in the VM test's emulated CPU), and a new server's database has
    nothing to check. None when that cannot be told here: MLflow's own check decides."""
    try:
        engine = sqlalchemy.create_engine(uri)
        try:
            return sqlalchemy.inspect(engine).has_table("alembic_version")
        finally:
            engine.dispose()
    except Exception:
        return None


URI = os.environ["MLFLOW_BACKEND_STORE_URI"]
if has_schema(URI) is False:
    print(f"no MLflow schema yet: MLflow {importlib.metadata.version('mlflow')} creates it at its first start")
    sys.exit(0)

from alembic.script import ScriptDirectory  # noqa: E402 (only when there is a schema to check)
from mlflow.store.db import utils  # noqa: E402
from mlflow.version import VERSION  # noqa: E402

engine = utils.create_sqlalchemy_engine_with_retry(URI)
current = utils._get_schema_version(engine)
script = ScriptDirectory.from_config(utils._get_alembic_config("postgresql://"))
head = script.get_current_head()

if current is None:
    print(f"no MLflow schema yet: MLflow {VERSION} creates it at its first start")
elif current == head:
    print(f"schema revision {current} is the one MLflow {VERSION} expects")
elif current not in {revision.revision for revision in script.walk_revisions()}:
    print(f"refusing to start: the database has schema revision {current}, which MLflow {VERSION} "
          f"(revision {head}) does not know: a newer MLflow made it, and MLflow cannot downgrade. "
          "Set mlflow_version back, or restore the backup taken before the upgrade.", file=sys.stderr)
    sys.exit(3)
else:
    started = time.monotonic()
    utils._upgrade_db(engine)
    print(f"migrated the schema from revision {current} to {head} (MLflow {VERSION}) "
          f"in {time.monotonic() - started:.1f} s")
