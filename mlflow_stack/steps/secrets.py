"""Database and MinIO passwords: generated on the host once, or taken from the config.

They live in one root-owned 0600 env file that compose reads for ${...} interpolation.
A value never appears in a command line, in pyinfra's output or in a diff: generated values
are made and written by the remote shell itself; given values travel on the remote shell's
stdin and are compared by sha256 only.
"""

from __future__ import annotations

import hashlib

from pyinfra import host
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.facts.files import Sha256File

from mlflow_stack.config import StackConfig, config_from_host
from mlflow_stack.facts.host import EnvFileDigests
from mlflow_stack.services import SECRET_FILE_KEYS, secret_keys

_EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()
# 32 random bytes as 64 hex characters: URL-safe, so it can sit in the database URI.
_RANDOM_HEX = "$(head -c 32 /dev/urandom | od -An -v -tx1 | tr -dc 0-9a-f)"

# Setting -> the key it is kept under in the env file: every key a service of any topology reads
# (mlflow_stack/services/), from the setting of the same name in lower case.
SECRET_KEYS = {key.lower(): key for key in SECRET_FILE_KEYS}


def secret_values(config: StackConfig) -> dict[str, str | None]:
    """Env key -> given value, or None to generate it on the host: the keys this host's services read."""
    return {key: getattr(config, key.lower()) for key in secret_keys(config.services)}


@operation()
def env_secrets(path: str, values: dict[str, str | None], regenerate: tuple[str, ...] = ()):
    """Ensure an env file holds every key: generated ones kept once made, given ones current.

    + path: env file on the host (root:root 0600)
    + values: key -> given value, or None to generate 64 hex characters on the host
    + regenerate: keys (with value None) to generate anew even though they are present

    **Example:**

    .. code:: python

        env_secrets(
            name="Ensure the database password in /srv/mlflow/.env",
            path="/srv/mlflow/.env",
            values={"POSTGRES_PASSWORD": None},
        )
    """
    digests = host.get_fact(EnvFileDigests, path=path)
    present = {key for key, digest in digests.items() if digest != _EMPTY_DIGEST}
    to_generate = [key for key, value in values.items()
                   if value is None and (key not in present or key in regenerate)]
    to_write = {
        key: value
        for key, value in values.items()
        if value is not None and digests.get(key) != hashlib.sha256(value.encode()).hexdigest()
    }
    if not to_generate and not to_write:
        host.noop(f"{path} holds every secret")
        return

    if to_write:
        # The values reach the remote shell on stdin: not in argv, not in a temporary file.
        keys = "|".join(to_write)
        content = "".join(f"{key}={value}\n" for key, value in to_write.items())
        yield StringCommand(
            f"umask 077; touch {path}; {{ grep -v -E '^({keys})=' {path} || true; cat; }} > {path}.new "
            f"&& mv {path}.new {path}",
            _stdin=content,
        )
    if to_generate:
        keys = "|".join(to_generate)
        appends = "; ".join(f'echo "{key}={_RANDOM_HEX}"' for key in to_generate)
        yield StringCommand(
            f"umask 077; touch {path}; {{ grep -v -E '^({keys})=' {path} || true; {appends}; }} > {path}.new "
            f"&& mv {path}.new {path}"
        )
    yield StringCommand(f"chown root:root {path} && chmod 600 {path}")


@deploy("Ensure the stack's secrets exist on the host")
def ensure_secrets(config: StackConfig | None = None):
    """Returns the operation, whose change means the stack must be brought up again."""
    config = config or config_from_host()
    return env_secrets(
        name=f"Ensure database and MinIO passwords in {config.secrets_file}",
        path=config.secrets_file,
        values=secret_values(config),
        regenerate=tuple(SECRET_KEYS[setting] for setting in config.rotate_secrets),
    )


@operation()
def secret_file(path: str, content: bytes, user: str, group: str):
    """Keep a file with secret content (mode 0600): compared by sha256, written from stdin.

    + path: file on the host
    + content: what it must hold
    + user: owner
    + group: group

    **Example:**

    .. code:: python

        secret_file(name="Upload the TLS key", path="/srv/mlflow/tls/server.key", content=key,
                    user="10001", group="10001")
    """
    if host.get_fact(Sha256File, path=path) == hashlib.sha256(content).hexdigest():
        host.noop(f"{path} is up to date")
        return
    yield StringCommand(f"umask 077; cat > {path}.new && chown {user}:{group} {path}.new && mv {path}.new {path}",
                        _stdin=content.decode())
