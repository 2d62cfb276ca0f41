"""The data host's firewall alone (mlflow_stack/steps/firewall.py), for tests/e2e/test_firewall.py.

    pyinfra INVENTORY tests/e2e/data_firewall.py
    (host data: role, firewall_sources, firewall_ports: the settings the step reads)
"""

from types import SimpleNamespace

from pyinfra import host

from mlflow_stack.config import config_from_host
from mlflow_stack.steps.firewall import restrict_published_ports

config = config_from_host()
restrict_published_ports(SimpleNamespace(
    stack_dir=config.stack_dir, role=host.data.role,
    firewall_sources=tuple(host.data.firewall_sources), firewall_ports=tuple(host.data.firewall_ports)))
