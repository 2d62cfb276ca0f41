"""Take the MLflow stack off each host, keeping its data (a later deploy.py brings it back).

    pyinfra inventory.py uninstall.py
    pyinfra inventory.py uninstall.py --data uninstall_data=True --data uninstall_confirm=<the host's inventory name>
"""

from mlflow_stack.config import config_from_host
from mlflow_stack.verbs.uninstall import uninstall

uninstall(config_from_host())
