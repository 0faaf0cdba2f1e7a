"""``pullkv tls init``: a CA and server certificates that real TLS handshakes accept."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509

from pullkv.cli.tls import tls
from pullkv.tlsinit import TlsInitError, init_tls, parse_server

NOW = datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.UTC)


def _handshake(ca: Path, cert: Path, key: Path, server_hostname: str) -> str:
    """A real TLS handshake on 127.0.0.1 between a server using cert/key and a client that
    trusts only ``ca`` and checks ``server_hostname``; returns the negotiated version."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(ca))
    # Python 3.13 sets this by default: the certificates must pass the strict checks too.
    client_context.verify_flags |= ssl.VERIFY_X509_STRICT
    errors: list[BaseException] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                with server_context.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.sendall(b"ok")
            except (OSError, ssl.SSLError) as exc:  # the client's refusal shows up here too
                errors.append(exc)

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with (
                socket.create_connection(listener.getsockname(), timeout=10) as raw,
                client_context.wrap_socket(raw, server_hostname=server_hostname) as conn,
            ):
                assert conn.recv(2) == b"ok"
                return str(conn.version())
        finally:
            thread.join(10)


def test_certificates_verify_against_the_ca_by_ip_and_dns(tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)  # a real handshake checks the real clock
    result = init_tls(
        tmp_path / "tls",
        {"origin": ["127.0.0.1", "origin.internal"], "lhr": ["127.0.0.1", "lhr.internal"]},
        now=now,
    )
    assert result.ca_created
    origin, lhr = result.servers
    for server, dns in ((origin, "origin.internal"), (lhr, "lhr.internal")):
        assert _handshake(result.ca_cert, server.cert, server.key, "127.0.0.1").startswith("TLS")
        _handshake(result.ca_cert, server.cert, server.key, dns)
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(result.ca_cert, origin.cert, origin.key, "lhr.internal")


def test_a_foreign_ca_is_refused(tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    ours = init_tls(tmp_path / "ours", {"origin": ["127.0.0.1"]}, now=now)
    theirs = init_tls(tmp_path / "theirs", {"origin": ["127.0.0.1"]}, now=now)
    server = ours.servers[0]
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        _handshake(theirs.ca_cert, server.cert, server.key, "127.0.0.1")


def test_certificate_contents(tmp_path: Path) -> None:
    result = init_tls(
        tmp_path, {"origin": ["10.0.0.1", "Origin.Internal", "fd00::1"]}, now=NOW, days=30
    )
    ca = x509.load_pem_x509_certificate(result.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(result.servers[0].cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["origin.internal"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.1"),
        ipaddress.ip_address("fd00::1"),
    ]
    assert cert.not_valid_after_utc == NOW + datetime.timedelta(days=30)
    assert cert.not_valid_before_utc < NOW < ca.not_valid_after_utc
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_file_modes(tmp_path: Path) -> None:
    result = init_tls(tmp_path / "tls", {"origin": ["127.0.0.1"]}, now=NOW)
    server = result.servers[0]
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    for key in (result.ca_key, server.key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    for cert in (result.ca_cert, server.cert):
        assert stat.S_IMODE(cert.stat().st_mode) == 0o644 & ~_umask()
    names = sorted(p.name for p in (tmp_path / "tls").iterdir())
    assert names == ["ca.key", "ca.pem", "origin.key", "origin.pem"]  # no temporaries left


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_existing_keys_are_never_overwritten(tmp_path: Path) -> None:
    first = init_tls(tmp_path, {"origin": ["127.0.0.1"]}, now=NOW)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(TlsInitError, match=r"not overwriting .*origin\.pem.*--force"):
        init_tls(tmp_path, {"lhr": ["10.0.0.2"], "origin": ["127.0.0.1"]}, now=NOW)
    # Refused before anything was written: not even the new server's files.
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before

    # A new server is signed by the same CA, which is left as it was.
    added = init_tls(tmp_path, {"lhr": ["10.0.0.2"]}, now=NOW)
    assert not added.ca_created
    assert added.ca_cert.read_bytes() == before["ca.pem"]
    ca = x509.load_pem_x509_certificate(added.ca_cert.read_bytes())
    x509.load_pem_x509_certificate(added.servers[0].cert.read_bytes()).verify_directly_issued_by(ca)

    # --force renews a server (new key) but never the CA.
    renewed = init_tls(tmp_path, {"origin": ["127.0.0.1"]}, now=NOW, force=True)
    assert renewed.servers[0].key.read_bytes() != before["origin.key"]
    assert renewed.ca_key.read_bytes() == before["ca.key"] == first.ca_key.read_bytes()
    assert stat.S_IMODE(renewed.servers[0].key.stat().st_mode) == 0o600


def test_half_a_ca_is_refused(tmp_path: Path) -> None:
    init_tls(tmp_path, {"origin": ["127.0.0.1"]}, now=NOW)
    (tmp_path / "ca.key").unlink()
    with pytest.raises(TlsInitError, match=r"ca\.pem exists but .*ca\.key does not"):
        init_tls(tmp_path, {"lhr": ["127.0.0.1"]}, now=NOW)
    assert not (tmp_path / "lhr.pem").exists()


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("../evil=10.0.0.1", "bad server name"),
        ("ca=10.0.0.1", "bad server name"),
        ("origin=not a name", "neither an IP address nor a DNS name"),
        ("origin=-bad.example", "neither an IP address nor a DNS name"),
    ],
)
def test_bad_names_are_refused(tmp_path: Path, spec: str, problem: str) -> None:
    with pytest.raises(TlsInitError, match=problem):
        name, names = parse_server(spec)
        init_tls(tmp_path, {name: names}, now=NOW)
    assert not any(tmp_path.iterdir())


def test_parse_server() -> None:
    assert parse_server("origin=10.0.0.1, origin.internal") == (
        "origin",
        ["10.0.0.1", "origin.internal"],
    )
    assert parse_server("edge") == ("edge", ["localhost", "127.0.0.1", "::1"])


def test_cli_init_defaults_then_refuses_then_adds(tmp_path: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(tls, ["init", str(tmp_path / "tls")])
    assert made.exit_code == 0, made.output
    assert "Made a new CA" in made.output
    assert "origin: --tls-cert" in made.output and "edge: --tls-cert" in made.output
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == [
        "ca.key",
        "ca.pem",
        "edge.key",
        "edge.pem",
        "origin.key",
        "origin.pem",
    ]
    again = runner.invoke(tls, ["init", str(tmp_path / "tls")])
    assert again.exit_code == 1
    assert "not overwriting" in again.output and "Traceback" not in again.output
    added = runner.invoke(
        tls, ["init", str(tmp_path / "tls"), "--host", "lhr=10.0.0.2,lhr.internal"]
    )
    assert added.exit_code == 0, added.output
    assert "Reused the CA" in added.output and "10.0.0.2, lhr.internal" in added.output
    twice = runner.invoke(tls, ["init", str(tmp_path / "x"), "--host", "a", "--host", "a=::1"])
    assert twice.exit_code == 1 and "named twice" in twice.output
