"""The configuration layer: every setting (settings.py) with its check (checks.py), the rules
across settings (rules.py), the typed, frozen StackConfig (model.py) and the load that turns a
host's data into one (load.py). Nothing here runs an operation."""

from mlflow_stack.config.load import ConfigError, config_from_host, load_config
from mlflow_stack.config.model import StackConfig, worker_count
from mlflow_stack.config.rules import CONFIG_KEYS

__all__ = ["CONFIG_KEYS", "ConfigError", "StackConfig", "config_from_host", "load_config", "worker_count"]
