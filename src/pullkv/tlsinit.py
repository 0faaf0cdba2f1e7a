"""A private certificate authority for the TLS between pullkv's tiers (``pullkv tls init``).

Edges verify their upstream against a CA they are given (``--upstream-ca``), so a deployment
needs a CA and one certificate per server whose subject alternative names are the DNS names and
IP addresses clients use to reach it. This module makes both with the ``cryptography`` package:
ECDSA P-256 keys, SHA-256 signatures, and the extensions strict verifiers insist on (key
identifiers, key usage, ``serverAuth``).

Layout of the folder: ``ca.pem`` (hand to every edge and client), ``ca.key`` (keep it here, or
offline: it signs new servers), and ``NAME.pem`` / ``NAME.key`` per server. Running it again
with new names reuses the CA; an existing key is never replaced unless asked (renewal).
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pullkv.durable import make_dirs, write_file

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
# Ten years for the CA (replacing it means re-issuing every server), about two for servers
# (renewed with --force; short enough that a leaked key does not stay useful for ever).
CA_VALIDITY_DAYS = 3650
SERVER_VALIDITY_DAYS = 825
# Clocks of freshly booted machines lag a little; a certificate dated "now" would be refused.
BACKDATE = datetime.timedelta(hours=1)
# Without any name given, a server is reachable on this machine only.
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
DEFAULT_SERVERS = ("origin", "edge")

_SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*")


class TlsInitError(Exception):
    """Certificates cannot be made as asked (bad name, or files that would be overwritten)."""


@dataclass(frozen=True)
class ServerFiles:
    """One server's certificate and key, and the names the certificate vouches for."""

    name: str
    cert: Path
    key: Path
    names: tuple[str, ...]
    not_after: datetime.datetime


@dataclass(frozen=True)
class TlsResult:
    """What :func:`init_tls` made: the CA (new or reused) and each server's files."""

    ca_cert: Path
    ca_key: Path
    ca_created: bool
    servers: tuple[ServerFiles, ...]


def parse_server(spec: str) -> tuple[str, list[str]]:
    """``NAME=ADDR[,ADDR...]`` (or just ``NAME``, meaning this machine only) → (name, addrs)."""
    name, _, rest = spec.partition("=")
    name = name.strip()
    names = [part.strip() for part in rest.split(",") if part.strip()]
    if not _SERVER_NAME.fullmatch(name) or name == "ca":
        raise TlsInitError(
            f"bad server name {name!r} in {spec!r}: letters, digits, '.', '-' and '_' "
            "(it names the files), and not 'ca'"
        )
    return name, names or list(LOCAL_NAMES)


def _general_name(raw: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(raw))
    except ValueError:
        pass
    if len(raw) > 253 or not _DNS_NAME.fullmatch(raw):
        raise TlsInitError(f"{raw!r} is neither an IP address nor a DNS name")
    return x509.DNSName(raw.lower())


def _subject(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pullkv"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _make_ca(
    now: datetime.datetime, days: int
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _subject(f"pullkv CA {now:%Y-%m-%d}")
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        # path_length=0: this CA signs servers only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _load_ca(
    cert_path: Path, key_path: Path
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise TlsInitError(f"cannot use the CA in {cert_path.parent}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise TlsInitError(f"{key_path} is not the private key of {cert_path}")
    return key, cert


def _make_server(
    name: str,
    names: Sequence[str],
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    now: datetime.datetime,
    days: int,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    # A server certificate must not outlive the CA that vouches for it.
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_subject(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def init_tls(
    folder: Path,
    servers: Mapping[str, Sequence[str]],
    *,
    now: datetime.datetime,
    days: int = SERVER_VALIDITY_DAYS,
    ca_days: int = CA_VALIDITY_DAYS,
    force: bool = False,
) -> TlsResult:
    """Make (or reuse) the CA in ``folder`` and a key and certificate for each server.

    ``servers`` maps a server's name (its files are ``NAME.pem`` and ``NAME.key``) to the DNS
    names and IP addresses its certificate covers. Everything is checked before anything is
    written; a server whose files exist is refused unless ``force`` (renewal: new key and
    certificate). The CA is never replaced: remove ``ca.key`` and ``ca.pem`` to start anew.
    Keys are written 0600, certificates 0644, each durably.
    """
    if not servers:
        raise TlsInitError("name at least one server")
    for name, names in servers.items():
        parse_server(name)  # the same rules for names given through the library
        if not names:
            raise TlsInitError(f"server {name!r}: give at least one DNS name or IP address")
        for raw in names:
            _general_name(raw)
    ca_cert_path, ca_key_path = folder / CA_CERT, folder / CA_KEY
    if ca_cert_path.exists() != ca_key_path.exists():
        present, missing = (
            (ca_cert_path, ca_key_path) if ca_cert_path.exists() else (ca_key_path, ca_cert_path)
        )
        raise TlsInitError(
            f"{present} exists but {missing} does not: restore it, or remove both to make a new CA"
        )
    if not force:
        taken = [
            str(path)
            for name in servers
            for path in (folder / f"{name}.pem", folder / f"{name}.key")
            if path.exists()
        ]
        if taken:
            raise TlsInitError(
                f"not overwriting {', '.join(taken)}: remove them, or pass --force to renew"
            )

    make_dirs(folder, 0o700)  # it holds the CA's key
    ca_created = not ca_cert_path.exists()
    if ca_created:
        ca_key, ca_cert = _make_ca(now, ca_days)
        # Key first: a crash in between leaves a key without a certificate, refused above
        # with a message, rather than a certificate whose key is lost.
        write_file(ca_key_path, _key_pem(ca_key), mode=0o600, exclusive=True)
        write_file(ca_cert_path, _cert_pem(ca_cert), mode=0o644, exclusive=True)
    else:
        ca_key, ca_cert = _load_ca(ca_cert_path, ca_key_path)

    made = []
    for name, names in servers.items():
        key, cert = _make_server(name, names, ca_key, ca_cert, now, days)
        key_path, cert_path = folder / f"{name}.key", folder / f"{name}.pem"
        write_file(key_path, _key_pem(key), mode=0o600, exclusive=not force)
        write_file(cert_path, _cert_pem(cert), mode=0o644, exclusive=not force)
        made.append(ServerFiles(name, cert_path, key_path, tuple(names), cert.not_valid_after_utc))
    return TlsResult(ca_cert_path, ca_key_path, ca_created, tuple(made))
