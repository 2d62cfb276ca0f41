"""Import a classic MLflow data set found on the host (a file store or a SQLite file, or a
PostgreSQL database; artifacts in a directory) into the deployed stack, through its REST API:
files/image/import_classic.py in a one-off container of the MLflow image on the compose network,
the old data mounted read-only, an old database opened in read-only sessions.

    pyinfra inventory.py import_classic.py --data classic_backend_store=/srv/old/mlruns
"""

from __future__ import annotations

import posixpath

from pyinfra import host
from pyinfra.api import DeployError, FactBase, QuoteString, StringCommand, deploy, operation

from mlflow_stack.config.checks import is_database_uri
from mlflow_stack.config import ConfigError, StackConfig, config_from_host
from mlflow_stack.facts.host import key_values, running_container
from mlflow_stack.steps.secrets import secret_file

# What the importer counts, in its output's order (files/image/import_classic.py, COUNTS).
COUNTS = ("experiments", "runs", "logged_models", "registered_models", "model_versions", "aliases")
# Inside the importer's container (the script's STORE and ARTIFACTS).
STORE_MOUNT = "/classic/store"
ARTIFACTS_MOUNT = "/classic/artifacts"
# With TLS, uploads of 500 MiB and more go by presigned URLs to the public name, through the
# proxy: the importer's requests trust the stack's CA (the only HTTPS peer it has).
CA_MOUNT = "/etc/mlflow-stack/ca.crt"


def artifact_root(config: StackConfig) -> str:
    """A file store keeps its artifacts in itself by default; a SQLite server's sit beside the file."""
    return config.classic_artifact_root or posixpath.dirname(config.classic_backend_store)


def importer_command(config: StackConfig, mode: str) -> StringCommand:
    """The importer as a one-off container: on its stdin, the admin's password from the
    root-only secrets file, then the old database's password from its root-only file (see
    database_password_file); never in argv. The old data read-only. It runs as root inside the
    container only to read whatever owner the old files have; the mounts are read-only."""
    q = QuoteString
    database = is_database_uri(config.classic_backend_store)
    feed = (["sed", "-n", q("s/^MLFLOW_AUTH_ADMIN_PASSWORD=//p"), q(config.secrets_file), ";"]
            if config.mlflow_auth else []) + (["cat", q(database_password_file(config)), ";"] if database else [])
    stdin = ["{", *feed, "}", "|"] if feed else ["true", "|"]
    auth = ["-e", q(f"MLFLOW_TRACKING_USERNAME={config.mlflow_auth_admin_user}")] if config.mlflow_auth else []
    store = (["-e", q(f"MLFLOW_STACK_CLASSIC_DATABASE={config.classic_backend_store}")] if database
             else ["-v", q(f"{config.classic_backend_store}:{STORE_MOUNT}:ro")])
    tls = (["-v", q(f"{config.tls_dir}/ca.crt:{CA_MOUNT}:ro"), "-e", q(f"REQUESTS_CA_BUNDLE={CA_MOUNT}")]
           if config.tls != "off" else [])
    return StringCommand(
        *stdin,
        "docker", "compose", "--project-directory", q(config.stack_dir), "--project-name", q(config.compose_project),
        "run", "--rm", "--no-deps", "-T", "--user", "0:0", *store,
        "-v", q(f"{artifact_root(config)}:{ARTIFACTS_MOUNT}:ro"), *tls,
        "-e", q(f"MLFLOW_TRACKING_URI={config.internal_tracking_uri}"), *auth,
        "-e", "MLFLOW_DISABLE_TELEMETRY=true",
        "jobs", "python", "/opt/mlflow-stack/import_classic.py", mode,
    )


def database_password_file(config: StackConfig) -> str:
    """The old database's password on the host (root, 0600), kept like the stack's secrets:
    the plan fact and the import read it there. (pyinfra prints a fact's stdin at -vvv.)"""
    return f"{config.stack_dir}/classic-database.password"


class ClassicImportPlan(FactBase):
    """What the importer would bring in, asked while planning (its `plan` mode changes
    nothing): ``{"state": "ready", "runs": 5, ...}`` with every count of COUNTS; ``state`` is
    ``"missing-store"`` / ``"missing-artifacts"`` when a path is not on the host,
    ``"not-running"`` when MLflow is not up (yet), ``"failed"`` when the plan failed (the
    import then runs and shows why)."""

    def command(self, store: str, artifacts: str, project: str, plan_command: str) -> StringCommand:
        q = QuoteString
        # A database is not a path on the host: the importer itself reports it unreachable.
        store_check = [] if is_database_uri(store) else [
            "test", "-e", q(store), "||", "{", "echo", "state=missing-store;", "exit", "0;", "};"]
        return StringCommand(
            *store_check,
            "test", "-d", q(artifacts), "||", "{", "echo", "state=missing-artifacts;", "exit", "0;", "};",
            running_container(project, "mlflow"), "||", "{", "echo", "state=not-running;", "exit", "0;", "};",
            "{", plan_command, "2>/dev/null", "&&", "echo", "state=ready;", "}", "||", "echo", "state=failed",
        )

    def process(self, output):
        return parse_plan(output)


def parse_plan(output) -> dict:
    found = key_values(output)
    plan: dict = {"state": found.get("state", "failed")}
    for key in COUNTS:
        value = found.get(key, "")
        plan[key] = int(value) if value.isdigit() else None
    return plan


def describe(plan: dict) -> str:
    """'2 experiments, 5 runs, ...' (nonzero counts only), or why the counts are unknown."""
    if plan["state"] != "ready":
        return {"not-running": "counted once the stack runs", "failed": "counts unknown"}.get(plan["state"],
                                                                                          plan["state"])
    parts = [f"{plan[key]} {key.replace('_', ' ')}" for key in COUNTS if plan.get(key)]
    return ", ".join(parts) or "nothing"


def require_source(config: StackConfig) -> None:
    if config.classic_backend_store is None:
        raise ConfigError("classic_backend_store is not set: pass the old server's backend store on the host, e.g. "
                          "--data classic_backend_store=/srv/old-mlflow/mlruns (a file-store directory, a SQLite "
                          "file, or a postgresql://USER@HOST/DATABASE URI)")


def check_import_source(config: StackConfig, plan: dict) -> None:
    """While planning, before the deploy changes anything."""
    require_source(config)
    if plan["state"] == "missing-store":
        raise DeployError(f"on {host.name}: classic_backend_store = {config.classic_backend_store!r} does not exist "
                          "there. Nothing was changed.")
    if plan["state"] == "missing-artifacts":
        raise DeployError(f"on {host.name}: the artifact root {artifact_root(config)!r} (classic_artifact_root) is "
                          "not a directory there. Nothing was changed.")


def import_plan(config: StackConfig) -> dict:
    require_source(config)
    return host.get_fact(ClassicImportPlan, store=config.classic_backend_store, artifacts=artifact_root(config),
                         project=config.compose_project, plan_command=importer_command(config, "plan").get_raw_value())


@operation(is_idempotent=False)
def import_classic_data(command: StringCommand, plan: dict):
    """Run the importer unless the plan, read while planning, says there is nothing to import.

    + command: the importer's `apply` command
    + plan: the ClassicImportPlan fact; counts unknown (stack not running yet) means run it

    **Example:**

    .. code:: python

        import_classic_data(name="Import the classic MLflow data", command=cmd, plan=plan)
    """
    if plan["state"] == "ready" and not any(plan[key] for key in COUNTS):
        host.noop("nothing to import: everything is already in the stack")
        return
    yield command


@deploy("Import a classic MLflow data set")
def import_classic(config: StackConfig | None = None, plan: dict | None = None):
    config = config or config_from_host()
    plan = plan or import_plan(config)
    check_import_source(config, plan)
    if is_database_uri(config.classic_backend_store):
        # Written from stdin (an operation's stdin is never printed); on a first run the plan
        # fact could not read it yet, so its counts are unknown and the import runs.
        secret_file(name="Keep the old database's password (root, 0600)", path=database_password_file(config),
                    content=f"{config.classic_database_password or ''}\n".encode(), user="root", group="root")
    import_classic_data(name=f"Import {config.classic_backend_store} into the stack: {describe(plan)}",
                        command=importer_command(config, "apply"), plan=plan)
