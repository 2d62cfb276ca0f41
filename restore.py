"""Restore a backup onto each host: the same server or a fresh one (another name, bucket or
prefix is fine). Refuses, changing nothing, when the host already holds runs, unless
restore_overwrite = True.

    pyinfra inventory.py restore.py --data restore_from=backups/<host>/mlflow-backup-<time>
"""

from pyinfra import local

from mlflow_stack.config import config_from_host
from mlflow_stack.verbs.restore import refuse_to_overwrite, restore_backup

config = config_from_host()
# While planning, before the deploy below changes anything.
refuse_to_overwrite(config)
# The stack is deployed first (on a fresh host: installed and started with its own secrets).
local.include("deploy.py")
restore_backup(config)
