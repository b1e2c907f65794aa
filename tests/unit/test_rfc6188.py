"""AES_256_CM_HMAC_SHA1_80/_32 (RFC 6188) checked against the RFC, not only against libsrtp.

A reference SRTP/SRTCP written here from RFC 3711 §3.3, §3.4, §4.1.1, §4.2, §4.3 and
RFC 6188 §2-§3 with pyca/cryptography's AES reproduces RFC 6188 §7.1-§7.2
(tests/data/vectors/rfc6188-section7.toml), and then opens what secconf.srtp's sessions
(libsrtp) protect and protects what they open, in both suites, for SRTP and SRTCP.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import tomllib

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

import secconf.srtp as srtp
from secconf.core.errors import UnsupportedCryptoSuite
from secconf.core.sdes import SUITES
from tests.conftest import DATA

VECTORS = tomllib.loads((DATA / "vectors" / "rfc6188-section7.toml").read_text())
AES_256_CM = ("AES_256_CM_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_32")


# -- the reference -----------------------------------------------------------------------------


def aes_cm(key: bytes, iv: int, data: bytes) -> bytes:
    """RFC 3711 §4.1.1 AES-CM (the counter is the low 16 bits of a 128-bit block; no carry
    is ever needed below 2^16 blocks, so CTR with a 128-bit big-endian counter is the same)."""
    cipher = Cipher(algorithms.AES(key), modes.CTR(iv.to_bytes(16, "big"))).encryptor()
    return cipher.update(data) + cipher.finalize()


def prf(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    """RFC 3711 §4.3.1-§4.3.3 with kdr = 0 (index DIV kdr = 0); RFC 6188 §3: the same with AES-256.

    key_id = label || r (r = 48 zero bits), x = key_id XOR master_salt, output = AES-CM
    keystream under the master key at IV x * 2^16, truncated to *length* octets.
    """
    x = (label << 48) ^ int.from_bytes(master_salt, "big")
    return aes_cm(master_key, x << 16, bytes(length))


class Reference:
    """One SRTP/SRTCP crypto context of an RFC 6188 AES-256-CM suite, from the RFC text."""

    def __init__(self, suite: str, master_key: bytes, master_salt: bytes) -> None:
        known = SUITES[suite]
        assert len(master_key) == 32  # RFC 6188 Tables 3-4
        assert len(master_salt) == 14
        self.tag = known.srtp_auth_tag_length
        self.rtcp_tag = 10  # SRTCP authentication tag: 80 bits in both suites (Tables 3-4)
        # §4.3.2 labels: 0/1/2 SRTP encryption/authentication/salt, 3/4/5 the same for SRTCP.
        k = [prf(master_key, master_salt, label, n) for label, n in enumerate((32, 20, 14) * 2)]
        self.key, self.auth, self.salt = k[0], k[1], int.from_bytes(k[2], "big")
        self.rtcp_key, self.rtcp_auth = k[3], k[4]
        self.rtcp_salt = int.from_bytes(k[5], "big")

    @staticmethod
    def _header_length(packet: bytes) -> int:
        length = 12 + 4 * (packet[0] & 0x0F)  # CSRCs (RFC 3550 §5.1)
        if packet[0] & 0x10:  # header extension: 4 octets + its length in 32-bit words
            length += 4 + 4 * int.from_bytes(packet[length + 2 : length + 4], "big")
        return length

    def _iv(self, salt: int, ssrc: int, index: int) -> int:
        # §4.1.1: IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16)
        return (salt << 16) ^ (ssrc << 64) ^ (index << 16)

    def protect(self, packet: bytes, roc: int = 0) -> bytes:
        head = self._header_length(packet)
        seq, ssrc = int.from_bytes(packet[2:4], "big"), int.from_bytes(packet[8:12], "big")
        index = (roc << 16) | seq  # §3.3.1
        body = aes_cm(self.key, self._iv(self.salt, ssrc, index), packet[head:])
        portion = packet[:head] + body
        # §4.2: HMAC-SHA1 over the authenticated portion || ROC, truncated to the tag length.
        tag = hmac.new(self.auth, portion + roc.to_bytes(4, "big"), hashlib.sha1).digest()
        return portion + tag[: self.tag]

    def unprotect(self, packet: bytes, roc: int = 0) -> bytes:
        portion, tag = packet[: -self.tag], packet[-self.tag :]
        mac = hmac.new(self.auth, portion + roc.to_bytes(4, "big"), hashlib.sha1).digest()
        assert hmac.compare_digest(mac[: self.tag], tag), "SRTP tag does not verify"
        head = self._header_length(portion)
        seq, ssrc = int.from_bytes(portion[2:4], "big"), int.from_bytes(portion[8:12], "big")
        iv = self._iv(self.salt, ssrc, (roc << 16) | seq)
        return portion[:head] + aes_cm(self.key, iv, portion[head:])

    def protect_rtcp(self, packet: bytes, index: int) -> bytes:
        # §3.4: the first 8 octets stay clear; then E (1) || SRTCP index (31), then the tag.
        ssrc = int.from_bytes(packet[4:8], "big")
        body = aes_cm(self.rtcp_key, self._iv(self.rtcp_salt, ssrc, index), packet[8:])
        portion = packet[:8] + body + (0x80000000 | index).to_bytes(4, "big")
        tag = hmac.new(self.rtcp_auth, portion, hashlib.sha1).digest()[: self.rtcp_tag]
        return portion + tag

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        portion, tag = packet[: -self.rtcp_tag], packet[-self.rtcp_tag :]
        mac = hmac.new(self.rtcp_auth, portion, hashlib.sha1).digest()[: self.rtcp_tag]
        assert hmac.compare_digest(mac, tag), "SRTCP tag does not verify"
        e_index = int.from_bytes(portion[-4:], "big")
        assert e_index >> 31 == 1, "SRTCP packet not encrypted"
        ssrc = int.from_bytes(portion[4:8], "big")
        iv = self._iv(self.rtcp_salt, ssrc, e_index & 0x7FFFFFFF)
        return portion[:8] + aes_cm(self.rtcp_key, iv, portion[8:-4])


# -- the reference reproduces RFC 6188 §7 -------------------------------------------------------


def test_s7_1_aes_256_cm_keystream() -> None:
    vector = VECTORS["s7_1_aes_256_cm_keystream"]
    key = bytes.fromhex(vector["session_key"])
    first = int(vector["first_counter_block"], 16)
    last_block = vector["keystream_octets"] // 16 - 1
    assert int(vector["blocks"][-1][0], 16) == first + last_block  # the segment's last counter
    for counter, keystream in vector["blocks"]:
        assert aes_cm(key, int(counter, 16), bytes(16)).hex() == keystream


def test_s7_2_aes_256_cm_prf() -> None:
    vector = VECTORS["s7_2_aes_256_cm_prf"]
    master_key, master_salt = (
        bytes.fromhex(vector["master_key"]),
        bytes.fromhex(vector["master_salt"]),
    )
    assert prf(master_key, master_salt, 0x00, 32).hex() == vector["cipher_key"]
    assert prf(master_key, master_salt, 0x02, 14).hex() == vector["cipher_salt"]
    assert prf(master_key, master_salt, 0x01, 20).hex() == vector["auth_key"]


# -- secconf.srtp (libsrtp) against the reference --------------------------------------------


def _master() -> tuple[bytes, bytes]:
    vector = VECTORS["s7_2_aes_256_cm_prf"]
    return bytes.fromhex(vector["master_key"]), bytes.fromhex(vector["master_salt"])


def _rtp(seq: int, ssrc: int = 0x5EC0C0F1, payload: bytes = b"RFC 6188 " * 18) -> bytes:
    return (
        bytes([0x80, 0x00])
        + seq.to_bytes(2, "big")
        + (seq * 160).to_bytes(4, "big")
        + (ssrc.to_bytes(4, "big") + payload)
    )


def _sender_report(ssrc: int = 0x5EC0C0F1) -> bytes:
    body = ssrc.to_bytes(4, "big") + bytes(range(20))  # SSRC + sender info (RFC 3550 §6.4.1)
    return bytes([0x80, 200]) + (len(body) // 4).to_bytes(2, "big") + body


@pytest.mark.parametrize("suite", AES_256_CM)
def test_the_suites_are_supported(suite: str) -> None:
    assert suite in srtp.SUPPORTED_SUITES
    assert srtp.supported_suite(suite) is SUITES[suite]


@pytest.mark.parametrize("suite", AES_256_CM)
def test_the_self_test_answer_is_the_rfc_s(suite: str) -> None:
    """The known answer secconf.srtp checks libsrtp against at import is the reference's."""
    key_and_salt = srtp._SELF_TEST_KEY
    assert key_and_salt == b"".join(_master())
    reference = Reference(suite, key_and_salt[:32], key_and_salt[32:])
    assert reference.protect(srtp._SELF_TEST_RTP) == srtp._SELF_TEST_SRTP[suite]


@pytest.mark.parametrize("suite", AES_256_CM)
def test_libsrtp_srtp_is_the_rfc_s_both_ways(suite: str) -> None:
    key, salt = _master()
    reference = Reference(suite, key, salt)
    sender = srtp.srtp_session(suite, key, salt, inbound=False)
    receiver = srtp.srtp_session(suite, key, salt, inbound=True)
    for seq in (0, 1, 2, 65535):
        packet = _rtp(seq)
        protected = sender.protect(packet)
        assert len(protected) == len(packet) + SUITES[suite].srtp_auth_tag_length
        assert protected == reference.protect(packet)
        assert reference.unprotect(protected) == packet
    # ... and the other way, across a rollover (ROC 1 after seq 65535), from a fresh sender.
    for seq, roc in ((10, 0), (65534, 0), (3, 1)):
        packet = _rtp(seq, ssrc=0x0BADCAFE)
        assert receiver.unprotect(reference.protect(packet, roc)) == packet


@pytest.mark.parametrize("suite", AES_256_CM)
def test_libsrtp_srtcp_is_the_rfc_s_both_ways(suite: str) -> None:
    key, salt = _master()
    reference = Reference(suite, key, salt)
    sender = srtp.srtp_session(suite, key, salt, inbound=False)
    receiver = srtp.srtp_session(suite, key, salt, inbound=True)
    report = _sender_report()
    protected = sender.protect_rtcp(report)
    assert len(protected) == len(report) + 4 + 10  # E||index, 80-bit tag for both suites
    assert reference.unprotect_rtcp(protected) == report
    for index in (1, 2, 77):
        assert receiver.unprotect_rtcp(reference.protect_rtcp(report, index)) == report


@pytest.mark.parametrize("suite", AES_256_CM)
def test_a_bit_of_the_upper_key_half_matters(suite: str) -> None:
    """libsrtp uses all 256 key bits: one bit flipped in the last key byte and nothing opens."""
    key, salt = _master()
    sender = srtp.srtp_session(suite, key, salt, inbound=False)
    wrong = srtp.srtp_session(suite, key[:31] + bytes([key[31] ^ 1]), salt, inbound=True)
    with pytest.raises(srtp.pylibsrtp.Error, match="authentication failure"):
        wrong.unprotect(sender.protect(_rtp(5)))


def test_wrong_lengths_are_refused_without_the_bytes() -> None:
    with pytest.raises(ValueError, match="32-byte key and 14-byte salt") as caught:
        srtp.srtp_session("AES_256_CM_HMAC_SHA1_80", b"S" * 16, bytes(14), inbound=False)
    assert "SSSS" not in str(caught.value)


@pytest.mark.parametrize("suite", ["AES_192_CM_HMAC_SHA1_80", "F8_128_HMAC_SHA1_80", "NULL"])
def test_other_suites_stay_unsupported(suite: str) -> None:
    with pytest.raises(UnsupportedCryptoSuite, match="not supported"):
        srtp.supported_suite(suite)


def test_the_self_test_fails_closed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A libsrtp that protects otherwise than the RFC says gets no AES-256-CM at all."""
    wrong = {suite: bytes(len(packet)) for suite, packet in srtp._SELF_TEST_SRTP.items()}
    monkeypatch.setattr(srtp, "_SELF_TEST_SRTP", wrong)
    with caplog.at_level(logging.WARNING, logger="secconf.srtp"):
        assert srtp._self_test() == {}
    assert "AES_256_CM_HMAC_SHA1_80/_32 disabled" in caplog.text
    monkeypatch.setattr(srtp, "_load_setters", lambda: {})  # a pylibsrtp without the symbols
    with caplog.at_level(logging.WARNING, logger="secconf.srtp"):
        assert srtp._self_test() == {}


def test_a_pylibsrtp_without_its_compiled_module_gets_no_aes_256_cm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing() -> None:
        raise ImportError("No module named 'pylibsrtp._binding'")

    monkeypatch.setattr(srtp, "_binding", missing)
    assert srtp._self_test() == {}
