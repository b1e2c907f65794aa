"""The throwaway CA (secconf.lab.tlsca, ``secconf tls init``): files, modes, certificates, refusals."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from secconf.cli import main
from secconf.lab.tlsca import CaError, fingerprint, init_ca, issue_client


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_a_ca_and_a_server_certificate_with_private_keys_0600(tmp_path: Path) -> None:
    files = init_ca(tmp_path / "tls", ["127.0.0.1", "localhost", "conf.example.com"])
    assert _mode(files.directory) == 0o700
    for key in (files.ca_key, files.server_key):
        assert _mode(key) == 0o600
        assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    for cert in (files.ca_cert, files.server_cert):
        assert _mode(cert) == 0o644

    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "conf.example.com"]
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage
    server.verify_directly_issued_by(ca)


def test_python_ssl_accepts_the_chain_and_checks_the_name(tmp_path: Path) -> None:
    files = init_ca(tmp_path, ["127.0.0.1", "localhost"], clients=["alice"])
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.server_cert, files.server_key)  # key matches certificate
    client = ssl.create_default_context(cafile=str(files.ca_cert))
    cert, key = files.clients["alice"]
    client.load_cert_chain(cert, key)
    assert _mode(key) == 0o600
    alice = x509.load_pem_x509_certificate(cert.read_bytes())
    usage = alice.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
    alice.verify_directly_issued_by(x509.load_pem_x509_certificate(files.ca_cert.read_bytes()))


def test_an_existing_ca_is_not_replaced_unless_asked(tmp_path: Path) -> None:
    first = init_ca(tmp_path, ["localhost"])
    before = first.ca_cert.read_bytes()
    with pytest.raises(CaError, match="already holds"):
        init_ca(tmp_path, ["localhost"])
    assert first.ca_cert.read_bytes() == before
    second = init_ca(tmp_path, ["localhost"], replace=True)
    assert second.ca_cert.read_bytes() != before
    assert _mode(second.ca_key) == 0o600


@pytest.mark.parametrize("name", ["", "../x", ".hidden", "a/b", "a b"])
def test_client_names_cannot_escape_the_directory(tmp_path: Path, name: str) -> None:
    init_ca(tmp_path, ["localhost"])
    with pytest.raises(CaError, match="client name"):
        issue_client(tmp_path, name)


def test_refusals(tmp_path: Path) -> None:
    with pytest.raises(CaError, match="at least one host"):
        init_ca(tmp_path, [])
    with pytest.raises(CaError, match="days"):
        init_ca(tmp_path, ["localhost"], days=0)
    with pytest.raises(CaError, match="no usable CA"):
        issue_client(tmp_path / "empty", "alice")


def test_cli_prints_paths_and_fingerprint_never_key_material(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "tls"
    assert main(["tls", "init", str(target), "--host", "127.0.0.1", "--client", "bob"]) == 0
    out = capsys.readouterr().out
    assert fingerprint((target / "ca.pem").read_bytes()) in out
    assert "client-bob.pem" in out
    for key in target.glob("*.key"):
        body = key.read_text().splitlines()[1]
        assert body not in out
    assert "PRIVATE" not in out
    assert main(["tls", "init", str(target), "--host", "127.0.0.1"]) == 1
    assert "already holds" in capsys.readouterr().err


def test_kamailio_tls_config_points_the_shipped_file_at_a_ca_directory(tmp_path: Path) -> None:
    from secconf.lab.services.kamailio import KAMAILIO_TLS_DIR, kamailio_tls_config
    from secconf.lab.services.process import ServiceError

    with pytest.raises(ServiceError, match=r"no ca\.pem"):
        kamailio_tls_config(tmp_path / "missing", tmp_path / "tls.cfg")
    files = init_ca(tmp_path / "tls", ["127.0.0.1"])
    text = kamailio_tls_config(files.directory, tmp_path / "tls.cfg").read_text()
    assert KAMAILIO_TLS_DIR not in text
    for name in ("server.pem", "server.key", "ca.pem"):
        assert f"{files.directory.resolve()}/{name}" in text
    assert text.count("method = TLSv1.2+") == 2  # server and client side
    assert "verify_certificate = yes" in text
