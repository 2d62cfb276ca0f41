"""The last lines of every service's log (or one's), on each host: read-only, no operation.

    pyinfra inventory.py logs.py                                  # 100 lines of every service
    pyinfra inventory.py logs.py --data logs_service=mlflow --data logs_lines=500
    pyinfra inventory.py logs.py --limit mlflow.lab.example.org   # one host
"""

from mlflow_stack.config import config_from_host
from mlflow_stack.verbs.status import show_logs

show_logs(config_from_host())
