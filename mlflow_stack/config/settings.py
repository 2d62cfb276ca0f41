"""Every setting of the stack, defined once: its default, the rule its value must follow and
its one-line doc (docs/configuration.md is generated from them by tools/settings_doc.py; a
unit test keeps the two equal).

Host data overrides a default: group_data/<group>.py, the inventory, or `pyinfra --data
key=value`. Keys are flat and component-prefixed; an override replaces the whole value (no
deep merge). Adding a setting: one typed line in `Settings` here (StackConfig inherits it), then
`python tools/settings_doc.py` to regenerate the docs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable

from mlflow_stack.config import checks
from mlflow_stack.config.checks import Check
from mlflow_stack.services import ON_DEMAND_SERVICES, SECRET_FILE_KEYS, SERVICE_NAMES

# Secret setting -> the environment variable that may carry it into a run without putting it
# in a file. The secret settings are the secrets file's keys (mlflow_stack/services/) in lower case.
SECRET_ENV_VARS = {key.lower(): f"MLFLOW_STACK_{key}" for key in SECRET_FILE_KEYS}
# Secrets only handed to one run (on stdin), never kept on the host: an environment variable too.
PASSED_SECRET_ENV_VARS = {"classic_database_password": "MLFLOW_STACK_CLASSIC_DATABASE_PASSWORD"}
# Settings whose value may hold a password: an error message never shows it.
HIDDEN_SETTINGS = (*SECRET_ENV_VARS, *PASSED_SECRET_ENV_VARS, "mlflow_auth_users")


@dataclass(frozen=True)
class AuthUser:
    """A user of mlflow_auth_users, as the config keeps it."""
    name: str
    permission: str
    password: str | None = field(default=None, repr=False)  # None: generated on the host


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    check: Check
    doc: str
    # How a valid value is kept in the config; lists become tuples because the config is frozen.
    read: Callable[[Any], Any] | None = None
    # For one run of a verb (restore, import, status, rotation...), not the host's lasting state.
    run_parameter: bool = False
    section: str = ""  # the docs' heading (docs/configuration.md)


def section(title: str) -> Callable[..., Any]:
    """The field maker of one docs section: `name: type = maker(default, check, doc, ...)` in
    Settings declares a setting, its type for the config and its rule, default and doc here."""

    def setting(default: Any, check: Check, doc: str, *, read: Callable[[Any], Any] | None = None,
                run_parameter: bool = False) -> Any:
        # No dataclass default: the config is built from every setting's value (config/load.py).
        return field(metadata={"setting": Setting("", default, check, doc, read, run_parameter, title)})

    return setting


def settings_table(settings_class: type) -> tuple[Setting, ...]:
    """Settings' fields as the table the load, the rules and the docs read, in their order."""
    return tuple(replace(f.metadata["setting"], name=f.name) for f in fields(settings_class))


def _names(value) -> tuple[str, ...]:
    return tuple(checks.split_names(value))


_ID_RANGE = "an integer from 1000 to 59999 (outside system and reserved ranges)"
_SQL_NAME = "letters, digits and '_', starting with a letter or '_' (max 63)"

docker_setting = section("Docker engine")
layout_setting = section("Service account and layout")
mlflow_setting = section("MLflow")
postgres_setting = section("PostgreSQL (backend store)")
minio_setting = section("MinIO (artifact store)")
auth_setting = section("Authentication")
backup_setting = section("Backup and restore")
status_setting = section("Status and logs")
uninstall_setting = section("Uninstall")
secrets_setting = section("Secrets")
gc_setting = section("Housekeeping (mlflow gc)")
external_setting = section("External backends (instead of the bundled PostgreSQL and MinIO)")
import_setting = section("Import of a classic MLflow data set")
tls_setting = section("TLS")
metrics_setting = section("Metrics")
cluster_setting = section("Cluster")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting, in the docs' order: its type, then (setting()) its default, rule and doc."""

    # Docker engine
    docker_source: str = docker_setting("official", checks.one_of("official", "distro"),
        "`\"official\"`: Docker's apt repo (Debian 12/13, Ubuntu 22.04/24.04). `\"distro\"`: the "
        "distribution's packages where they ship Compose v2 (Debian 13 `docker.io` + `docker-compose`, "
        "Ubuntu 24.04 `docker.io` + `docker-compose-v2`); elsewhere a clear error.")
    docker_apt_url: str = docker_setting("https://download.docker.com/linux", checks.url,
        "Docker's apt repo (`/debian` or `/ubuntu` appended); a mirror can stand in.")
    docker_log_max_size: str = docker_setting("10m",
        checks.pattern(checks.LOG_SIZE, "a size like '10m' (digits then k, m or g)"),
        "json-file log rotation: size of one file.")
    docker_log_max_file: int = docker_setting(3, checks.int_range(1, 100),
        "json-file log rotation: files kept.")
    docker_live_restore: bool = docker_setting(True, checks.boolean,
        "Containers keep running while dockerd restarts.")
    docker_image_archives: tuple[str, ...] = docker_setting([], checks.local_files,
        "Local `docker save` tarballs uploaded and loaded before the start (air-gapped servers); each is "
        "loaded once, kept on the host under a name made from its content. A host that has an archive's "
        "images already (same ids and tags) gets neither the upload nor the load.", read=tuple)
    extra_ca_certificates: tuple[str, ...] = docker_setting([], checks.local_files,
        "Local PEM files trusted by the host and the MLflow image build (TLS-intercepting proxy, private "
        "mirror).", read=tuple)

    # Service account and layout
    stack_dir: str = layout_setting("/srv/mlflow", checks.absolute_safe_dir,
        "Compose file, build context, secrets and `data/` on the host.")
    compose_project: str = layout_setting("mlflow",
        checks.pattern(checks.COMPOSE_PROJECT, "lowercase letters, digits, '_' and '-', starting with a letter or digit"),
        "Compose project name (container name prefix).")
    stack_user: str = layout_setting("mlflow",
        checks.pattern(checks.USER_NAME, "a user name: lowercase letter or '_' first, then lowercase letters, "
                                         "digits, '_' or '-' (max 32)"),
        "The account every container runs as; owns `data/*`.")
    # The ids sit outside Debian's dynamic system range (100-999) so they cannot clash with
    # accounts that packages create later.
    stack_uid: int = layout_setting(10001, checks.int_range(1000, 59999, _ID_RANGE),
        "Its uid (outside Debian's dynamic system range; refused if taken by another name).")
    stack_gid: int = layout_setting(10001, checks.int_range(1000, 59999, _ID_RANGE),
        "Its gid (same rules).")

    # MLflow
    mlflow_version: str = mlflow_setting("3.17.2", checks.supported_release,
        "MLflow release: one of the supported 3.5.0 to 3.17.2 (each has a lock in `locks/`); with `mlflow_auth` "
        "(the default) 3.16.1 or newer, the first whose basic-auth takes the admin password from the "
        "environment; see docs/upgrades.md.")
    # The companions are inputs of tools/lock_mlflow.py; config.py checks they equal the lock's pins.
    mlflow_psycopg2_version: str = mlflow_setting("2.9.11",
        checks.pattern(checks.RELEASE_VERSION, "a release version like '2.9.11'"),
        "PostgreSQL driver; the backend URI says `postgresql+psycopg2://` (SQLAlchemy 2.1 would pick psycopg 3 "
        "for a plain `postgresql://`). Must equal the lock's pin (an input of `tools/lock_mlflow.py`).")
    mlflow_boto3_version: str = mlflow_setting("1.44.8",
        checks.pattern(checks.RELEASE_VERSION, "a release version like '1.44.8'"),
        "S3 client of the server and the bucket init. Must equal the lock's pin.")
    mlflow_image: str = mlflow_setting("mlflow-stack/mlflow",
        checks.pattern(checks.REPOSITORY, "an image repository without tag, e.g. 'mlflow-stack/mlflow'"),
        "Repository of the image built on the host; the tag is `<version>-<hash of its inputs>`, so it is "
        "rebuilt only when an input changes.")
    python_image: str = mlflow_setting("python:3.12-slim",
        checks.pattern(checks.IMAGE, "an image reference like 'python:3.12-slim'"),
        "Base image of the MLflow Dockerfile.")
    pip_index_url: str = mlflow_setting("https://pypi.org/simple", checks.url,
        "Package index for the image build.")
    mlflow_bind_address: str = mlflow_setting("0.0.0.0", checks.address,
        "Address MLflow is published on.")
    mlflow_port: int = mlflow_setting(5000, checks.int_range(1, 65535),
        "Port MLflow is published on.")
    mlflow_public_host: str | None = mlflow_setting(None, checks.optional_host_name,
        "Name clients use (tracking URI and S3 endpoint in presigned URLs); `None`: the inventory host name. "
        "Needs to resolve only on the clients.")
    mlflow_public_names: tuple[str, ...] = mlflow_setting([],
        checks.list_of(checks.host_name, "a list of DNS names or IP addresses"),
        "More names/IPs clients may use (allowed Host headers).", read=tuple)
    # Behind the TLS proxy (a new upstream connection per request) more workers add throughput;
    # a keep-alive client of uvicorn itself waits ~44 ms per call with more than one (uvicorn #3149).
    mlflow_workers: int | None = mlflow_setting(None, checks.optional(checks.int_range(1, 64)),
        "Worker processes of MLflow's tracking API, ~220 MiB each. `None`: 4 behind the TLS proxy (gunicorn, "
        "`mlflow-api`), 1 without it (uvicorn: clients that keep their connection to uvicorn open wait ~44 ms "
        "per call with more, uvicorn #3149).")
    # The UI, artifact up/downloads (streamed, asynchronous) and traces: light next to tracking calls.
    mlflow_ui_workers: int = mlflow_setting(1, checks.int_range(1, 64),
        "Behind the TLS proxy: MLflow (uvicorn) worker processes for everything but the tracking API (the UI, "
        "artifacts, traces), ~240 MiB each.")
    # MLflow's default pool (5, overflow 10) opens and closes a connection per request under load,
    # each paying PostgreSQL's SCRAM handshake in CPU on both ends.
    mlflow_db_pool_size: int = mlflow_setting(5, checks.int_range(1, 100),
        "Database connections each MLflow worker keeps open per store (tracking, registry, users); a request "
        "beyond them waits for one. The database must allow workers x 3 x this many (the bundled one: 90).")
    # Lab servers often may not phone home.
    mlflow_disable_telemetry: bool = mlflow_setting(True, checks.boolean,
        "Switch off MLflow 3's usage telemetry from the server.")
    mlflow_health_timeout: int = mlflow_setting(300, checks.int_range(10, 3600),
        "Seconds to wait for all services to be healthy after a start.")
    # A probe is a process started in the container: ~0.06 s of CPU on a server, ~1.3 s under
    # software emulation, where a probe every 2 s of each starting service slowed their start.
    mlflow_health_start_interval: int = mlflow_setting(2, checks.int_range(1, 60),
        "Seconds between health probes of a starting service (then every 30 s), and between the deploy's looks "
        "while it waits. Each starts a process; a very slow host (software emulation) starts faster with 10-20.")

    # PostgreSQL (backend store)
    postgres_image: str = postgres_setting("postgres:17",
        checks.pattern(checks.IMAGE, "an image reference like 'postgres:17'"),
        "PostgreSQL image.")
    postgres_db: str = postgres_setting("mlflow", checks.pattern(checks.SQL_IDENTIFIER, _SQL_NAME),
        "Database name.")
    postgres_user: str = postgres_setting("mlflow", checks.pattern(checks.SQL_IDENTIFIER, _SQL_NAME),
        "Database user.")
    # A generated password is kept on the host (mode 0600) and reused on later runs.
    postgres_password: str | None = postgres_setting(None, checks.optional_password,
        "`None`: generated on the host; or set it like any setting, or `MLFLOW_STACK_POSTGRES_PASSWORD` in pyinfra's "
        "environment.")

    # MinIO (artifact store)
    minio_image: str = minio_setting("minio/minio:RELEASE.2025-09-07T16-13-09Z",
        checks.pattern(checks.IMAGE, "an image reference like 'minio/minio:RELEASE.2025-09-07T16-13-09Z'"),
        "S3 server image. MinIO's community edition is in maintenance; any image with MinIO's env contract "
        "(`MINIO_ROOT_USER`/`_PASSWORD`, `server /data`, `mc ready local`) fits.")
    minio_root_user: str = minio_setting("mlflow",
        checks.pattern(checks.MINIO_USER, "3-64 characters of letters, digits, '_' and '-'"),
        "S3 access key used by MLflow.")
    minio_root_password: str | None = minio_setting(None, checks.optional_password,
        "`None`: generated on the host; or set it like any setting, or `MLFLOW_STACK_MINIO_ROOT_PASSWORD`.")
    # MLflow 3.17 clients download artifacts with presigned URLs that point at the S3 API, so it
    # must be reachable by clients (it never hands out credentials).
    minio_api_bind_address: str = minio_setting("0.0.0.0", checks.address,
        "Address the S3 API is published on (clients fetch presigned URLs from it).")
    minio_api_port: int = minio_setting(9000, checks.int_range(1, 65535),
        "Port of the S3 API.")
    minio_console_port: int = minio_setting(9001, checks.int_range(1, 65535),
        "MinIO console, on 127.0.0.1 only (SSH tunnel).")
    minio_bucket: str = minio_setting("mlflow", checks.bucket,
        "Artifact bucket (created if missing; with `s3_endpoint_url` it must exist).")
    minio_bucket_prefix: str = minio_setting("artifacts",
        checks.pattern(checks.KEY_PREFIX, "a key prefix like 'artifacts' (no leading or trailing '/', no empty parts)"),
        "Key prefix in the bucket.")

    # Authentication
    mlflow_auth: bool = auth_setting(True, checks.boolean,
        "MLflow's basic authentication (`--app-name basic-auth`): every call needs a user name and password "
        "(`MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`). `False`: anyone who reaches the port may "
        "read and write everything.")
    mlflow_auth_admin_user: str = auth_setting("admin",
        checks.pattern(checks.AUTH_USER, "lowercase letters, digits, '_' and '-', starting with a letter (max 64)"),
        "The MLflow admin account (manages users and permissions; the smoke test uses it).")
    mlflow_auth_admin_password: str | None = auth_setting(None, checks.optional_password,
        "`None`: generated on the host; or set it like any setting, or `MLFLOW_STACK_MLFLOW_AUTH_ADMIN_PASSWORD`. "
        "Applied to MLflow's user store on every change.")
    mlflow_flask_server_secret_key: str | None = auth_setting(None, checks.optional_password,
        "Signs the web UI's sessions and CSRF tokens. `None`: generated on the host.")
    # Without it every call pays a deliberately slow password hash (~280 ms here, 6 req/s for 16
    # clients); the cache never outlives a password change or a deletion (cached_basic_auth.py).
    mlflow_auth_cache_seconds: int = auth_setting(300, checks.int_range(0, 86400),
        "How long a verified password is remembered per MLflow process, so later calls skip its slow hash "
        "check (~280 ms of CPU). A changed password, a deleted user or a removed admin flag holds from the next "
        "call regardless (the user's row is read on every call). `0`: check the hash on every call.")
    mlflow_auth_default_permission: str = auth_setting("READ", checks.one_of(*checks.AUTH_PERMISSIONS),
        "What every user may do with any experiment or model (its creator gets `MANAGE`); a floor: MLflow never "
        "grants less, so a `READ` user needs `NO_PERMISSIONS` or `READ` here.")
    # Each listed user's password is kept in a root-only file on the host (auth.py).
    mlflow_auth_users: tuple[AuthUser, ...] = auth_setting([], checks.auth_users,
        "Users the deploy creates and keeps: `[{\"name\": \"alice\", \"permission\": \"EDIT\"}]`; permission "
        "`READ`, `EDIT` or `MANAGE` on every experiment and registered model, or `ADMIN`; a password is "
        "generated on the host unless the entry gives one (`\"password\"`). Removing an entry deletes no user.",
        read=lambda users: tuple(AuthUser(u["name"], u["permission"], u.get("password")) for u in users))

    # Backup and restore
    backup_dir: str | None = backup_setting(None, checks.optional(checks.absolute_safe_dir),
        "Backups on the host (root, 0700), also the dumps taken before upgrades; `None`: `<stack_dir>/backups`.")
    backup_local_dir: str | None = backup_setting("backups", checks.optional(checks.local_dir_name),
        "Where `backup.py` pulls each backup to on the control machine, as `<dir>/<inventory name>/<backup>` "
        "(relative to where pyinfra runs); `None`: leave backups on the host only.")
    # On by default: a lab server nobody remembered to back up is the worse surprise; the cost
    # is disk space on the host, bounded by backup_keep.
    backup_schedule: str | None = backup_setting("*-*-* 03:30:00", checks.optional(checks.calendar),
        "When the host backs itself up (systemd OnCalendar syntax, e.g. `daily`, `Mon *-*-* 02:00:00`); "
        "`None`: no timer.")
    backup_keep: int = backup_setting(7, checks.int_range(1, 1000),
        "Backups kept in `backup_dir` (the newest; scheduled and on-demand alike).")
    restore_from: str | None = backup_setting(None, checks.optional(checks.backup_source),
        "For `restore.py`: a backup directory on the control machine, or `host:<path>` for one on the host.", run_parameter=True)
    restore_overwrite: bool = backup_setting(False, checks.boolean,
        "Let `restore.py` replace a database that already holds runs or registered models (refused otherwise, "
        "changing nothing).", run_parameter=True)

    # Status and logs
    status_format: str = status_setting("text", checks.one_of("text", "json"),
        "For `status.py`: `\"text\"`, a block per host; `\"json\"`, one JSON document of every host "
        "(`--data status_format=json`).", run_parameter=True)
    logs_lines: int = status_setting(100, checks.int_range(1, 100000),
        "For `logs.py`: how many of the last lines of each service's log to show.", run_parameter=True)
    logs_service: str | None = status_setting(None,
        checks.optional(checks.one_of(*(name for name in SERVICE_NAMES if name not in ON_DEMAND_SERVICES))),
        "For `logs.py`: one service's log (e.g. `\"mlflow\"`); `None`: every service of the host.", run_parameter=True)

    # Uninstall
    uninstall_data: bool = uninstall_setting(False, checks.boolean,
        "For `uninstall.py`: remove the data too (database, objects, backups, secrets, CA, the account); only "
        "with `uninstall_confirm` naming the host. `False`: they stay, and `deploy.py` brings them back.", run_parameter=True)
    uninstall_confirm: str | None = uninstall_setting(None, checks.optional(checks.host_name),
        "For `uninstall.py` with `uninstall_data`: the host's inventory name, typed again.", run_parameter=True)
    uninstall_docker: bool = uninstall_setting(False, checks.boolean,
        "For `uninstall.py`: remove Docker's packages and `daemon.json` as well.", run_parameter=True)

    # Secrets
    # A one-off request: a default other than empty would rotate again on every run.
    rotate_secrets: tuple[str, ...] = secrets_setting([], checks.names_from(tuple(SECRET_ENV_VARS)),
        "One-off request to replace generated passwords: `--data rotate_secrets=postgres_password,"
        "minio_root_password` (leave it empty in files).", read=_names, run_parameter=True)

    # Housekeeping (mlflow gc)
    # Off by default: until gc runs, a run deleted by mistake can still be restored (UI, API);
    # how long that must stay possible is the lab's call.
    gc_keep_deleted_runs: str | None = gc_setting(None, checks.optional(checks.gc_age),
        "How long deleted runs (and deleted experiments and logged models) stay restorable before the "
        "`mlflow-gc` timer removes them for good, artifacts included (`mlflow gc --older-than`), e.g. "
        "`\"30d\"`, `\"12h\"`, `\"1d12h\"`; `None`: never (deleted runs keep their artifacts), no timer.")
    gc_schedule: str = gc_setting("*-*-* 04:30:00", checks.calendar,
        "When the host runs that garbage collection (systemd OnCalendar syntax); used only when "
        "`gc_keep_deleted_runs` is set.")

    # External backends (instead of the bundled PostgreSQL and MinIO)
    # Each is chosen by its own switch: an external database with the bundled MinIO, or the reverse.
    postgres_external_host: str | None = external_setting(None, checks.optional_host_name,
        "A PostgreSQL server to use instead of the bundled container (then no `postgres` container and no "
        "`data/postgres`): `postgres_db`, `postgres_user` and `postgres_password` (required then) name its "
        "database, role and password. The database must exist and the role own it. `None`: the bundled one.")
    postgres_external_port: int = external_setting(5432, checks.int_range(1, 65535),
        "Port of the external PostgreSQL.")
    postgres_sslmode: str = external_setting("prefer",
        checks.one_of("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
        "libpq `sslmode` to the external PostgreSQL; `verify-ca` and `verify-full` need `postgres_ca_file`.")
    postgres_ca_file: str | None = external_setting(None, checks.optional_local_file,
        "Local PEM file of the CA that signed the external PostgreSQL's certificate (uploaded, mounted "
        "read-only as `sslrootcert`).")
    s3_endpoint_url: str | None = external_setting(None, checks.optional(checks.url),
        "An S3 service (MinIO cluster, Ceph RGW, AWS) to keep the artifacts in instead of the bundled MinIO "
        "(then no `minio` container and no bucket init): the bucket `minio_bucket` must exist, "
        "`minio_bucket_prefix` applies. Clients download artifacts from this URL (presigned), so it must be "
        "reachable from them as well as from the host. `None`: the bundled MinIO.")
    s3_region: str = external_setting("us-east-1", checks.region,
        "S3 region requests are signed for (the bundled MinIO accepts any).")
    s3_addressing_style: str = external_setting("path", checks.one_of("path", "virtual"),
        "How the external S3 is addressed: `path` (`<endpoint>/<bucket>/...`, MinIO, most on-premises "
        "stores) or `virtual` (`<bucket>.<endpoint host>/...`).")
    s3_access_key: str | None = external_setting(None, checks.optional_s3_access_key,
        "Access key ID at the external S3 (required with `s3_endpoint_url`).")
    s3_secret_access_key: str | None = external_setting(None, checks.optional_s3_secret_key,
        "Its secret key (required with `s3_endpoint_url`): set it like any setting, or "
        "`MLFLOW_STACK_S3_SECRET_ACCESS_KEY`; kept in the root-only secrets file on the host.")
    s3_ca_file: str | None = external_setting(None, checks.optional_local_file,
        "Local PEM file of the CA that signed the external S3's certificate (uploaded; the server's S3 "
        "client trusts it through `AWS_CA_BUNDLE`).")

    # Import of a classic MLflow data set
    classic_backend_store: str | None = import_setting(None, checks.optional(checks.classic_store),
        "For `import_classic.py`: the old server's backend store, only read: a file-store directory "
        "(`mlruns`) or a SQLite file on this host, or a PostgreSQL database "
        "`postgresql://USER@HOST[:PORT]/DATABASE` as the importer's container on the compose network reaches "
        "it (`postgres`: the stack's own; no password in it), opened read-only; its schema must be the "
        "image's MLflow's (else upgrade a copy and import that).", run_parameter=True)
    classic_artifact_root: str | None = import_setting(None, checks.optional(checks.host_path),
        "For `import_classic.py`: the old server's artifact root directory on this host (its "
        "`--default-artifact-root` or `--artifacts-destination`); `None`: the directory of "
        "`classic_backend_store` (a file store: itself; required with a database URI); only read.", run_parameter=True)
    classic_database_password: str | None = import_setting(None, checks.optional(checks.line_secret),
        "For `import_classic.py` with a database URI: the password of its user; set it like any setting, or "
        "`MLFLOW_STACK_CLASSIC_DATABASE_PASSWORD`. Kept root-only (0600) on the host in `classic-database.password`, never in argv or output.", run_parameter=True)

    # TLS
    # On by default: authentication is on by default, and its passwords must not cross a shared
    # network in clear text; a self-signed CA needs nothing from the lab but one file per client.
    tls: str = tls_setting("self-signed", checks.one_of("self-signed", "files", "off"),
        "`\"self-signed\"`: a proxy terminates TLS for the tracking API and the presigned S3 traffic with a "
        "certificate from a CA the deploy makes on the host (its key never leaves it); clients trust the CA "
        "certificate fetched to `tls_ca_local_dir`. `\"files\"`: your certificate and key (`tls_cert_file`, "
        "`tls_key_file`, `tls_ca_file`). `\"off\"`: plain HTTP, no proxy.")
    proxy_image: str = tls_setting("nginx:1.28", checks.pattern(checks.IMAGE, "an image reference like 'nginx:1.28'"),
        "TLS proxy image: any image with the official nginx image's contract (`/etc/nginx/nginx.conf`, "
        "`nginx -g 'daemon off;'`, runs as any user, bash).")
    tls_cert_file: str | None = tls_setting(None, checks.optional(checks.local_file),
        "With `tls = \"files\"`: PEM certificate (chain) on the control machine; it must cover "
        "`mlflow_public_host`.")
    tls_key_file: str | None = tls_setting(None, checks.optional(checks.local_file),
        "With `tls = \"files\"`: its PEM private key on the control machine (uploaded 0600).")
    tls_ca_file: str | None = tls_setting(None, checks.optional(checks.local_file),
        "With `tls = \"files\"`: the CA certificate that signed it (for a public CA: its root), trusted by "
        "the server's own S3 calls and the smoke test.")
    tls_ca_local_dir: str = tls_setting("tls", checks.local_dir_name,
        "With `tls = \"self-signed\"`: where the deploy fetches the CA certificate to on the control machine, as "
        "`<dir>/<inventory name>/ca.crt` (relative to where pyinfra runs), for clients' "
        "`REQUESTS_CA_BUNDLE`.")

    # Metrics
    # Off by default: nothing is exported until the lab names where its Prometheus scrapes from.
    metrics_networks: tuple[str, ...] = metrics_setting([],
        checks.list_of(checks.network, "a list of networks like '10.0.5.0/24' (host bits zero) or addresses "
                                       "like '10.0.5.7'"),
        "Networks or addresses the lab's Prometheus scrapes from. Through the TLS proxy, on `mlflow_port`, "
        "to these sources only: `/metrics/mlflow` and `/metrics/mlflow-api` (MLflow's request metrics, "
        "`--expose-prometheus`; any MLflow user's basic-auth), `/metrics/host` (the host's CPU, memory, "
        "disks and filesystems, and the backup and gc timers' last results) and `/metrics/database` (the bundled "
        "PostgreSQL's). `[]`: no metrics. "
        "A single server with TLS only.", read=tuple)
    node_exporter_image: str = metrics_setting("prom/node-exporter:v1.9.1",
        checks.pattern(checks.IMAGE, "an image reference like 'prom/node-exporter:v1.9.1'"),
        "With `metrics_networks`: the host's metrics. Any image with the official node-exporter image's "
        "contract (`/bin/node_exporter` as entrypoint, its `--path.*` and textfile options, `wget`).")
    postgres_exporter_image: str = metrics_setting("quay.io/prometheuscommunity/postgres-exporter:v0.17.1",
        checks.pattern(checks.IMAGE, "an image reference like 'quay.io/prometheuscommunity/postgres-exporter:v0.17.1'"),
        "With `metrics_networks` and the bundled PostgreSQL: the database's metrics. Any image with the official "
        "postgres-exporter image's contract (`/bin/postgres_exporter` as entrypoint, `DATA_SOURCE_URI`/`_USER`/"
        "`_PASS`, `wget`).")

    # Cluster
    postgres_port: int = cluster_setting(5432, checks.int_range(1, 65535),
        "Data host of a cluster: port PostgreSQL is published on for the tracking servers (the firewall lets "
        "only the cluster's members in).")
    postgres_bind_address: str = cluster_setting("0.0.0.0", checks.address,
        "Data host of a cluster: address PostgreSQL is published on.")
    cluster_address: str | None = cluster_setting(None, checks.optional(checks.ipv4),
        "In a cluster: the IPv4 address the other members reach this host by (balancer upstream, firewall, "
        "database and S3 address); `None`: its `ssh_hostname` or inventory name, resolved where pyinfra runs.")


SETTINGS = settings_table(Settings)
DEFAULTS = {setting.name: setting.default for setting in SETTINGS}
