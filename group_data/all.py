"""Overrides for every host; empty means every setting keeps its default.

Every setting, its default and what it means: docs/configuration.md (generated from
mlflow_stack/config/settings.py by tools/settings_doc.py). Set a key here to change it on
every host, in group_data/<group>.py for the hosts of one inventory group, per host in
inventory.py (e.g. {"mlflow_port": 8080}), or for one run with `pyinfra --data key=value`.
An override replaces the whole value (no deep merge); a near-miss of a setting's name is refused.
"""

# What labs change most (uncomment and edit; together these lines are a valid config on every
# supported release):
# mlflow_public_host = "mlflow.lab.example.org"
# mlflow_public_names = ["10.0.0.5", "mlflow"]
# mlflow_port = 8080
# minio_api_port = 9100
# stack_dir = "/srv/mlflow-lab"
# pip_index_url = "https://pypi.mirror.example.org/simple"
# gc_keep_deleted_runs = "30d"   # deleted runs (and their artifacts) removed for good after 30 days
# metrics_networks = ["10.0.5.0/24"]   # where the lab's Prometheus scrapes /metrics/... from

# Docker from the distribution instead of Docker's apt repo: only on Debian 13 and Ubuntu 24.04.
# Debian 12 and Ubuntu 22.04 ship no Compose v2, and the deploy stops there with an error.
# docker_source = "distro"
