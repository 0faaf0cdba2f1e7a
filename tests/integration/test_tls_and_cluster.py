"""TLS between an edge and its origin (certificates made by the test).

``cluster up`` is tested in test_cluster.py.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import EdgeProcess, ServerProcess


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_pki(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key) PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("pullkv test CA"))
        .issuer_name(_name("pullkv test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_edge_to_origin_over_tls(tmp_path: Path) -> None:
    ca, cert, key = make_pki(tmp_path)
    origin = ServerProcess(
        tmp_path / "origin",
        role="origin",
        args=["--tls-cert", str(cert), "--tls-key", str(key)],
    )
    origin.scheme = "https"
    origin.start(verify=str(ca))
    trusted = EdgeProcess(
        tmp_path,
        origin.url,
        origin.admin_token,
        origin.master_key,
        args=["--upstream-ca", str(ca), "--tls-cert", str(cert), "--tls-key", str(key)],
    )
    trusted.scheme = "https"
    untrusted = EdgeProcess(
        tmp_path, origin.url, origin.admin_token, origin.master_key, args=["--location", "x"]
    )
    try:
        trusted.start(verify=str(ca))
        untrusted.start()
        trust = ssl.create_default_context(cafile=str(ca))
        with httpx.Client(headers=origin.headers(), verify=trust) as c:
            ns = c.post(origin.namespaces_url, json={"title": "tls"}).json()["result"]["id"]
            assert c.put(f"{origin.namespaces_url}/{ns}/values/k", content=b"secret").is_success
            assert c.get(f"{trusted.namespaces_url}/{ns}/values/k").content == b"secret"
            assert c.get(f"{trusted.url}/readyz").status_code == 200
        # Without the CA the edge cannot verify the origin: not ready, and reads fail cleanly.
        assert httpx.get(f"{untrusted.url}/readyz").status_code == 503
        failed = httpx.get(f"{untrusted.namespaces_url}/{ns}/values/k", headers=origin.headers())
        assert failed.status_code == 503
    finally:
        untrusted.stop()
        trusted.stop()
        origin.stop()
