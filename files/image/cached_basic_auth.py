"""MLflow's basic authentication with a credential cache that cannot go stale.

Copied into the MLflow image (on PYTHONPATH) and named by auth.ini:
    authorization_function = cached_basic_auth:authenticate_request

MLflow verifies the password's hash on every request (werkzeug's, slow by design: 50-250 ms of
CPU here). Its own cache (`auth_cache_ttl_seconds`) trusts a verified credential for its whole
lifetime, in one process only: a password changed, a user deleted elsewhere (another worker,
another tracking server, the deploy's user sync) still gets in until it ends.

This cache remembers, per credential, the password hash it was verified against, and reads the
user's row on every request (one indexed query): the same hash there means the same password is
still valid and needs no rehash; a changed hash, or no row, means a full check, which the old
password fails. So a password change or a deletion, by any process, holds from the next request.
The admin flag comes from the row read for this request (MLflow's admin check is pointed here:
one user query per request instead of up to three); permissions are MLflow's, per request. Wrong
passwords are never remembered. Keys are an HMAC of the password under a per-process random key,
never the password. An entry lives `credential_cache_seconds` ([mlflow_stack] in auth.ini; 0
turns the cache off).

MLflow's FastAPI routes check credentials through `_authenticate_cached`; it is pointed here too.
"""

from __future__ import annotations

import configparser
import hmac
import os
import secrets
import threading

from cachetools import TTLCache
from flask import g, request
from mlflow.exceptions import MlflowException
from mlflow.server import auth as mlflow_auth
from werkzeug.security import check_password_hash


def _cache_seconds() -> int:
    config = configparser.ConfigParser()
    config.read(os.environ.get("MLFLOW_AUTH_CONFIG_PATH", ""))
    return config.getint("mlflow_stack", "credential_cache_seconds", fallback=0)


_SECONDS = _cache_seconds()
_VERIFIED: TTLCache | None = TTLCache(maxsize=10000, ttl=_SECONDS) if _SECONDS > 0 else None
_LOCK = threading.Lock()  # TTLCache is not thread-safe; MLflow serves requests from a thread pool
_KEY = secrets.token_bytes(32)


def verified_user(username: str, password: str):
    """The user when `password` is theirs now, else None."""
    try:
        user = mlflow_auth.store.get_user(username)
    except MlflowException:
        return None  # no such user (any more)
    credential = (username, hmac.new(_KEY, password.encode("utf-8"), "sha256").digest())
    if _VERIFIED is not None:
        with _LOCK:
            known_hash = _VERIFIED.get(credential)
        if known_hash is not None and hmac.compare_digest(known_hash, user.password_hash):
            return user
    if not check_password_hash(user.password_hash, password):
        return None
    legacy_admin = getattr(mlflow_auth, "_is_disabled_legacy_admin_login", None)  # MLflow >= 3.17
    if legacy_admin is not None and legacy_admin(username, password, user):
        return None
    if _VERIFIED is not None:
        with _LOCK:
            _VERIFIED[credential] = user.password_hash
    return user


def authenticate_request():
    """MLflow's authorization function: the request's Authorization when its credential is valid,
    else the 401 that asks for one. MLflow asks several times per request: answered once."""
    auth = request.authorization
    if auth is None or not auth.username or auth.password is None:
        return mlflow_auth.make_basic_auth_response()
    if "mlflow_stack_user" not in g:
        g.mlflow_stack_user = verified_user(auth.username, auth.password)
    return auth if g.mlflow_stack_user is not None else mlflow_auth.make_basic_auth_response()


def sender_is_admin() -> bool:
    """MLflow's admin check, from the user row this request's authentication read (MLflow would
    read it again, sometimes twice: one query per request instead of three)."""
    auth = request.authorization
    if auth is None or "mlflow_stack_user" not in g:
        return _mlflow_sender_is_admin()
    return g.mlflow_stack_user is not None and g.mlflow_stack_user.is_admin


_mlflow_sender_is_admin = mlflow_auth.sender_is_admin
mlflow_auth.sender_is_admin = sender_is_admin
if hasattr(mlflow_auth, "_authenticate_cached"):
    mlflow_auth._authenticate_cached = verified_user
