"""A throwaway certificate authority for SIP over TLS (the demo's, the tests', a lab's).

In SDES mode the SRTP keys travel in the SDP, so SIP between participants and
Kamailio must be TLS; a deployment brings certificates from its own PKI, the
demo and the tests make them here::

    files = init_ca(Path("/etc/secconf/tls"), hosts=["127.0.0.1", "localhost", "conf.example"])
    files.ca_cert, files.server_cert, files.server_key     # PEM files, keys mode 0600

or ``secconf tls init DIR --host 127.0.0.1 --host conf.example.com [--client alice]``.

Keys are ECDSA P-256 (every TLS stack Kamailio, linphone and baresip link supports
it), certificates X.509 v3 with the extensions RFC 5280 asks of a CA and an end
entity; server certificates name every host as a subjectAltName (RFC 5922 §7.1:
SIP implementations match the SAN, not the CN).  Private keys are written with
``O_CREAT | O_EXCL`` and mode 0600 before any byte of them exists on disk, and
are never printed or logged: only certificate fingerprints are.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CaError",
    "TlsFiles",
    "fingerprint",
    "init_ca",
    "issue_client",
    "load_ca",
    "participant_contexts",
]

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"

#: Clock skew allowance: certificates are valid from a little before "now".
_BACKDATE = datetime.timedelta(minutes=5)


class CaError(RuntimeError):
    """The directory cannot hold a new CA, or an existing one is unusable."""


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the PEM files :func:`init_ca` wrote (keys are mode 0600)."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    clients: dict[str, tuple[Path, Path]]  # name -> (certificate, key)


def fingerprint(certificate_pem: bytes) -> str:
    """SHA-256 fingerprint of a PEM certificate, ``AB:CD:...`` (safe to log)."""
    cert = x509.load_pem_x509_certificate(certificate_pem)
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def _write_private(path: Path, data: bytes, *, replace: bool) -> None:
    """Write key material: created 0600 (never world-readable for a moment)."""
    if replace:
        path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)  # whatever the umask did


def _write_public(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    os.chmod(path, 0o644)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _san(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """RFC 5280 §4.2.1.3: a CA signs certificates and CRLs; an end entity (ECDSA) signs."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _make_ca(common_name: str, days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        # RFC 5280 §4.2.1.9 / §4.2.1.3: a CA that signs end entities only.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    *,
    hosts: Sequence[str],
    usages: Sequence[x509.ObjectIdentifier],
    days: int,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(_san(hosts)), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and key of *directory* (as :func:`init_ca` wrote them)."""
    try:
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
    except (OSError, ValueError) as exc:
        raise CaError(f"no usable CA in {directory}: {type(exc).__name__}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CaError(f"the CA key in {directory} is not an EC key")
    return cert, key


def _client_paths(directory: Path, name: str) -> tuple[Path, Path]:
    return directory / f"client-{name}.pem", directory / f"client-{name}.key"


def issue_client(
    directory: Path,
    name: str,
    *,
    hosts: Sequence[str] = (),
    days: int = 30,
    replace: bool = False,
) -> tuple[Path, Path]:
    """A client certificate (and key) signed by *directory*'s CA: ``client-NAME.pem/.key``.

    *hosts* go into its subjectAltName; a SIP UA that also accepts TLS connections
    (Kamailio connects back to its Contact) presents this certificate there too,
    so it carries both serverAuth and clientAuth.
    """
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise CaError(f"client name {name!r}: letters, digits, '-', '_', '.' only")
    ca_cert, ca_key = load_ca(directory)
    cert_path, key_path = _client_paths(directory, name)
    if not replace and (cert_path.exists() or key_path.exists()):
        raise CaError(f"{cert_path.name} exists (replace=True to overwrite)")
    cert, key = _issue(
        ca_cert, ca_key, name, hosts=hosts,
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH], days=days,
    )  # fmt: skip
    _write_private(key_path, _key_pem(key), replace=replace)
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def init_ca(
    directory: Path,
    hosts: Sequence[str],
    *,
    clients: Sequence[str] = (),
    client_hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    common_name: str = "secconf throwaway CA",
    days: int = 30,
    replace: bool = False,
) -> TlsFiles:
    """Make a CA and a server certificate for *hosts* in *directory* (created 0700).

    Refuses (:class:`CaError`) when the directory already holds a CA, unless
    *replace*: a CA silently replaced would break every phone configured with the
    old one.  *clients* get client certificates (:func:`issue_client`).
    """
    if not hosts:
        raise CaError("the server certificate needs at least one host (--host)")
    if days < 1:
        raise CaError("days must be at least 1")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    existing = [n for n in (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY) if (directory / n).exists()]
    if existing and not replace:
        raise CaError(f"{directory} already holds {', '.join(existing)} (use --force to replace)")
    ca_cert, ca_key = _make_ca(common_name, days)
    server_cert, server_key = _issue(
        ca_cert, ca_key, hosts[0], hosts=hosts,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], days=days,
    )  # fmt: skip
    _write_private(directory / CA_KEY, _key_pem(ca_key), replace=replace)
    _write_public(directory / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(directory / SERVER_KEY, _key_pem(server_key), replace=replace)
    _write_public(directory / SERVER_CERT, server_cert.public_bytes(serialization.Encoding.PEM))
    made = {
        name: issue_client(directory, name, hosts=client_hosts, days=days, replace=replace)
        for name in clients
    }
    return TlsFiles(
        directory,
        directory / CA_CERT,
        directory / CA_KEY,
        directory / SERVER_CERT,
        directory / SERVER_KEY,
        made,
    )


def participant_contexts(files: TlsFiles, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) TLS contexts for a SIP user agent that trusts only *files*' CA.

    The client context verifies the server's chain and name (TLS 1.2+) and presents
    the client certificate *name*; the server context (the agent's own listener,
    which Kamailio connects to for in-dialog requests) presents the same certificate.
    """
    if name not in files.clients:
        raise CaError(f"no client certificate {name!r} in {files.directory}")
    cert, key = files.clients[name]
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_2
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(files.ca_cert))
    client.minimum_version = ssl.TLSVersion.TLSv1_2
    client.load_cert_chain(cert, key)
    return server, client
