"""Facts the built-in ones do not cover. None of them prints a secret value."""

from __future__ import annotations

import json

from pyinfra.api import FactBase

from mlflow_stack.config.certificates import CertificateState, parse_openssl_sans


def key_values(output) -> dict[str, str]:
    """The `key=value` lines a fact command echoes."""
    return dict(line.split("=", 1) for line in output if "=" in line)


def running_container(project: str, service: str) -> str:
    """Shell: set $id to the service's container and succeed only if it is running."""
    return (f"id=$(docker compose --project-name {project} ps -q {service} 2>/dev/null); "
            f'test -n "$id" && test "$(docker inspect -f "{{{{.State.Running}}}}" $id 2>/dev/null)" = true')


class ComposeServices(FactBase):
    """State of every container of a compose project, by service name.

    ``{"postgres": {"state": "running", "health": "healthy", "exit_code": 0, "image": "postgres:17"}, ...}``;
    empty when Docker, the daemon or the project is missing.
    """

    default = dict

    def requires_command(self, *args, **kwargs) -> str:
        return "docker"

    def command(self, project: str) -> str:
        # Compose prints either one JSON object per line or one JSON array, by version.
        return f"docker compose --project-name {project} ps --all --format json 2>/dev/null || true"

    def process(self, output):
        text = "\n".join(output).strip()
        if not text:
            return {}
        if text.startswith("["):
            rows = json.loads(text)
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        # `docker compose run` one-offs (the backup's archive container) are not the service.
        rows = [row for row in rows if "com.docker.compose.oneoff=True" not in str(row.get("Labels", ""))]
        return {
            row["Service"]: {
                "state": row.get("State", ""),
                "health": row.get("Health", ""),
                "exit_code": row.get("ExitCode", 0),
                "image": row.get("Image", ""),
            }
            for row in rows
        }


class IdOwners(FactBase):
    """Which user name owns a uid, which group name owns a gid (None when free), and the
    ids an existing account called `account` already has (None when absent)."""

    def command(self, uid: int, gid: int, account: str) -> str:
        return (
            f"echo user=$(getent passwd {int(uid)} | cut -d: -f1); "
            f"echo group=$(getent group {int(gid)} | cut -d: -f1); "
            f"echo name_uid=$(getent passwd {account} | cut -d: -f3); "
            f"echo name_gid=$(getent group {account} | cut -d: -f3)"
        )

    def process(self, output):
        found = key_values(output)
        as_int = lambda key: int(found[key]) if found.get(key) else None  # noqa: E731
        return {
            "user": found.get("user") or None,
            "group": found.get("group") or None,
            "name_uid": as_int("name_uid"),
            "name_gid": as_int("name_gid"),
        }


class EnvFileDigests(FactBase):
    """sha256 of each value in an env file, by key: which keys are set, and whether a given
    secret matches, are known without the values leaving the host."""

    default = dict

    def command(self, path: str) -> str:
        return (
            f"test -f {path} || exit 0; "
            f"while IFS='=' read -r key value; do "
            f'printf "%s %s\\n" "$key" "$(printf %s "$value" | sha256sum | cut -c1-64)"; '
            f"done < {path}"
        )

    def process(self, output):
        return dict(line.split(" ", 1) for line in output if " " in line)


class DatabasePasswordState(FactBase):
    """Whether the database role accepts the password in the env file, checked inside the
    running database container over its network address (loopback and the local socket
    trust everyone, so they prove nothing). The password goes from the file to psql on a
    pipe: never in argv, never printed.

    ``"none"``: no database cluster yet; ``"matches"``; ``"differs"``; ``"unknown"``: the
    database container is not running, so it cannot be asked.
    """

    def command(self, stack_dir: str, project: str, user: str, database: str) -> str:
        # The container's own network address: the line that asks for a password.
        address = "$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' $id | cut -d' ' -f1)"
        psql = f'IFS= read -r PGPASSWORD; export PGPASSWORD; psql -X -w -q -t -h "$1" -U {user} -d {database} -c "select 1"'
        return (
            f"test -s {stack_dir}/data/postgres/PG_VERSION || {{ echo none; exit 0; }}; "
            f"{running_container(project, 'postgres')} || {{ echo unknown; exit 0; }}; "
            f"sed -n 's/^POSTGRES_PASSWORD=//p' {stack_dir}/.env 2>/dev/null | "
            f"docker exec -i $id sh -c '{psql}' sh \"{address}\" >/dev/null 2>&1 && echo matches || echo differs"
        )

    def process(self, output):
        return output[-1].strip() if output else "unknown"


class BackendsChecked(FactBase):
    """Whether check-backends.sh last succeeded with the current secrets file, compose file and
    MLflow environment (it stamps their checksums): True or False."""

    def command(self, stack_dir: str) -> str:
        return (f"cd {stack_dir} 2>/dev/null && sha256sum --quiet --check .backends-checked >/dev/null 2>&1 "
                "&& echo yes || echo no")

    def process(self, output):
        return bool(output) and output[-1].strip() == "yes"


class DatabaseCluster(FactBase):
    """What the data directory and the running database hold, read through the database
    container's local socket: ``{"pg_version": "17" | None, "revision": "dc11669786a5" | None,
    "running": bool, "unreadable": None | "psql's error"}``. ``revision`` is MLflow's schema
    revision (None: no database yet, no MLflow tables, or the database is not running or could
    not be asked, then ``unreadable`` says why)."""

    def command(self, stack_dir: str, project: str, user: str, database: str) -> str:
        query = "select version_num from alembic_version"
        return (
            f"echo pg_version=$(cat {stack_dir}/data/postgres/PG_VERSION 2>/dev/null); "
            f"{running_container(project, 'postgres')} || {{ echo running=no; exit 0; }}; echo running=yes; "
            f"if answer=$(docker exec $id psql -X -w -At -U {user} -d {database} -c '{query}' 2>&1); "
            f"then echo \"revision=$answer\"; else case $answer in "
            # No MLflow tables yet: no revision. Any other failure is reported, not taken for that.
            f"*'\"alembic_version\" does not exist'*) echo revision= ;; "
            f"*) echo \"unreadable=$(printf %s \"$answer\" | tr '\\n' ' ' | cut -c1-300)\" ;; esac; fi"
        )

    def process(self, output):
        found = key_values(output)
        return {
            "pg_version": found.get("pg_version") or None,
            "revision": found.get("revision") or None,
            "running": found.get("running") == "yes",
            "unreadable": found.get("unreadable") or None,
        }


class AuthUsersState(FactBase):
    """Whether MLflow's user store holds the admin and every listed user with the password,
    admin flag and permission the deploy keeps, asked inside the running MLflow container
    (files/image/auth_users.py): by a digest compared with the last sync's (users.synced), else
    by MLflow. The passwords go from the root-only files to the script on a
    pipe: never in argv, never printed; the script prints names only.

    ``"in-sync"``; ``"differs"``; ``"unknown"``: MLflow is not running or cannot be asked (not
    started yet, or an image without authentication).
    """

    def command(self, stack_dir: str, project: str, admin: str, users: str) -> str:
        from mlflow_stack.steps.auth import passwords_command, synced_digest_command

        # Fast: the digest of wanted and stored users equals the one kept at the last sync. Else
        # (moved, never kept, a store it cannot read) MLflow itself is asked: seconds.
        return (
            f"{running_container(project, 'mlflow')} || {{ echo unknown; exit 0; }}; "
            f"digest=$({synced_digest_command(stack_dir, admin, users)}); "
            f'if [ -n "$digest" ]; then [ "$digest" = "$(cat {stack_dir}/users.synced 2>/dev/null)" ] '
            f"&& echo in-sync || echo differs; exit 0; fi; "
            f"{passwords_command(stack_dir, admin)} | "
            f"docker exec -i $id python /opt/mlflow-stack/auth_users.py check {admin} {users} 2>/dev/null "
            f"|| echo unknown"
        )

    def process(self, output):
        lines = [line.strip() for line in output if line.strip()]
        if not lines or lines[-1] == "unknown":
            return "unknown"
        return "in-sync" if lines == ["in-sync"] else "differs"
# Runs and registered models in the tracking database, the deploy's own smoke-test
# experiments (verify.py) aside: what a restore would replace.
HELD_RECORDS_QUERY = ("select (select count(*) from runs r join experiments e on e.experiment_id = r.experiment_id "
                      "where e.name not like 'pyinfra-smoke-%') + (select count(*) from registered_models)")


class HeldRecords(FactBase):
    """How many runs and registered models the running database holds (the smoke test's
    aside): an int; 0 when there is no database or no MLflow tables yet; None when a database
    exists but is not running, so it cannot be asked."""

    def command(self, stack_dir: str, project: str, user: str, database: str) -> str:
        return (
            f"test -s {stack_dir}/data/postgres/PG_VERSION || {{ echo held=0; exit 0; }}; "
            f"{running_container(project, 'postgres')} || {{ echo held=unknown; exit 0; }}; "
            f"tables=$(docker exec $id psql -X -w -At -U {user} -d {database} "
            f"-c \"select count(*) from pg_tables where tablename in ('runs', 'registered_models')\"); "
            f'test "$tables" = 2 || {{ echo held=0; exit 0; }}; '
            f"echo held=$(docker exec $id psql -X -w -At -U {user} -d {database} -c \"{HELD_RECORDS_QUERY}\")"
        )

    def process(self, output):
        found = key_values(output)
        value = found.get("held", "")
        return int(value) if value.isdigit() else None


class TlsCertificates(FactBase):
    """The self-signed CA and server certificate on the host, as certificates.CertificateState
    fields: which files exist, whether each certificate stays valid `seconds` more (the server's
    also: signed by the CA), the server's subjectAltName. Reads no key's content."""

    default = CertificateState  # nothing there yet

    def requires_command(self, *args, **kwargs) -> str:
        return "openssl"

    def command(self, ca_dir: str, tls_dir: str, seconds: int) -> str:
        valid = f"openssl x509 -noout -checkend {seconds} -in"
        return (
            f"test -s {ca_dir}/ca.key && echo ca_key=yes; "
            f"test -s {tls_dir}/server.key && echo server_key=yes; "
            f"{valid} {ca_dir}/ca.crt >/dev/null 2>&1 && echo ca_valid=yes; "
            f"{valid} {tls_dir}/server.crt >/dev/null 2>&1 && openssl verify -CAfile {ca_dir}/ca.crt "
            f"{tls_dir}/server.crt >/dev/null 2>&1 && echo server_valid=yes; "
            f"echo server_sans=$(openssl x509 -noout -ext subjectAltName -in {tls_dir}/server.crt 2>/dev/null "
            "| tail -n +2 | tr -d ' '); true"
        )

    def process(self, output):
        values = key_values(output)
        return CertificateState(
            ca_key=values.get("ca_key") == "yes", ca_valid=values.get("ca_valid") == "yes",
            server_key=values.get("server_key") == "yes", server_valid=values.get("server_valid") == "yes",
            server_sans=parse_openssl_sans(values.get("server_sans", "").replace("IPAddress:", "IP Address:")),
        )
