"""What each host's stack looks like now: read-only, facts only, no operation.

    pyinfra inventory.py status.py
    pyinfra inventory.py status.py --data status_format=json
"""

from mlflow_stack.config import config_from_host
from mlflow_stack.verbs.status import show_status

show_status(config_from_host())
