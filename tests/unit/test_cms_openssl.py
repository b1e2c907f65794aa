"""The wire format of protected bodies against an independent CMS implementation: OpenSSL.

``openssl cms`` (OpenSSL 3.0 or later makes and opens AuthEnvelopedData for AEAD ciphers,
with KEK recipients from ``-secretkey``/``-secretkeyid``) opens what secconf protects, and
secconf opens what OpenSSL protects, both key sizes, both ways.  Without OpenSSL these
tests skip, and with CI=true a skip fails (tests/conftest.py): docker/bootstrap-debian.sh
installs it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pyasn1.codec.der import decoder
from pyasn1_modules import rfc5083, rfc5084, rfc5652

from secconf.core import cms
from secconf.core.errors import MalformedCms, UnsupportedCms
from tests.fixtures.mikey_world import CountingRandom

KEY_ID = bytes.fromhex("010000000212345678")
KEKS = {16: bytes(range(0x10, 0x20)), 32: bytes(range(0x20, 0x40))}
# Binary on purpose: every byte value, bare LF and CR, so that no text conversion passes.
CONTENT = cms.inner_entity("application/conference-info+xml", bytes(range(256)) + b"\n\r\n<x/>")


@pytest.fixture(scope="module")
def openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        pytest.skip("openssl is not installed (docker/bootstrap-debian.sh installs it)")
    version = subprocess.run([path, "version"], capture_output=True, text=True, check=True)
    match = re.match(r"OpenSSL (\d+)\.", version.stdout)
    if match is None or int(match.group(1)) < 3:
        pytest.skip(f"AuthEnvelopedData needs OpenSSL 3: {version.stdout.strip()}")
    return path


def _run(openssl: str, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([openssl, *map(str, args)], capture_output=True, timeout=30)


def _decrypt(openssl: str, tmp_path: Path, der: bytes, kek: bytes, key_id: bytes = KEY_ID) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    message = tmp_path / "in.p7m"
    message.write_bytes(der)
    return _run(
        openssl, "cms", "-decrypt", "-binary", "-inform", "DER", "-in", message,
        "-secretkey", kek.hex(), "-secretkeyid", key_id.hex(),
    )  # fmt: skip


def _encrypt(openssl: str, tmp_path: Path, cipher: str, kek: bytes, *extra: str) -> bytes:
    plain = tmp_path / "plain"
    plain.write_bytes(CONTENT)
    out = tmp_path / "out.p7m"
    done = _run(
        openssl, "cms", "-encrypt", "-binary", f"-{cipher}", "-secretkey", kek.hex(),
        "-secretkeyid", KEY_ID.hex(), "-in", plain, "-outform", "DER", "-out", out, *extra,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return out.read_bytes()


def _lookup(kek: bytes) -> Callable[[bytes], bytes | None]:
    return lambda key_id: kek if key_id == KEY_ID else None


# -- secconf -> OpenSSL ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [16, 32])
def test_openssl_opens_what_secconf_protects(openssl: str, tmp_path: Path, size: int) -> None:
    der = cms.protect(CONTENT, kek=KEKS[size], kek_id=KEY_ID, random_bytes=CountingRandom())
    done = _decrypt(openssl, tmp_path, der, KEKS[size])
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stdout == CONTENT


@pytest.mark.parametrize("size", [16, 32])
def test_openssl_reads_the_profile_in_secconf_output(
    openssl: str, tmp_path: Path, size: int
) -> None:
    der = cms.protect(CONTENT, kek=KEKS[size], kek_id=KEY_ID, random_bytes=CountingRandom())
    message = tmp_path / "in.p7m"
    message.write_bytes(der)
    done = _run(openssl, "cms", "-cmsout", "-print", "-inform", "DER", "-in", message)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    text = re.sub(r"\s+", " ", done.stdout.decode())
    bits = 8 * size
    for expected in (
        "contentType: id-smime-ct-authEnvelopedData",
        "d.authEnvelopedData: version: 0 originatorInfo: <ABSENT>",
        "d.kekri: version: 4 kekid: keyIdentifier: 0000 - 01 00 00 00 02 12 34 56-78",
        "date: <ABSENT> other: <ABSENT>",
        f"algorithm: id-aes{bits}-wrap (2.16.840.1.101.3.4.1.{5 if size == 16 else 45}) parameter: <ABSENT>",
        "contentType: pkcs7-data",
        f"algorithm: aes-{bits}-gcm",
        "authAttrs: <ABSENT>",
        "unauthAttrs: <ABSENT>",
    ):
        assert expected in text
    parsed = _run(openssl, "asn1parse", "-inform", "DER", "-in", message)
    assert parsed.returncode == 0
    # GCMParameters: a 12-octet nonce and ICVlen 16 (RFC 5084 §3.2).
    assert re.search(
        r"prim: OCTET STRING\s+\[HEX DUMP\]:[0-9A-F]{24}\n.*prim: INTEGER\s+:10\n",
        parsed.stdout.decode(),
    )


@pytest.mark.parametrize("part", ["ciphertext", "mac", "wrapped key"])
def test_openssl_also_refuses_secconf_output_tampered(openssl: str, tmp_path: Path, part: str) -> None:  # fmt: skip
    der = cms.protect(CONTENT, kek=KEKS[16], kek_id=KEY_ID, random_bytes=CountingRandom())
    outer, _ = decoder.decode(der, asn1Spec=rfc5652.ContentInfo())
    envelope, _ = decoder.decode(outer["content"], asn1Spec=rfc5083.AuthEnvelopedData())
    value = {
        "ciphertext": envelope["authEncryptedContentInfo"]["encryptedContent"],
        "mac": envelope["mac"],
        "wrapped key": envelope["recipientInfos"][0]["kekri"]["encryptedKey"],
    }[part]
    at = der.index(bytes(value)) + 3
    tampered = der[:at] + bytes([der[at] ^ 0x04]) + der[at + 1 :]
    done = _decrypt(openssl, tmp_path, tampered, KEKS[16])
    assert done.returncode != 0
    assert b"Error decrypting CMS" in done.stderr
    # OpenSSL 3.0's command line writes the unverified plaintext out before it reports the
    # failed tag (stdout is not checked here): RFC 5083 §2 forbids that, and
    # secconf.core.cms.open_protected returns plaintext only after the tag verified.


def test_openssl_refuses_secconf_output_under_another_key_id(openssl: str, tmp_path: Path) -> None:
    der = cms.protect(CONTENT, kek=KEKS[16], kek_id=KEY_ID, random_bytes=CountingRandom())
    assert _decrypt(openssl, tmp_path, der, KEKS[16], key_id=b"\x02" + KEY_ID[1:]).returncode != 0


# -- OpenSSL -> secconf ---------------------------------------------------------------------


@pytest.mark.parametrize("cipher", ["aes-128-gcm", "aes-256-gcm"])
@pytest.mark.parametrize("size", [16, 32])
def test_secconf_opens_what_openssl_protects(openssl: str, tmp_path: Path, cipher: str, size: int) -> None:  # fmt: skip
    der = _encrypt(openssl, tmp_path, cipher, KEKS[size])
    assert cms.open_protected(der, _lookup(KEKS[size])) == CONTENT


@pytest.mark.parametrize("size", [16, 32])
def test_openssl_output_has_the_shape_secconf_sends(openssl: str, tmp_path: Path, size: int) -> None:  # fmt: skip
    theirs = _encrypt(openssl, tmp_path, f"aes-{8 * size}-gcm", KEKS[size])
    ours = cms.protect(CONTENT, kek=KEKS[size], kek_id=KEY_ID, random_bytes=CountingRandom())
    assert len(theirs) == len(ours)

    def shape(der: bytes) -> tuple[object, ...]:
        outer, _ = decoder.decode(der, asn1Spec=rfc5652.ContentInfo())
        envelope, _ = decoder.decode(outer["content"], asn1Spec=rfc5083.AuthEnvelopedData())
        kekri = envelope["recipientInfos"][0]["kekri"]
        algorithm = envelope["authEncryptedContentInfo"]["contentEncryptionAlgorithm"]
        parameters, _ = decoder.decode(algorithm["parameters"], asn1Spec=rfc5084.GCMParameters())
        return (
            str(outer["contentType"]), int(envelope["version"]), len(envelope["recipientInfos"]),
            int(kekri["version"]), bytes(kekri["kekid"]["keyIdentifier"]),
            str(kekri["keyEncryptionAlgorithm"]["algorithm"]),
            str(envelope["authEncryptedContentInfo"]["contentType"]), str(algorithm["algorithm"]),
            len(bytes(parameters["aes-nonce"])), int(parameters["aes-ICVlen"]),
            len(bytes(envelope["mac"])),
        )  # fmt: skip

    assert shape(theirs) == shape(ours)


def test_openssl_ber_streaming_output_is_refused_as_not_der(openssl: str, tmp_path: Path) -> None:
    ber = _encrypt(openssl, tmp_path, "aes-128-gcm", KEKS[16], "-stream")
    assert ber[1] == 0x80  # indefinite length
    with pytest.raises(MalformedCms):
        cms.open_protected(ber, _lookup(KEKS[16]))


def test_openssl_enveloped_data_without_integrity_is_refused(openssl: str, tmp_path: Path) -> None:
    enveloped = _encrypt(openssl, tmp_path, "aes-128-cbc", KEKS[16])
    with pytest.raises(UnsupportedCms, match="not CMS AuthEnvelopedData"):
        cms.open_protected(enveloped, _lookup(KEKS[16]))


def test_openssl_aes_192_is_outside_the_profile(openssl: str, tmp_path: Path) -> None:
    kek = bytes(range(24))
    der = _encrypt(openssl, tmp_path, "aes-192-gcm", kek)
    with pytest.raises(UnsupportedCms):
        cms.open_protected(der, _lookup(kek))


def test_the_inner_entity_comes_back_through_openssl(openssl: str, tmp_path: Path) -> None:
    body = b"<?xml version='1.0'?><conference-info/>"
    entity = cms.inner_entity("application/conference-info+xml", body)
    der = cms.protect(entity, kek=KEKS[32], kek_id=KEY_ID, random_bytes=CountingRandom())
    opened = _decrypt(openssl, tmp_path, der, KEKS[32]).stdout
    assert cms.split_inner_entity(opened, "application/conference-info+xml") == body
