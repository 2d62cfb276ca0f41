import pytest

from mlflow_stack.config.settings import SECRET_ENV_VARS

from .helpers import make_config


@pytest.fixture(autouse=True)
def _no_secret_env(monkeypatch):
    """A developer's exported MLFLOW_STACK_* password must not change what the tests see."""
    for name in SECRET_ENV_VARS.values():
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _local_files_in_tmp(tmp_path, monkeypatch):
    """What the deploy writes on the control machine (the fetched CA certificate, under
    tls_ca_local_dir relative to where pyinfra runs; the digest cache) lands in the test's own directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def default_config():
    return make_config()


@pytest.fixture
def ca_cert(tmp_path):
    """A local PEM file as extra_ca_certificates expects (content is not parsed)."""
    path = tmp_path / "corp-root.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n")
    return str(path)
