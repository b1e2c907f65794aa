"""secconf.lab.phones without running a program: the files the drivers write, and bad options."""

from __future__ import annotations

from pathlib import Path

import pytest

from secconf.lab.phones.audio import read_wav, write_tone_wav
from secconf.lab.phones.baresip import BaresipPhone
from secconf.lab.phones.linphone import LinphonePhone
from secconf.lab.phones.phone import PhoneError


def test_linphone_tls_and_registration_config(tmp_path: Path) -> None:
    phone = LinphonePhone(
        tmp_path, "lin", password="pw", realm="conf.test.invalid", transport="tls",
        ca_file=tmp_path / "ca.pem", certificate=(tmp_path / "c.pem", tmp_path / "c.key"),
        registrar="sip:localhost:5061;transport=tls", reg_expires=120,
    )  # fmt: skip
    phone.tls_port = 45678
    rc = phone.config()
    for line in (
        "sip_tls_port=45678",
        f"root_ca={tmp_path / 'ca.pem'}",
        "verify_server_certs=1",
        "verify_server_cn=1",
        f"client_cert_chain={tmp_path / 'c.pem'}",
        "supported=replaces, outbound",  # no gruu
        "default_proxy=0",
        "[proxy_0]",
        "reg_proxy=<sip:localhost:5061;transport=tls>",
        'reg_identity="lin" <sip:lin@conf.test.invalid>',
        "reg_expires=120",
        "reg_sendregister=1",
        "username=lin",
        "realm=conf.test.invalid",
    ):
        assert line in rc.splitlines(), line
    assert phone.contact == "sip:lin@127.0.0.1:45678;transport=tls"


def test_linphone_udp_without_registrar(tmp_path: Path) -> None:
    rc = LinphonePhone(tmp_path, "lin").config()
    assert "sip_tls_port=0" in rc.splitlines()
    assert "[proxy_0]" not in rc
    assert "root_ca" not in rc


def test_baresip_tls_and_registration_files(tmp_path: Path) -> None:
    chain, key = tmp_path / "c.pem", tmp_path / "c.key"
    chain.write_text("CERT\n")
    key.write_text("KEY\n")
    phone = BaresipPhone(
        tmp_path, "bs", password="pw", realm="conf.test.invalid", transport="tls",
        ca_file=tmp_path / "ca.pem", certificate=(chain, key),
        registrar="sip:127.0.0.1:5061;transport=tls",
    )  # fmt: skip
    phone.ctrl_port = 1
    config = phone.config().splitlines()
    assert f"sip_cafile {tmp_path / 'ca.pem'}" in config
    combined = tmp_path / "sip-certificate.pem"
    assert f"sip_certificate {combined}" in config
    assert combined.read_text() == "CERT\nKEY\n"
    assert combined.stat().st_mode & 0o077 == 0
    account = phone.account()
    assert account.startswith("<sip:bs@conf.test.invalid;transport=tls>;")
    assert "regint=600" in account.split(";")
    assert 'outbound="sip:127.0.0.1:5061;transport=tls"' in account
    assert phone.contact == f"sip:bs@127.0.0.1:{phone.sip_port + 1};transport=tls"
    # No tone: a silent file (ausine would need 48 kHz).
    assert any(line.startswith("audio_source aufile,") for line in config)
    rate, samples = read_wav(tmp_path / "silence.wav")
    assert rate == 8000
    assert set(samples) == {0}


def test_baresip_without_registrar_does_not_register(tmp_path: Path) -> None:
    account = BaresipPhone(tmp_path, "bs").account()
    assert "regint=0" in account.split(";")
    assert "outbound" not in account


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"transport": "tcp"}, "transport"),
        ({"transport": "tls"}, "ca_file"),
        ({"registrar": "sip:127.0.0.1"}, "password"),
    ],
)
def test_bad_options(tmp_path: Path, options: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LinphonePhone(tmp_path, "x", **options)  # type: ignore[arg-type]


def test_phone_error_is_a_runtime_error(tmp_path: Path) -> None:
    assert issubclass(PhoneError, RuntimeError)
    assert not issubclass(PhoneError, AssertionError)
    with pytest.raises(PhoneError, match="not started"):
        LinphonePhone(tmp_path, "x").hangup()


def test_tone_round_trip(tmp_path: Path) -> None:
    path = write_tone_wav(tmp_path / "t.wav", 440.0, 0.5)
    rate, samples = read_wav(path)
    assert (rate, len(samples)) == (8000, 4000)
    assert max(samples) > 7000
