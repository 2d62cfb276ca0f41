"""Import a classic MLflow data set found on each host (the old server's file store or SQLite
file, and its artifact directory, both only read) into the stack: experiments, runs with
their metric histories, artifacts (into the bucket, through the proxy), logged models and
the model registry. A second run imports nothing. `--dry` shows the counts.

    pyinfra inventory.py import_classic.py --data classic_backend_store=/srv/old-mlflow/mlruns
"""

from pyinfra import local

from mlflow_stack.verbs.classic_import import check_import_source, import_classic, import_plan
from mlflow_stack.config import config_from_host

config = config_from_host()
# While planning, before the deploy below changes anything: the old data must be there.
plan = import_plan(config)
check_import_source(config, plan)
# The stack is deployed first (on a fresh host: installed and started with its own secrets).
local.include("deploy.py")
import_classic(config, plan=plan)
