"""The rules a setting's value must follow (mlflow_stack/config/settings.py picks one per setting).

A check returns None for a valid value, or the text of what is allowed, which the error
message shows after "must be".
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Callable

from mlflow_stack.config.releases import SUPPORTED_MLFLOW_VERSIONS

Check = Callable[[Any], "str | None"]

RELEASE_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?([ab]|rc)?\d*$")
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
SQL_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
COMPOSE_PROJECT = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
IMAGE = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
REPOSITORY = re.compile(r"^(?:[a-zA-Z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*$")
LOG_SIZE = re.compile(r"^\d+[kmg]$")
MINIO_USER = re.compile(r"^[A-Za-z0-9_-]{3,64}$")
KEY_PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()-]+(?:/[A-Za-z0-9!_.*'()-]+)*$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_PASSWORD = re.compile(r"^[A-Za-z0-9._~-]{12,128}$")
# MLflow user names: also the keys of the users' password file, so no '=' and nothing a shell
# or a regular expression would read specially.
AUTH_USER = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
AUTH_PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
# What a listed user may be given: a permission on every experiment and registered model, or admin.
AUTH_USER_PERMISSIONS = ("READ", "EDIT", "MANAGE", "ADMIN")
# Directories the stack must never be put in (it chowns and fills what it is given).
_UNSAFE_DIRS = {"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc",
                "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib"}


def boolean(value) -> str | None:
    return None if isinstance(value, bool) else "True or False"


def pattern(regex: re.Pattern, allowed: str) -> Check:
    return lambda v: None if isinstance(v, str) and regex.match(v) else allowed


def int_range(low: int, high: int, allowed: str | None = None) -> Check:
    text = allowed or f"an integer from {low} to {high}"
    return lambda v: None if isinstance(v, int) and not isinstance(v, bool) and low <= v <= high else text


def one_of(*choices: str) -> Check:
    text = "one of " + ", ".join(repr(c) for c in choices)
    return lambda v: None if v in choices else text


def supported_release(value) -> str | None:
    if value in SUPPORTED_MLFLOW_VERSIONS:
        return None
    return (f"a supported release from {SUPPORTED_MLFLOW_VERSIONS[0]} to {SUPPORTED_MLFLOW_VERSIONS[-1]}, one of "
            f"{', '.join(SUPPORTED_MLFLOW_VERSIONS)} (each has a lock in locks/; locks/README.md says how to add one)")


def absolute_safe_dir(value) -> str | None:
    allowed = "an absolute path below a dedicated directory, e.g. '/srv/mlflow' (not a system directory, no '..', no trailing '/')"
    if not isinstance(value, str) or not value.startswith("/") or "//" in value or value.endswith("/"):
        return allowed
    parts = value.rstrip("/").split("/")
    if any(p in (".", "..") for p in parts) or not re.match(r"^[A-Za-z0-9/._-]+$", value):
        return allowed
    if value.rstrip("/") in _UNSAFE_DIRS or value == "/":
        return allowed
    return None


def address(value) -> str | None:
    try:
        ipaddress.ip_address(value)
    except (ValueError, TypeError):
        return "an IP address to bind to, e.g. '0.0.0.0' or '127.0.0.1'"
    return None


def network(value) -> str | None:
    try:
        ipaddress.ip_network(value)
    except (ValueError, TypeError):
        return "a network like '10.0.5.0/24' (host bits zero) or an address like '10.0.5.7'"
    return None


def ipv4(value) -> str | None:
    try:
        ipaddress.IPv4Address(value)
    except (ValueError, TypeError):
        return "an IPv4 address like '192.0.2.10'"
    return None


def host_name(value) -> str | None:
    if isinstance(value, str):
        try:
            ipaddress.ip_address(value)
            return None
        except ValueError:
            if _HOSTNAME.match(value):
                return None
    return "a DNS name or IP address"


def optional_host_name(value) -> str | None:
    return None if value is None else host_name(value)


def url(value) -> str | None:
    if isinstance(value, str) and re.match(r"^https?://[^\s/$.?#][^\s]*$", value):
        return None
    return "an http:// or https:// URL"


def bucket(value) -> str | None:
    allowed = ("an S3 bucket name: 3-63 characters of lowercase letters, digits, '.' and '-', "
               "starting and ending with a letter or digit, not an IP address, no '..'")
    if not isinstance(value, str) or not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", value):
        return allowed
    if ".." in value or ".-" in value or "-." in value or value.startswith("xn--"):
        return allowed
    if re.match(r"^\d+\.\d+\.\d+\.\d+$", value):
        return allowed
    return None


def optional_password(value) -> str | None:
    if value is None:
        return None
    return pattern(_PASSWORD, "None (generate on the host) or 12-128 characters of A-Z a-z 0-9 . _ ~ -")(value)


_S3_ACCESS_KEY = re.compile(r"^[A-Za-z0-9_.-]{3,128}$")
# AWS secret keys are base64-like; no '$' (compose would interpolate it), quotes or spaces.
_S3_SECRET_KEY = re.compile(r"^[A-Za-z0-9/+=._~-]{8,128}$")


def optional_s3_access_key(value) -> str | None:
    return None if value is None else pattern(_S3_ACCESS_KEY, "None or 3-128 characters of letters, digits, '_', '.' and '-'")(value)


def optional_s3_secret_key(value) -> str | None:
    return None if value is None else pattern(_S3_SECRET_KEY, "None or 8-128 characters of A-Z a-z 0-9 / + = . _ ~ -")(value)


def optional_local_file(value) -> str | None:
    if value is None or (isinstance(value, str) and Path(value).is_file()):
        return None
    return f"None or the path of an existing local file (not found: {value})" if isinstance(value, str) else \
        "None or the path of an existing local file"


def region(value) -> str | None:
    return None if isinstance(value, str) and re.match(r"^[a-z0-9][a-z0-9-]{0,62}$", value) else \
        "a region name like 'us-east-1' (lowercase letters, digits and '-')"


def list_of(item: Check, allowed: str) -> Check:
    def check(value):
        if not isinstance(value, (list, tuple)) or any(item(v) for v in value):
            return allowed
        return None
    return check


def local_files(value) -> str | None:
    allowed = "a list of paths to existing local files"
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        return allowed
    missing = [v for v in value if not Path(v).is_file()]
    if missing:
        return f"{allowed} (not found: {', '.join(missing)})"
    return None


def split_names(value) -> list | None:
    """A list, or the comma-separated string `pyinfra --data key=a,b` passes."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    return None


def names_from(choices: tuple[str, ...]) -> Check:
    allowed = "a list (or comma-separated string) of " + ", ".join(repr(n) for n in choices)

    def check(value):
        names = split_names(value)
        if names is None or any(name not in choices for name in names):
            return allowed
        return None
    return check


def auth_users(value) -> str | None:
    """A list of {"name": ..., "permission": ..., optionally "password": ...}. The message names
    a bad entry by its name or position, never by a password."""
    allowed = ('a list of {"name": ..., "permission": ...} (optionally "password"): names of lowercase letters, '
               "digits, '_' and '-' starting with a letter (max 64), permission one of "
               + ", ".join(repr(p) for p in AUTH_USER_PERMISSIONS) + ", a given password 12-128 characters of "
               "A-Z a-z 0-9 . _ ~ -, each name once")
    if not isinstance(value, (list, tuple)):
        return allowed
    names = []
    for position, entry in enumerate(value, 1):
        if not isinstance(entry, dict) or set(entry) - {"name", "permission", "password"}:
            return f"{allowed} (entry {position} is not such a mapping)"
        name = entry.get("name")
        label = repr(name) if isinstance(name, str) and AUTH_USER.match(name) else f"entry {position}"
        if label.startswith("entry"):
            return f"{allowed} ({label}: bad or missing name)"
        if entry.get("permission") not in AUTH_USER_PERMISSIONS:
            return f"{allowed} ({label}: permission {entry.get('permission')!r})"
        if entry.get("password") is not None and optional_password(entry["password"]):
            return f"{allowed} ({label}: the given password)"
        names.append(name)
    if len(set(names)) != len(names):
        return f"{allowed} (a name appears twice)"
    return None


def optional(check: Check) -> Check:
    """None, or a value the check accepts."""
    return lambda v: None if v is None else (None if check(v) is None else f"None or {check(v)}")


_CALENDAR = re.compile(r"^[A-Za-z0-9*:,./~ +-]{1,100}$")


def calendar(value) -> str | None:
    # The full grammar is systemd's (`systemd-analyze calendar` checks it); this keeps the
    # value to one line of the characters it uses.
    return None if isinstance(value, str) and _CALENDAR.match(value) and value.strip() else \
        "a systemd OnCalendar expression, e.g. 'daily' or '*-*-* 03:30:00'"


def local_dir_name(value) -> str | None:
    if isinstance(value, str) and value.strip() and "\n" not in value:
        return None
    return "a directory path on the control machine"


def backup_source(value) -> str | None:
    allowed = ("a local backup directory holding manifest.json (made by backup.py), or 'host:/absolute/path' "
               "of one on the host")
    if isinstance(value, str) and value.startswith("host:"):
        path = value[len("host:"):]
        return None if path.startswith("/") and re.match(r"^[A-Za-z0-9/._-]+$", path) and ".." not in path else allowed
    if isinstance(value, str) and (Path(value) / "manifest.json").is_file():
        return None
    return f"{allowed} (not found: {value})" if isinstance(value, str) else allowed


# What `mlflow gc --older-than` parses (days, hours, minutes, seconds, in that order; decimals
# allowed), without the empty string MLflow's own pattern would also take (= everything deleted).
_GC_AGE = re.compile(r"^(?=.)(?:(?P<days>\d+(?:\.\d+)?)d)?(?:(?P<hours>\d+(?:\.\d+)?)h)?"
                     r"(?:(?P<minutes>\d+(?:\.\d+)?)m)?(?:(?P<seconds>\d+(?:\.\d+)?)s)?$")


def gc_age(value) -> str | None:
    allowed = ("a duration `mlflow gc --older-than` accepts: days, hours, minutes, seconds in that order, "
               "e.g. '30d', '12h', '1d12h', '90m' (at most 36500 days)")
    match = _GC_AGE.match(value) if isinstance(value, str) else None
    if not match:
        return allowed
    factors = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
    seconds = sum(float(number) * factors[unit] for unit, number in match.groupdict().items() if number)
    return None if seconds <= 36500 * 86400 else allowed


def host_path(value) -> str | None:
    """An absolute path on the host, in characters a shell and a compose volume take as they are."""
    if isinstance(value, str) and value.startswith("/") and value != "/" and not value.endswith("/") \
            and re.match(r"^[A-Za-z0-9/._@+-]+$", value) and ".." not in value.split("/") and ":" not in value:
        return None
    return "an absolute path on the host, e.g. '/srv/old-mlflow/mlruns' (letters, digits and / . _ @ + -; no '..')"


# The old server's PostgreSQL, as the importer's container on the compose network reaches it;
# no password in it (classic_database_password carries that).
_CLASSIC_DATABASE = re.compile(r"^postgresql(?:\+psycopg2)?://(?P<user>[A-Za-z0-9_.-]+)@(?P<host>[A-Za-z0-9.-]+)"
                               r"(?::\d{1,5})?/[A-Za-z0-9_.-]+(?:\?sslmode=(?:disable|allow|prefer|require))?$")


def classic_store(value) -> str | None:
    """The classic server's backend store: a host path (file store, SQLite file) or a PostgreSQL URI."""
    if isinstance(value, str) and re.match(r"^[a-z0-9+]+://", value):
        if value.startswith("mysql"):
            return "a host path or a postgresql:// URI (MySQL is not supported: the MLflow image has no MySQL driver)"
        if re.match(r"^[^/]+://[^/@]*:[^/@]*@", value):
            return ("a postgresql:// URI without the password (give that in classic_database_password or "
                    "$MLFLOW_STACK_CLASSIC_DATABASE_PASSWORD)")
        found = _CLASSIC_DATABASE.match(value)
        if found and found["host"].lower() in ("localhost", "127.0.0.1", "::1"):
            return ("a postgresql:// URI whose host the importer's container reaches: 'localhost' there is the "
                    "container itself (use the server's address, or 'postgres' for the stack's own)")
        if found:
            return None
        return "a postgresql://USER@HOST[:PORT]/DATABASE[?sslmode=...] URI without password"
    if host_path(value) is None:
        return None
    return ("a host path (file-store directory or SQLite file, e.g. '/srv/old-mlflow/mlruns') or a "
            "postgresql://USER@HOST[:PORT]/DATABASE URI")


def is_database_uri(value) -> bool:
    return isinstance(value, str) and "://" in value


def line_secret(value) -> str | None:
    """A password passed on one line of stdin: any characters but line breaks."""
    if isinstance(value, str) and 0 < len(value) <= 1024 and "\n" not in value and "\r" not in value:
        return None
    return "a non-empty string of up to 1024 characters without line breaks"


def local_file(value) -> str | None:
    allowed = "a path to a readable local file"
    if not isinstance(value, str) or not value.strip():
        return allowed
    if not Path(value).is_file() or not os.access(value, os.R_OK):
        return f"{allowed} (not found or not readable: {value})"
    return None
