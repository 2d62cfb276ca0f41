"""pyinfra deploy steps for an MLflow tracking server with PostgreSQL and MinIO.

Each module is one concern; each @deploy function can run alone:
``pyinfra inventory.py mlflow_stack.docker_engine.install_docker``.
"""
