"""Certificates, without touching a host: which names a certificate covers, the checks of the
TLS settings, and when the self-signed server certificate must be made anew.

The keys of the self-signed CA and server are made by openssl on the host
(files/host/tls-certs.sh) and never leave it; tls.py runs that and reads the fact below.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

# Validity of what the deploy makes, and how close to the end a rerun makes it anew.
CA_DAYS = 3650
SERVER_DAYS = 397  # what browsers accept for a server certificate
RENEW_DAYS = 30
# A certificate the deploy does not renew (the lab's own: tls = 'files') is warned of this long
# before its end, by the deploy's summary and by status.py.
WARN_DAYS = 30


def _ip(name: str):
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def subject_alt_names(names: Iterable[str]) -> tuple[str, ...]:
    """openssl's subjectAltName entries for the names: IP addresses as IP SANs."""
    return tuple(f"IP:{_ip(name)}" if _ip(name) else f"DNS:{name.lower()}" for name in names)


def parse_openssl_sans(text: str) -> tuple[str, ...]:
    """`openssl x509 -ext subjectAltName` output ('DNS:a, IP Address:10.0.0.1') in the form of
    subject_alt_names, so the two compare."""
    out = []
    for entry in text.replace("\n", ",").split(","):
        kind, _, value = entry.strip().partition(":")
        if kind == "DNS":
            out.append(f"DNS:{value.lower()}")
        elif kind == "IP Address" and _ip(value):
            out.append(f"IP:{_ip(value)}")
    return tuple(out)


def covers(dns_names: Iterable[str], ip_addresses: Iterable[Any], name: str) -> bool:
    """Whether a certificate with these SANs is valid for `name` (a '*.' wildcard covers one label)."""
    address = _ip(name)
    if address is not None:
        return any(ipaddress.ip_address(str(ip)) == address for ip in ip_addresses)
    name = name.lower().rstrip(".")
    for pattern in (n.lower().rstrip(".") for n in dns_names):
        if pattern == name:
            return True
        if pattern.startswith("*.") and "." in name and name.split(".", 1)[1] == pattern[2:]:
            return True
    return False


def _first_certificate(path: str):
    from cryptography import x509

    return x509.load_pem_x509_certificates(open(path, "rb").read())[0]


def expires(path: str) -> datetime:
    """When the (first) certificate of the PEM file at `path` ends, in UTC."""
    return _first_certificate(path).not_valid_after_utc


def days_left(path: str, now: datetime | None = None) -> int:
    """Whole days until the certificate at `path` ends (negative: ended)."""
    return (expires(path) - (now or datetime.now(timezone.utc))).days


def certificate_problem(path: str, name: str, now: datetime | None = None) -> str | None:
    """Why the PEM certificate at `path` cannot serve `name`; None when it can."""
    from cryptography import x509

    try:
        certificate = _first_certificate(path)
    except (OSError, ValueError) as error:
        return f"not a PEM certificate ({error})"
    if certificate.not_valid_after_utc <= (now or datetime.now(timezone.utc)):
        return f"expired on {certificate.not_valid_after_utc:%Y-%m-%d}; clients would refuse it"
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names, ips = sans.get_values_for_type(x509.DNSName), sans.get_values_for_type(x509.IPAddress)
    except x509.ExtensionNotFound:
        dns_names, ips = [], []
    if not covers(dns_names, ips, name):
        listed = ", ".join([*dns_names, *map(str, ips)]) or "no subjectAltName"
        return f"does not cover {name!r} (it names {listed}); clients would refuse it"
    return None


def tls_errors(values: dict[str, Any], public_host: str | None) -> list[str]:
    """The checks that tie the TLS settings together (config.py reports them with the rest);
    `public_host`: the name the certificate must cover (None: checked elsewhere)."""
    tls = values.get("tls")
    given = [key for key in ("tls_cert_file", "tls_key_file", "tls_ca_file") if values.get(key)]
    if tls != "files":
        if tls and given:
            return [f"{', '.join(given)} given but tls = {tls!r}: they are used only with tls = 'files'"]
        return []
    missing = [key for key in ("tls_cert_file", "tls_key_file", "tls_ca_file") if not values.get(key)]
    if missing:
        return [f"tls = 'files' needs {', '.join(missing)}: your certificate (chain), its key and the CA "
                "certificate that signed it (for a public CA: its root), as paths on this machine"]
    problem = certificate_problem(values["tls_cert_file"], public_host) if public_host else None
    return [f"tls_cert_file = {values['tls_cert_file']!r}: {problem}"] if problem else []


@dataclass(frozen=True)
class CertificateState:
    """What the host has, from the TlsCertificates fact."""
    ca_key: bool = False        # ca.key present
    ca_valid: bool = False      # ca.crt present and valid beyond RENEW_DAYS
    server_key: bool = False
    server_valid: bool = False  # server.crt present, valid beyond RENEW_DAYS, signed by ca.crt
    server_sans: tuple[str, ...] = ()


def renewal(state: CertificateState, names: Iterable[str]) -> tuple[bool, bool]:
    """(make a new CA, make a new server certificate): the CA when it is missing or close to
    its end; the server certificate then too, or when it is missing, close to its end, not
    signed by the CA, or its names differ from the settings'."""
    new_ca = not (state.ca_key and state.ca_valid)
    new_server = (new_ca or not state.server_key or not state.server_valid
                  or sorted(state.server_sans) != sorted(subject_alt_names(names)))
    return new_ca, new_server
