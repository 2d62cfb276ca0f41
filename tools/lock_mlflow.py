#!/usr/bin/env python3
"""Generate the hash-locked requirements of the MLflow image: locks/mlflow-<version>.txt.

    python tools/lock_mlflow.py 3.17.2           # one supported release
    python tools/lock_mlflow.py --all            # every supported release (what `make locks` runs)
    python tools/lock_mlflow.py --all --check    # ... and check each lock installs (see --check)

Inputs of a lock: `mlflow[auth]==<version>` (the extra brings Flask-WTF, which basic-auth needs), the companions' defaults in mlflow_stack/config/settings.py
(`mlflow_psycopg2_version`, `mlflow_boto3_version`; override with --psycopg2/--boto3), and the
constraints an older release needs (CONSTRAINTS below). The resolver is uv
(`uv pip compile --universal --generate-hashes --python-version 3.12`): one set of pins, with
environment markers, valid for every CPython >= 3.12 on every platform (python:3.12-slim on
x86_64 and aarch64, the tests' stand-in with Debian's 3.13), and the sha256 of every file
PyPI has for each pinned release, so `pip install --require-hashes` accepts whichever wheel
fits the interpreter. Candidates are limited to files uploaded before --exclude-newer (default:
now), recorded in the header: rerunning with the same value reproduces the same lock.

A lock whose pins and hashes did not change is left as it is (its header too), so the image
tag, a hash of the image inputs, only moves when the packages do.

uv is looked up next to this Python (`<venv>/bin/uv`, as `make locks` installs it), then on
PATH. PyPI is reached through the system CA store (`--native-tls`), so a TLS-intercepting
proxy whose CA is installed there works.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCK_DIR = REPO / "locks"

# The settings table needs no pyinfra (only the standard library and locks/).
sys.path.insert(0, str(REPO))
from mlflow_stack.config.settings import DEFAULTS  # noqa: E402
from mlflow_stack.config.releases import EXPORTER_LOCK  # noqa: E402

# The supported range: from the first 3.x release with `mlflow server --allowed-hosts` (the
# Host-header security middleware, added in 3.5.0; 3.4.0 has neither the option nor
# mlflow/server/security.py) up to the newest release installable here (3.18.0's
# mlflow-skinny is not). Every release of PyPI in between:
SUPPORTED = [
    "3.5.0", "3.5.1",
    "3.6.0",
    "3.7.0",
    "3.8.0", "3.8.1",
    "3.9.0",
    "3.10.0", "3.10.1",
    "3.11.1",
    "3.12.0",
    "3.13.0",
    "3.14.0",
    "3.15.0", "3.15.1", "3.15.2",
    "3.16.0", "3.16.1",
    "3.17.0", "3.17.1", "3.17.2",
]

# Constraints an older release needs on top of its own metadata: (first release that no
# longer needs it, requirement, why). A release below the bound gets the requirement.
CONSTRAINTS = [
    (
        "3.9.0",
        "sqlalchemy<2.1",
        "mlflow/store/db/utils.py imports FallbackAsyncAdaptedQueuePool from sqlalchemy.pool, "
        "which SQLAlchemy 2.1 removed (ImportError at `mlflow server` start); 3.9.0 dropped "
        "the import, and MLflow's metadata allows SQLAlchemy 2.1 in all of these releases",
    ),
]

# MLflow's Prometheus exporter (`mlflow server --expose-prometheus`, on with metrics_networks):
# an optional import of MLflow's, so in no release's lock. Its own lock, installed --no-deps
# after the release's (Flask, its one other requirement, is in every one).
EXPORTER_INPUTS = ["prometheus-flask-exporter", "prometheus-client"]

DEFAULT_INDEX = "https://pypi.org/simple"
DEFAULT_PYTHON = "3.12"  # lowest Python the locks serve (python:3.12-slim); newer ones are covered too
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def vkey(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def constraints_for(version: str) -> list[tuple[str, str]]:
    return [(req, why) for below, req, why in CONSTRAINTS if vkey(version) < vkey(below)]


def find_uv() -> str:
    here = Path(sys.executable).parent / "uv"
    if here.exists():
        return str(here)
    found = shutil.which("uv")
    if found:
        return found
    sys.exit("uv not found: `pip install uv` (make locks installs it into .venv), or put it on PATH")


def uv_env() -> dict[str, str]:
    env = dict(os.environ)
    # Only what this script passes counts: no uv.toml, no UV_* settings from the caller.
    for key in list(env):
        if key.startswith("UV_") and key not in ("UV_CACHE_DIR",):
            del env[key]
    if "SSL_CERT_FILE" not in env and Path(CA_BUNDLE).exists():
        env["SSL_CERT_FILE"] = CA_BUNDLE
    return env


def lock_body(text: str) -> list[str]:
    """The lines that matter to pip (no comments, no blank lines)."""
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def uv_compile(inputs: list[str], args: argparse.Namespace, uv: str, what: str,
               constraints: list[str] = (), no_deps: bool = False) -> str:
    """The hash-locked body uv resolves for `inputs` (with `constraints`; `no_deps`: only the inputs)."""
    with tempfile.TemporaryDirectory(prefix="lock-mlflow-") as tmp:
        # Relative names: uv's "# via" annotations then read the same on every machine.
        Path(tmp, "requirements.in").write_text("\n".join(inputs) + "\n")
        cmd = [
            uv, "pip", "compile", "--quiet", "--no-config", "--native-tls",
            "--universal", "--python-version", args.python_version,
            "--generate-hashes", "--no-header", *(["--no-deps"] if no_deps else []),
            "--index-url", args.index_url,
            "--exclude-newer", args.exclude_newer,
        ]
        if constraints:
            Path(tmp, "constraints.txt").write_text("".join(f"{req}\n" for req in constraints))
            cmd += ["--constraint", "constraints.txt"]
        proc = subprocess.run([*cmd, "requirements.in", "--output-file", "lock.txt"], cwd=tmp, env=uv_env(),
                              text=True, capture_output=True)
        if proc.returncode != 0:
            sys.exit(f"{what}: uv pip compile failed:\n{proc.stderr}")
        return Path(tmp, "lock.txt").read_text()


def write_lock(out: Path, text: str, summary: str = "") -> Path:
    """Write `text` unless only its header would change (the image tag moves with the packages only)."""
    if out.exists() and lock_body(out.read_text()) == lock_body(text):
        print(f"{out.relative_to(REPO)}: unchanged{summary}")
        return out
    out.write_text(text)
    print(f"{out.relative_to(REPO)}: written{summary}")
    return out


def lock(version: str, args: argparse.Namespace, uv: str, uv_version: str) -> Path:
    # The `auth` extra (Flask-WTF): `mlflow server --app-name basic-auth`, on by default.
    inputs = [f"mlflow[auth]=={version}", f"psycopg2-binary=={args.psycopg2}", f"boto3=={args.boto3}"]
    cons = constraints_for(version)
    body = uv_compile(inputs, args, uv, f"mlflow {version}", constraints=[req for req, _ in cons])

    regen = f"python tools/lock_mlflow.py {version}"
    if args.psycopg2 != DEFAULTS["mlflow_psycopg2_version"]:
        regen += f" --psycopg2 {args.psycopg2}"
    if args.boto3 != DEFAULTS["mlflow_boto3_version"]:
        regen += f" --boto3 {args.boto3}"
    if args.index_url != DEFAULT_INDEX:
        regen += f" --index-url {args.index_url}"
    if args.python_version != DEFAULT_PYTHON:
        regen += f" --python-version {args.python_version}"
    header = [
        f"# Hash-locked requirements of the MLflow image for mlflow=={version}. Do not edit: regenerate.",
        f"# Generated {dt.date.today().isoformat()} by: {regen} --exclude-newer {args.exclude_newer}",
        f"#   (= uv {uv_version} pip compile --universal --python-version {args.python_version} --generate-hashes",
        f"#      --index-url {args.index_url} --exclude-newer {args.exclude_newer})",
        f"# Inputs: {', '.join(inputs)}",
    ]
    for req, why in cons:
        header.append(f"# Constraint: {req}: {why}")
    header += [
        f"# Valid for CPython >= {args.python_version} on any platform (markers below); every file's sha256.",
        "# Install: pip install --require-hashes --only-binary=:all: -r <this file>",
        "",
    ]
    npkg = sum(1 for line in body.splitlines() if re.match(r"^[A-Za-z0-9].*==", line))
    extra = "".join(f", {req}" for req, _ in cons)
    return write_lock(LOCK_DIR / f"mlflow-{version}.txt", "\n".join(header) + body, f" ({npkg} packages{extra})")


def lock_exporter(args: argparse.Namespace, uv: str, uv_version: str) -> Path:
    body = uv_compile(EXPORTER_INPUTS, args, uv, "exporter", no_deps=True)
    header = [
        "# Hash-locked Prometheus exporter of the MLflow image (every release). Do not edit: regenerate.",
        f"# Generated {dt.date.today().isoformat()} by: python tools/lock_mlflow.py --exporter "
        f"--exclude-newer {args.exclude_newer}",
        f"#   (= uv {uv_version} pip compile --no-deps --generate-hashes --exclude-newer {args.exclude_newer})",
        f"# Inputs: {', '.join(EXPORTER_INPUTS)}",
        "# Install after the release's lock: pip install --no-deps --require-hashes --only-binary=:all: -r <this file>",
        "",
    ]
    return write_lock(EXPORTER_LOCK, "\n".join(header) + body)


def manylinux_platforms(plat: str) -> list[str]:
    """`--platform` options for glibc <= the one of `plat` (manylinux_2_36_x86_64: Debian 12's
    glibc; python:3.12-slim's Debian 13 has 2.41): older pips do not expand it themselves."""
    m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", plat)
    if not m:
        return ["--platform", plat]
    top, arch = int(m.group(1)), m.group(2)
    opts = []
    for minor in range(top, 4, -1):
        opts += ["--platform", f"manylinux_2_{minor}_{arch}"]
    for legacy in ("manylinux2014", "manylinux2010", "manylinux1"):
        opts += ["--platform", f"{legacy}_{arch}"]
    return opts


def check(path: Path, pythons: list[str], platforms: list[str]) -> bool:
    """Resolve the lock for each interpreter and platform without installing (pip --dry-run):
    every line hash-pinned, every dependency present, a wheel for every package. Markers are
    evaluated by the interpreter that runs pip, so give real 3.12 and 3.13 interpreters."""
    ok = True
    for py in pythons:
        ver = subprocess.run([py, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             text=True, capture_output=True, check=True).stdout.strip()
        for plat in platforms:
            with tempfile.TemporaryDirectory(prefix="lock-check-") as tmp:
                cmd = [py, "-m", "pip", "install", "--isolated", "--disable-pip-version-check",
                       "--cert", CA_BUNDLE, "--dry-run", "--quiet", "--ignore-installed",
                       "--require-hashes", "--only-binary=:all:", "--target", tmp,
                       "--python-version", ver, "--implementation", "cp",
                       *manylinux_platforms(plat), "-r", str(path)]
                env = dict(os.environ, PIP_CONFIG_FILE=os.devnull)
                env = {k: v for k, v in env.items() if not k.startswith("PIP_") or k == "PIP_CONFIG_FILE"}
                proc = subprocess.run(cmd, env=env, text=True, capture_output=True)
            status = "ok" if proc.returncode == 0 else "FAILED"
            print(f"  check {path.name}: CPython {ver} {plat}: {status}")
            if proc.returncode != 0:
                ok = False
                print("    " + "\n    ".join(proc.stderr.strip().splitlines()[-8:]))
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("versions", nargs="*", metavar="VERSION",
                        help=f"MLflow release(s) to lock, in {SUPPORTED[0]}..{SUPPORTED[-1]}")
    parser.add_argument("--all", action="store_true", help="lock every supported release, and the exporter")
    parser.add_argument("--exporter", action="store_true", help="lock the Prometheus exporter (locks/prometheus-exporter.txt)")
    parser.add_argument("--psycopg2", default=DEFAULTS["mlflow_psycopg2_version"],
                        help="psycopg2-binary version (default: mlflow_psycopg2_version of mlflow_stack/config/settings.py, %(default)s)")
    parser.add_argument("--boto3", default=DEFAULTS["mlflow_boto3_version"],
                        help="boto3 version (default: mlflow_boto3_version of mlflow_stack/config/settings.py, %(default)s)")
    parser.add_argument("--python-version", default=DEFAULT_PYTHON,
                        help="lowest Python the lock must serve (default %(default)s)")
    parser.add_argument("--index-url", default=DEFAULT_INDEX, help="package index (default %(default)s)")
    parser.add_argument("--exclude-newer", metavar="TIMESTAMP",
                        default=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        help="only files uploaded before this RFC 3339 time (default: now); "
                             "the header records it, reuse it to reproduce a lock")
    parser.add_argument("--check", action="store_true",
                        help="after locking, dry-run `pip install --require-hashes --only-binary=:all:` "
                             "of each lock for CPython 3.12 and 3.13 on linux x86_64 and aarch64")
    parser.add_argument("--check-python", action="append", metavar="PYTHON",
                        help="interpreter(s) for --check (default: python3.12 and python3.13 if found)")
    parser.add_argument("--allow-unsupported", action="store_true",
                        help="lock a release outside the supported range (for trying a new one)")
    args = parser.parse_args()

    versions = list(SUPPORTED) if args.all else args.versions
    if not versions and not args.exporter:
        parser.error("give VERSION(s), --exporter or --all")
    for v in versions:
        if v not in SUPPORTED and not args.allow_unsupported:
            parser.error(f"mlflow {v} is outside the supported releases {SUPPORTED[0]}..{SUPPORTED[-1]} "
                         f"({', '.join(SUPPORTED)}); --allow-unsupported to lock it anyway")

    uv = find_uv()
    uv_version = subprocess.run([uv, "--version"], text=True, capture_output=True,
                                check=True).stdout.split()[1]
    LOCK_DIR.mkdir(exist_ok=True)
    paths = [lock(v, args, uv, uv_version) for v in versions]
    if args.exporter or args.all:
        paths.append(lock_exporter(args, uv, uv_version))

    if args.check:
        pythons = args.check_python or [p for p in (shutil.which("python3.12"), shutil.which("python3.13")) if p]
        if not pythons:
            sys.exit("--check: no python3.12/python3.13 found; pass --check-python")
        platforms = ["manylinux_2_36_x86_64", "manylinux_2_36_aarch64"]
        results = [check(p, pythons, platforms) for p in paths]
        if not all(results):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
