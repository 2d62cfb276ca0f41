"""Provision an MLflow tracking server (PostgreSQL backend, MinIO artifacts) on each host, or
the part of a cluster its inventory group gives it (inventory.py).

    pyinfra inventory.py deploy.py
"""

from mlflow_stack.facts import prefetch
from mlflow_stack.steps.auth import ensure_user_passwords, sync_users
from mlflow_stack.config import config_from_host
from mlflow_stack.steps.docker_engine import install_docker
from mlflow_stack.steps.firewall import restrict_published_ports
from mlflow_stack.facts.planned import planned_facts
from mlflow_stack.steps.schedules import schedule_backups, schedule_gc
from mlflow_stack.steps.secrets import ensure_secrets
from mlflow_stack.steps.service_account import create_service_account
from mlflow_stack.steps.stack import apply_database_password, load_image_archives, start_stack
from mlflow_stack.steps.stack_files import upload_stack_files
from mlflow_stack.steps.tls import ensure_certificates, reload_certificates
from mlflow_stack.steps.upgrades import protect_data
from mlflow_stack.steps.verify import verify_stack

# Validate everything first: a bad setting stops the run before the host is touched.
config = config_from_host()
# What the steps below read of the host, in one round trip instead of one per fact.
prefetch.prefetch(planned_facts(config))

install_docker(config)
restrict_published_ports(config)  # a cluster's data host: its published ports for the cluster only
create_service_account(config)
secrets = ensure_secrets(config)
user_passwords = ensure_user_passwords(config)
stack_files = upload_stack_files(config)
certificates = ensure_certificates(config)
archives = load_image_archives(config)
db_password = apply_database_password(config, secrets=secrets)
backup = protect_data(config)
started = start_stack(config, changed=[secrets, db_password, backup, *stack_files, *archives])
reloaded = reload_certificates(config, certificates)
sync_users(config, changed=[secrets, user_passwords])
schedule_backups(config)
schedule_gc(config)
verify_stack(config, started=started, restarted=reloaded)
