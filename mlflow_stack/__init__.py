"""pyinfra deploy of an MLflow tracking server with PostgreSQL and MinIO, in layers:

- config/    every setting, its rule and the typed StackConfig (nothing touches a host)
- services/  one module per service: when a host runs it, what it needs, its compose entry
- facts/     what is read from a host (custom facts, and all of them in one round trip)
- steps/     what deploy.py calls, one module per concern
- verbs/     what the other entry points call (backup, restore, classic import, status, uninstall)

Templates (templates/*.j2) and verbatim files (files/host: run on the host; files/image: in the
MLflow image) live outside the package. Each @deploy function can run alone:
``pyinfra inventory.py mlflow_stack.steps.docker_engine.install_docker``.
"""
