"""A fake `docker` (and `psql`, `pg_dump`) on PATH for running the host-side shell scripts for real.

Everything is driven by files in one directory the test controls (``FakeDocker.dir``):

- ``ids``: what ``docker compose ... ps --quiet`` / ``ps -q`` prints;
- ``inspect.N``: what the N-th status ``docker inspect --format ...`` call prints (a counter
  file counts the calls; the highest N not above the count answers, so the last file repeats).
  Lines are ``service state health exit-code restart-count``, as wait-healthy.sh's format;
- ``running``: what ``docker inspect -f '{{.State.Running}}'`` prints (default ``true``);
- ``logs.SERVICE``: what ``docker compose logs ... SERVICE`` prints (default: two canned lines);
- ``db_password``: the password the fake database role has (psql with PGPASSWORD);
- ``psql.rc``: exit code of psql reading SQL on stdin (default 0);
- ``psql.out``: what that psql prints (default nothing), e.g. a schema revision for
  ``psql -c 'select version_num from alembic_version'``;
- ``pg_dump.out`` / ``pg_dump.rc``: what the fake ``pg_dump`` prints / its exit code
  (default: ``PGDMP fake dump`` and 0);
- ``run.out`` / ``run.rc``: what ``docker compose run ...`` (a one-shot container) prints on
  stdout / its exit code (default nothing and 0); its stdin is kept in ``run.stdin``. A program
  of the image given to ``run_image_program_here`` runs here instead.

Recorded: ``argv`` (one line per docker/psql/pg_dump call, the arguments joined by spaces, newlines
in an argument turned into spaces),
``exec.stdin`` (what ``docker exec``/``compose exec`` got on stdin), ``psql.stdin``.
``docker exec`` and ``compose exec`` run the command locally, as the container would.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

FAKE_DOCKER = r"""#!/bin/sh
d="$FAKE_DOCKER_DIR"
{ printf 'docker %s' "$*" | tr '\n' ' '; echo; } >> "$d/argv"
run_here() {  # the rest of the arguments after the options and the container/service
    cat > "$d/exec.stdin"
    "$@" < "$d/exec.stdin"
    exit $?
}
case "$1" in
inspect)
    format= prev=
    for a in "$@"; do
        case "$prev" in --format|-f) format=$a ;; esac
        prev=$a
    done
    case "$format" in
        *IPAddress*) echo "172.20.0.2 "; exit 0 ;;
        *State.Running*) cat "$d/running" 2>/dev/null || echo true; exit 0 ;;
    esac
    n=$(( $(cat "$d/count" 2>/dev/null || echo 0) + 1 ))
    echo "$n" > "$d/count"
    i=$n
    while [ "$i" -gt 1 ] && [ ! -f "$d/inspect.$i" ]; do i=$((i - 1)); done
    cat "$d/inspect.$i" 2>/dev/null
    exit 0 ;;
exec)
    shift
    while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done
    shift
    run_here "$@" ;;
compose)
    shift
    while [ $# -gt 0 ]; do
        case "$1" in --project-name|--project-directory|-p|-f) shift 2 ;; *) break ;; esac
    done
    sub=$1
    shift
    case "$sub" in
    ps)
        case " $* " in
            *" --quiet "*|*" -q "*) cat "$d/ids" 2>/dev/null ;;
            *) echo "NAME  SERVICE  STATUS   (fake compose ps table)" ;;
        esac ;;
    logs)
        service=
        for service; do :; done
        cat "$d/logs.$service" 2>/dev/null || printf '%s\n' "$service | log line one of $service" \
            "$service | log line two of $service" ;;
    exec)
        while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done
        shift
        run_here "$@" ;;
    run)
        for a in "$@"; do
            case "$a" in /opt/mlflow-stack/*.py) [ -f "$d/image/${a#/opt/mlflow-stack/}" ] || continue
                # a program of the image run here, as the one-off would (run_image_program_here)
                while [ "$1" != "$a" ]; do shift; done; shift
                exec "$(cat "$d/python")" "$d/image/${a#/opt/mlflow-stack/}" "$@" ;;
            esac
        done
        cat > "$d/run.stdin"
        cat "$d/run.out" 2>/dev/null
        exit "$(cat "$d/run.rc" 2>/dev/null || echo 0)" ;;
    esac
    exit 0 ;;
esac
exit 0
"""

FAKE_PSQL = r"""#!/bin/sh
d="$FAKE_DOCKER_DIR"
{ printf 'psql %s' "$*" | tr '\n' ' '; echo; } >> "$d/argv"
if [ -n "${PGPASSWORD+set}" ]; then
    # a password login over the network address
    [ "$PGPASSWORD" = "$(cat "$d/db_password" 2>/dev/null)" ] || { echo "password authentication failed" >&2; exit 2; }
    echo 1
    exit 0
fi
cat >> "$d/psql.stdin"
cat "$d/psql.out" 2>/dev/null
exit "$(cat "$d/psql.rc" 2>/dev/null || echo 0)"
"""

FAKE_PG_DUMP = r"""#!/bin/sh
d="$FAKE_DOCKER_DIR"
{ printf 'pg_dump %s' "$*" | tr '\n' ' '; echo; } >> "$d/argv"
cat "$d/pg_dump.out" 2>/dev/null || echo "PGDMP fake dump"
exit "$(cat "$d/pg_dump.rc" 2>/dev/null || echo 0)"
"""


class FakeDocker:
    def __init__(self, root: Path):
        self.dir = root / "fake-docker"
        self.bin = root / "fake-bin"
        self.dir.mkdir()
        self.bin.mkdir()
        for name, text in (("docker", FAKE_DOCKER), ("psql", FAKE_PSQL), ("pg_dump", FAKE_PG_DUMP)):
            path = self.bin / name
            path.write_text(text)
            path.chmod(0o755)

    def env(self) -> dict[str, str]:
        return {"PATH": f"{self.bin}:/usr/bin:/bin", "FAKE_DOCKER_DIR": str(self.dir), "LC_ALL": "C"}

    def run_image_program_here(self, program: Path, python: str) -> None:
        """`docker compose run ... python /opt/mlflow-stack/NAME.py ARGS` runs PROGRAM with
        PYTHON here (stdin, stdout and the exit code as the one-off's)."""
        (self.dir / "image").mkdir(exist_ok=True)
        (self.dir / "image" / program.name).symlink_to(program)
        self.write("python", python)

    def write(self, name: str, text: str) -> None:
        (self.dir / name).write_text(text)

    def statuses(self, *snapshots: str) -> None:
        """One `docker inspect` answer per status call; the last one repeats."""
        for number, text in enumerate(snapshots, 1):
            self.write(f"inspect.{number}", text.strip() + "\n")

    def read(self, name: str) -> str:
        path = self.dir / name
        return path.read_text() if path.exists() else ""

    @property
    def argv(self) -> list[str]:
        return self.read("argv").splitlines()

    def run(self, args: list[str], timeout: float = 60, stdin: str | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(args, env=self.env(), capture_output=True, text=True, timeout=timeout,
                              input=stdin, cwd=cwd or self.dir)


def assert_no_process_saw(fake: FakeDocker, secret: str) -> None:
    for line in fake.argv:
        assert secret not in line, f"secret in a command line: {line}"
