"""TLS for the tracking API and the presigned S3 traffic: the proxy's certificate and key on
the host, the CA certificate fetched for clients, and the reload after a new certificate.

self-signed: openssl on the host makes a CA (key root-only, mounted nowhere) and a server
certificate for mlflow_public_host + mlflow_public_names; a rerun makes them anew close to
their end or when the names change (certificates.renewal), and changes nothing otherwise.
files: the user's certificate, key and CA, uploaded (the key on stdin: no diff, no argv).
"""

from __future__ import annotations

from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server
from pyinfra.operations.util import any_changed

from mlflow_stack.config import certificates
from mlflow_stack.config import StackConfig, config_from_host
from mlflow_stack.facts.host import ComposeServices, TlsCertificates
from mlflow_stack.steps.stack import wait_command
from mlflow_stack.steps.secrets import secret_file
from mlflow_stack.steps.stack_files import render, script_command


@deploy("Ensure the TLS certificates")
def ensure_certificates(config: StackConfig | None = None):
    """Returns (operations whose change means the proxy (or a cluster's balancer) must load a new
    certificate, those whose change means MLflow must trust a new CA); both empty when TLS is
    off. In a cluster (tls = 'files'): the balancer gets the certificate and key, each tracking
    server the CA, the data host nothing."""
    config = config or config_from_host()
    if config.tls == "off":
        files.file(name="Remove nginx.conf (TLS is off)", path=f"{config.stack_dir}/nginx.conf", present=False)
        return (), ()
    if not config.proxied:
        # A cluster: TLS is the balancer's (balancer.conf); the data host is open to the members only.
        files.file(name="Remove nginx.conf (TLS is the balancer's)", path=f"{config.stack_dir}/nginx.conf",
                   present=False)
        if config.role == "data":
            return (), ()
    # The proxy's config: nginx reads it at start only, like the certificate.
    nginx_conf = files.put(name="Upload nginx.conf", src=StringIO(render("nginx.conf.j2", config)),
                           dest=f"{config.stack_dir}/nginx.conf", user="root", group="root", mode="644") \
        if config.proxied else None
    files.directory(name=f"Ensure {config.tls_dir}", path=config.tls_dir, user="root", group="root", mode="755")
    if config.tls == "files":
        ca = files.put(name="Upload the CA certificate (tls_ca_file)", src=config.tls_ca_file,
                       dest=f"{config.tls_dir}/ca.crt", user="root", group="root", mode="644")
        if config.role == "tracking":
            # Its own S3 calls go to the balancer's name over TLS: it trusts the balancer's CA.
            return (), (ca,)
        owner = {"user": str(config.stack_uid), "group": str(config.stack_gid)}
        return (
            *((nginx_conf,) if nginx_conf else ()),
            secret_file(name="Upload the TLS certificate (tls_cert_file)", path=f"{config.tls_dir}/server.crt",
                        content=Path(config.tls_cert_file).read_bytes(), **owner),
            secret_file(name="Upload the TLS key (tls_key_file)", path=f"{config.tls_dir}/server.key",
                        content=Path(config.tls_key_file).read_bytes(), **owner),
        ), (ca,)

    apt.packages(name="Ensure openssl (makes the CA and certificate on the host)", packages=["openssl"])
    files.directory(name=f"Ensure {config.ca_dir} (the CA's key, root only)", path=config.ca_dir,
                    user="root", group="root", mode="700")
    state = host.get_fact(TlsCertificates, ca_dir=config.ca_dir, tls_dir=config.tls_dir,
                          seconds=certificates.RENEW_DAYS * 86400)
    new_ca, new_server = certificates.renewal(state, config.tls_names)
    made = None
    if new_server:
        sans = certificates.subject_alt_names(config.tls_names)
        made = server.shell(
            name="Make a new CA and server certificate" if new_ca else "Make a new server certificate "
                 "(missing, close to its end, or for other names)",
            commands=[script_command(f"{config.stack_dir}/tls-certs.sh", shell="sh", make="ca" if new_ca else "server",
                                     ca_dir=config.ca_dir, tls_dir=config.tls_dir, uid=config.stack_uid,
                                     gid=config.stack_gid, ca_days=certificates.CA_DAYS,
                                     server_days=certificates.SERVER_DAYS, san=sans)],
        )
    # For clients' REQUESTS_CA_BUNDLE (the smoke test uses it too).
    files.get(name=f"Fetch the CA certificate to {config.ca_local_path}", src=f"{config.ca_dir}/ca.crt",
              dest=config.ca_local_path, create_local_dir=True)
    return ((nginx_conf, made), (made,) if new_ca else ()) if made else ((nginx_conf,), ())


@deploy("Load new TLS certificates")
def reload_certificates(config: StackConfig | None = None, certificates_changed=((), ())):
    """After the start: restart the proxy when its certificate changed (nginx reads it only
    at start), MLflow when the CA did; not a container that did not exist while planning (the
    start just created it with the new files). `certificates_changed`: ensure_certificates'
    result. Returns the operations."""
    config = config or config_from_host()
    existing = host.get_fact(ComposeServices, project=config.compose_project) if config.tls != "off" else {}
    compose = f"docker compose --project-directory {config.stack_dir} --project-name {config.compose_project}"
    restarts = []
    certificate_changed, ca_changed = certificates_changed

    def readers(name: str) -> list[str]:
        return [service.name for service in config.services if any(file.name == name for file in service.config_files)]

    # nginx (the proxy, or a cluster's balancer) reads the certificate at start only; the MLflow
    # servers the CA (their own S3 calls go through the proxy or the balancer).
    certificate_readers = readers("tls/server.crt")
    for service, changed in [*((name, certificate_changed) for name in certificate_readers),
                             *((name, ca_changed) for name in readers("tls/ca.crt"))]:
        if service in existing and changed:
            restarts.append(server.shell(
                name=f"Restart {service} to load the new {'certificate' if service in certificate_readers else 'CA'}",
                commands=[f"{compose} restart {service}", wait_command(config, service)],
                _if=any_changed(*changed),
            ))
    return restarts
