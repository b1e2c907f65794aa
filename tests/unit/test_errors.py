from __future__ import annotations

import pytest

from secconf.core import errors


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.MalformedSdp, 400),
        (errors.MessageTooLarge, 413),
        (errors.InvalidCryptoAttribute, 488),
        (errors.UnsupportedCryptoSuite, 488),
        (errors.InsecureMedia, 488),
        (errors.Forbidden, 403),
        (errors.ServiceUnavailable, 503),
    ],
)
def test_each_error_carries_its_sip_status(error: type[errors.SecconfError], status: int) -> None:
    exc = error("x")
    assert exc.status_code == status
    assert exc.reason
    assert isinstance(exc, errors.SecconfError)


def test_protocol_errors_and_service_errors_are_distinct() -> None:
    assert issubclass(errors.InvalidCryptoAttribute, errors.ProtocolError)
    assert not issubclass(errors.ServiceUnavailable, errors.ProtocolError)


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        (
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20",
            "PS1uQCVe",
        ),
        (
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 INLINE:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "PS1uQCVe",
        ),
        ("k=clear:secretpassword", "secretpassword"),
        ("a=key-mgmt:mikey AQAFgM0XflABAAAAAAAAAAAAAAsA", "AQAFgM0X"),
        (
            "a=crypto:2 F8_128_HMAC_SHA1_80 inline:AAAA;inline:BBBBSECRET FEC_KEY=inline:CCCCSECRET",
            "SECRET",
        ),
    ],
)
def test_redact_line_hides_key_material(line: str, secret: str) -> None:
    assert secret not in errors.redact_line(line)


def test_redact_line_escapes_control_characters_and_shortens() -> None:
    shown = errors.redact_line("a=" + "\x1b[31m" + "x" * 200)
    assert "\x1b" not in shown
    assert len(shown) <= 80


def test_malformed_sdp_names_line_without_key() -> None:
    exc = errors.MalformedSdp("bad", 7, "a=crypto:1 X inline:TOPSECRETKEY")
    assert "line 7" in str(exc)
    assert "TOPSECRETKEY" not in str(exc)
