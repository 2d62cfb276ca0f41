"""files/image/cached_basic_auth.py (runs inside the MLflow image) against MLflow's real auth
store on SQLite: a remembered credential skips the hash, and nothing it remembers outlives a
password change, a deletion or a wrong password."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from mlflow_stack.steps.stack_files import IMAGE_FILES

pytest.importorskip("flask_wtf")  # mlflow[auth], in requirements-test.txt


@pytest.fixture
def auth(tmp_path, monkeypatch):
    """The module with a cache of `seconds`, MLflow's store on a fresh SQLite database, and
    a counter of password hash checks."""

    def load(seconds: int = 300):
        ini = tmp_path / "auth.ini"
        ini.write_text("[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///unused.db\n"
                       f"[mlflow_stack]\ncredential_cache_seconds = {seconds}\n")
        monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(ini))
        import mlflow.server.auth as mlflow_auth
        from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

        store = SqlAlchemyStore()
        store.init_db(f"sqlite:///{tmp_path}/auth.db")
        monkeypatch.setattr(mlflow_auth, "store", store)
        monkeypatch.setattr(mlflow_auth, "_authenticate_cached", mlflow_auth._authenticate_cached)
        spec = importlib.util.spec_from_file_location("cached_basic_auth", IMAGE_FILES / "cached_basic_auth.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        checks = []
        real_check = module.check_password_hash
        monkeypatch.setattr(module, "check_password_hash", lambda *args: checks.append(1) or real_check(*args))
        return module, store, checks

    yield load
    sys.modules.pop("cached_basic_auth", None)


PASSWORD = "alice-password-0123"


def test_a_verified_credential_is_not_hashed_again(auth):
    module, store, checks = auth()
    store.create_user("alice", PASSWORD)
    assert module.verified_user("alice", PASSWORD).username == "alice"
    assert module.verified_user("alice", PASSWORD).username == "alice"
    assert module.verified_user("alice", PASSWORD).username == "alice"
    assert len(checks) == 1


def test_wrong_passwords_are_never_remembered(auth):
    module, store, checks = auth()
    store.create_user("alice", PASSWORD)
    assert module.verified_user("alice", "wrong-password-0123") is None
    assert module.verified_user("alice", "wrong-password-0123") is None
    assert len(checks) == 2
    assert module.verified_user("nobody", PASSWORD) is None


def test_a_changed_password_holds_from_the_next_call(auth):
    """Changed by another process (another worker, tracking server, the deploy's user sync):
    this process's cache never saw it, and still refuses the old password at once."""
    module, store, checks = auth()
    store.create_user("alice", PASSWORD)
    assert module.verified_user("alice", PASSWORD)
    store.update_user("alice", password="alice-new-password-0123")
    assert module.verified_user("alice", PASSWORD) is None
    assert module.verified_user("alice", "alice-new-password-0123").username == "alice"


def test_a_deleted_user_is_refused_from_the_next_call(auth):
    module, store, _ = auth()
    store.create_user("alice", PASSWORD)
    assert module.verified_user("alice", PASSWORD)
    store.delete_user("alice")
    assert module.verified_user("alice", PASSWORD) is None


def test_the_admin_flag_is_read_fresh(auth):
    module, store, _ = auth()
    store.create_user("alice", PASSWORD, is_admin=True)
    assert module.verified_user("alice", PASSWORD).is_admin
    store.update_user("alice", is_admin=False)
    assert not module.verified_user("alice", PASSWORD).is_admin


def test_zero_seconds_checks_the_hash_on_every_call(auth):
    module, store, checks = auth(seconds=0)
    store.create_user("alice", PASSWORD)
    for _ in range(3):
        assert module.verified_user("alice", PASSWORD)
    assert len(checks) == 3


def test_the_fastapi_routes_use_the_same_check(auth):
    import mlflow.server.auth as mlflow_auth

    module, _, _ = auth()
    assert mlflow_auth._authenticate_cached is module.verified_user
