"""Overrides for every host; empty means every setting keeps its default.

Every setting, its default and what it means: the "Settings" table of README.md (defined in
mlflow_stack/settings.py, which a unit test keeps equal to it). Set a key here to change it on
every host, in group_data/<group>.py for the hosts of one inventory group, per host in
inventory.py (e.g. {"mlflow_port": 8080}), or for one run with `pyinfra --data key=value`.
An override replaces the whole value (no deep merge); a near-miss of a setting's name is refused.
"""

# What labs change most (uncomment and edit; together these lines are a valid config):
# mlflow_public_host = "mlflow.lab.example.org"
# mlflow_public_names = ["10.0.0.5", "mlflow"]
# mlflow_port = 8080
# minio_api_port = 9100
# stack_dir = "/srv/mlflow-lab"
# docker_source = "distro"
# pip_index_url = "https://pypi.mirror.example.org/simple"
# gc_keep_deleted_runs = "30d"   # deleted runs (and their artifacts) removed for good after 30 days
