"""TLS: the settings' checks, the certificates' coverage, and when a rerun makes new ones
(facts in, commands out)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mlflow_stack.config import certificates
from mlflow_stack.steps import tls
from mlflow_stack.config.certificates import CertificateState, renewal, subject_alt_names
from mlflow_stack.config import ConfigError
from mlflow_stack.facts.host import TlsCertificates

from .helpers import REPO, make_config
from .plan import plan

NAMES = ("mlflow.lab.example.org", "10.0.0.5")
CURRENT = CertificateState(True, True, True, True, subject_alt_names(NAMES))
MAKE = "Ensure the TLS certificates | Make a new"


def self_signed(tmp_path: Path, *sans: str, days: int = 30) -> tuple[str, str]:
    """A certificate and key made by openssl, as a lab's own PKI would hand them out."""
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", str(days), "-subj", "/CN=test",
                    "-addext", f"subjectAltName={','.join(sans)}"], check=True, capture_output=True)
    return str(cert), str(key)


# --- settings ---------------------------------------------------------------------------------


def test_tls_is_self_signed_by_default_and_takes_only_its_three_values():
    assert make_config().tls == "self-signed"
    with pytest.raises(ConfigError, match=r"tls = 'on': must be one of"):
        make_config(tls="on")


@pytest.mark.parametrize("given", [{}, {"tls_cert_file": "C"}, {"tls_key_file": "K"}])
def test_files_mode_needs_the_certificate_its_key_and_ca(tmp_path, given):
    paths = {key: str(tmp_path / name) for key, name in given.items()}
    for path in paths.values():
        Path(path).write_text("x")
    with pytest.raises(ConfigError, match="tls = 'files' needs .*tls_key_file|tls = 'files' needs .*tls_cert_file"):
        make_config(tls="files", **paths)


def test_files_mode_refuses_a_certificate_that_does_not_cover_the_public_host(tmp_path):
    cert, key = self_signed(tmp_path, "DNS:other.example.org")
    with pytest.raises(ConfigError) as caught:
        make_config(tls="files", tls_cert_file=cert, tls_key_file=key, tls_ca_file=cert,
                    mlflow_public_host="mlflow.lab.example.org")
    assert f"tls_cert_file = {cert!r}: does not cover 'mlflow.lab.example.org' (it names other.example.org)" \
        in str(caught.value)


def test_files_mode_accepts_a_certificate_for_the_name_or_a_wildcard(tmp_path):
    cert, key = self_signed(tmp_path, "DNS:*.lab.example.org")
    config = make_config(tls="files", tls_cert_file=cert, tls_key_file=key, tls_ca_file=cert,
                         mlflow_public_host="mlflow.lab.example.org")
    assert config.ca_local_path == cert and config.tracking_uri.startswith("https://")


def test_files_mode_refuses_an_expired_certificate(tmp_path):
    from datetime import datetime, timedelta, timezone

    cert, key = self_signed(tmp_path, "DNS:mlflow.lab.example.org", days=1)
    later = datetime.now(timezone.utc) + timedelta(days=2)
    assert certificates.certificate_problem(cert, "mlflow.lab.example.org", now=later).startswith("expired on ")
    assert certificates.certificate_problem(cert, "mlflow.lab.example.org") is None


@pytest.mark.parametrize("days, warned", [(20, True), (29, True), (90, False)])
def test_the_summary_warns_when_the_lab_s_certificate_ends_within_30_days(tmp_path, days, warned):
    from pyinfra.api import Config, Inventory, State
    from pyinfra.context import ctx_host, ctx_state

    from mlflow_stack.steps.verify import summary

    cert, key = self_signed(tmp_path, "DNS:mlflow.lab.example.org", days=days)
    config = make_config(tls="files", tls_cert_file=cert, tls_key_file=key, tls_ca_file=cert,
                         mlflow_public_host="mlflow.lab.example.org")
    inventory = Inventory((["mlflow.lab.example.org"], {}))
    state = State(inventory, Config())
    with ctx_state.use(state), ctx_host.use(inventory.get_host("mlflow.lab.example.org")):
        text = summary(config)
    assert (f"WARNING: the TLS certificate {cert} (tls_cert_file) expires in " in text) is warned
    if warned:
        assert f"expires in {days - 1} days" in text or f"expires in {days} days" in text


def test_a_missing_certificate_file_is_named():
    with pytest.raises(ConfigError, match=r"tls_cert_file = '/nonexistent.pem': must be None or a path to a readable"):
        make_config(tls="files", tls_cert_file="/nonexistent.pem", tls_key_file="/nonexistent.key")


def test_certificate_files_without_files_mode_are_refused(tmp_path):
    cert, key = self_signed(tmp_path, "DNS:mlflow.example.org")
    with pytest.raises(ConfigError, match="tls_cert_file, tls_key_file given but tls = 'self-signed'"):
        make_config(tls_cert_file=cert, tls_key_file=key)


@pytest.mark.parametrize("name, covered", [
    ("mlflow.lab.example.org", True), ("MLflow.Lab.Example.org", True), ("a.mlflow.lab.example.org", False),
    ("10.0.0.5", True), ("10.0.0.6", False), ("lab.example.org", False),
])
def test_coverage_by_name_wildcard_and_ip(name, covered):
    assert certificates.covers(["mlflow.lab.example.org", "*.other.org"], ["10.0.0.5"], name) is covered
    assert certificates.covers(["*.lab.example.org"], [], "x.lab.example.org")


# --- renewal ----------------------------------------------------------------------------------


@pytest.mark.parametrize("state, names, expected", [
    (CertificateState(), NAMES, (True, True)),                                           # fresh host
    (CURRENT, NAMES, (False, False)),                                                    # rerun: nothing
    (CURRENT, ("mlflow.lab.example.org",), (False, True)),                               # names changed
    (CertificateState(True, True, True, False, CURRENT.server_sans), NAMES, (False, True)),  # close to its end
    (CertificateState(True, True, False, True, CURRENT.server_sans), NAMES, (False, True)),  # key lost
    (CertificateState(True, False, True, True, CURRENT.server_sans), NAMES, (True, True)),   # CA close to its end
    (CertificateState(False, True, True, True, CURRENT.server_sans), NAMES, (True, True)),   # CA key lost
])
def test_renewal_plan(state, names, expected):
    assert renewal(state, names) == expected


def config_for(**extra):
    return make_config(mlflow_public_host=NAMES[0], mlflow_public_names=[NAMES[1]], **extra)


def test_a_fresh_host_gets_a_ca_and_a_certificate_for_every_public_name_and_ip():
    config = config_for()
    result = plan(tls.ensure_certificates, config, {})
    (make,) = [op for op in result.ops if op.name.startswith(MAKE)]
    assert make.commands == [f"sh /srv/mlflow/tls-certs.sh --make ca --ca-dir /srv/mlflow/ca --tls-dir /srv/mlflow/tls "
                             f"--uid 10001 --gid 10001 --ca-days {certificates.CA_DAYS} "
                             f"--server-days {certificates.SERVER_DAYS} --san DNS:mlflow.lab.example.org --san IP:10.0.0.5"]
    assert "chmod 700 /srv/mlflow/ca" in result.commands
    # Fetched for clients to <tls_ca_local_dir>/<inventory name>/ca.crt.
    (fetch,) = [op for op in result.ops if "Fetch the CA certificate" in op.name]
    assert fetch.name.endswith(f"to tls/{config.inventory_name}/ca.crt") and fetch.commands


def test_a_rerun_with_current_certificates_makes_none():
    result = plan(tls.ensure_certificates, config_for(), {"TlsCertificates": CURRENT})
    assert not [op for op in result.ops if op.name.startswith(MAKE)]


def test_other_names_make_a_new_server_certificate_under_the_same_ca():
    result = plan(tls.ensure_certificates, config_for(), {"TlsCertificates": CertificateState(
        True, True, True, True, subject_alt_names(["old.example.org"]))})
    (make,) = [op for op in result.ops if op.name.startswith(MAKE)]
    assert make.commands[0].startswith("sh /srv/mlflow/tls-certs.sh --make server ")


@pytest.mark.parametrize("new_ca, restarted", [(False, ["proxy"]), (True, ["proxy", "mlflow"])])
def test_a_new_certificate_restarts_the_proxy_and_a_new_ca_mlflow_too(new_ca, restarted):
    config = config_for()
    running = {"ComposeServices": {"mlflow": {"proxy": {"state": "running"}, "mlflow": {"state": "running"}}}}
    state = CertificateState(not new_ca, True, True, False, CURRENT.server_sans)

    def steps(config):
        tls.reload_certificates(config, tls.ensure_certificates(config))

    result = plan(steps, config, {**running, "TlsCertificates": state})
    names = [op.name for op in result.ops if op.name.startswith("Load new TLS certificates") and op.commands]
    assert names == [f"Load new TLS certificates | Restart {service} to load the new "
                     f"{'certificate' if service == 'proxy' else 'CA'}" for service in restarted]


def test_no_restart_for_a_stack_that_does_not_exist_yet():
    def steps(config):
        return tls.reload_certificates(config, tls.ensure_certificates(config))

    result = plan(steps, config_for(), {})
    assert not [op for op in result.ops if op.name.startswith("Load new TLS certificates")]


def test_tls_off_makes_nothing_and_removes_the_proxy_config():
    result = plan(tls.ensure_certificates, config_for(tls="off"), {"File": {"/srv/mlflow/nginx.conf": {"mode": 644}}})
    assert result.commands == ["rm -f /srv/mlflow/nginx.conf"]


def test_files_mode_uploads_the_key_on_stdin_owned_by_the_stack_account(tmp_path):
    cert, key = self_signed(tmp_path, "DNS:mlflow.lab.example.org")
    config = config_for(tls="files", tls_cert_file=cert, tls_key_file=key, tls_ca_file=cert)
    result = plan(tls.ensure_certificates, config, {})
    upload = result.op("Ensure the TLS certificates | Upload the TLS key (tls_key_file)")
    assert upload.commands == ["umask 077; cat > /srv/mlflow/tls/server.key.new && chown 10001:10001 "
                               "/srv/mlflow/tls/server.key.new && mv /srv/mlflow/tls/server.key.new "
                               "/srv/mlflow/tls/server.key"]
    assert "PRIVATE KEY" not in result.text()
    assert not [op for op in result.ops if op.name.startswith(MAKE)]


# --- the host side: the script and the fact, run here with the machine's openssl ---------------


def test_the_script_makes_what_the_fact_then_finds_current(tmp_path):
    ca_dir, tls_dir = tmp_path / "ca", tmp_path / "tls"
    ca_dir.mkdir(mode=0o700), tls_dir.mkdir()
    sans = subject_alt_names(NAMES)
    subprocess.run(["sh", str(REPO / "files" / "host" / "tls-certs.sh"), "--make", "ca", "--ca-dir", str(ca_dir),
                    "--tls-dir", str(tls_dir), "--uid", "0", "--gid", "0", "--ca-days", "3650", "--server-days", "397",
                    *(arg for san in sans for arg in ("--san", san))], check=True, capture_output=True)
    assert oct((ca_dir / "ca.key").stat().st_mode & 0o777) == "0o600"
    assert oct((tls_dir / "server.key").stat().st_mode & 0o777) == "0o600"
    assert not (tls_dir / "ca.key").exists()
    fact = TlsCertificates()
    output = subprocess.run(fact.command(str(ca_dir), str(tls_dir), 30 * 86400), shell=True, capture_output=True,
                            text=True).stdout
    assert "PRIVATE" not in output
    state = fact.process(output.splitlines())
    assert state == CertificateState(True, True, True, True, sans)
    assert renewal(state, NAMES) == (False, False)
    # 398 days ahead the server certificate (397 days) is at its end: a rerun then renews it.
    later = fact.process(subprocess.run(fact.command(str(ca_dir), str(tls_dir), 398 * 86400), shell=True,
                                        capture_output=True, text=True).stdout.splitlines())
    assert renewal(later, NAMES) == (False, True)
