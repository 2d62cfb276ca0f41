"""Back every host up: the tracking database (pg_dump -Fc), then every artifact through the
S3 API, with a manifest; written on the host (backup_dir) and pulled here (backup_local_dir).

    pyinfra inventory.py backup.py
"""

from mlflow_stack.verbs.backup import back_up
from mlflow_stack.config import config_from_host

back_up(config_from_host())
