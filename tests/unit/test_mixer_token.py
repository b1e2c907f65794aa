"""The mixer's join tokens (secconf.core.mixer_token), the module's settings and the renderer.

The MAC is checked against vectors computed another way: a fixed vector made with the
``openssl`` command line (recorded below, and recomputed by ``openssl`` in a test), and
a second implementation written here from the construction in docs/asterisk.md with
``hashlib``/``hmac`` only.  That the real Asterisk dialplan computes the same is
tests/security/test_mixer_token.py.
"""

from __future__ import annotations

import hashlib
import hmac
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secconf.asterisk.config import (
    MIXER_TOKEN_KEY_FILE,
    MIXER_TOKEN_SECRET,
    main,
    parse_secret,
    render,
)
from secconf.core.mixer_token import (
    HEADER,
    TOKEN_LENGTH,
    MixerTokenError,
    MixerTokenKeys,
    check_token,
    make_token,
    token_mac,
    token_message,
)
from secconf.focus.mixer_token import token_header
from secconf.focus.settings import SettingsError, load_settings
from secconf.store import generate_key_file

SECRET = bytes(range(32))
CONFERENCE = "0123456789abcdef"
CALL_ID = "a84b4c76e66710@pc33.atlanta.example.com"
EXPIRY = 1767225600  # 2026-01-01T00:00:00Z
# Computed with OpenSSL 3.0 (openssl dgst -sha256 -mac HMAC -macopt hexkey:000102...1f for the
# keys, openssl dgst -sha1 for the two hashes); test_vector_matches_the_openssl_command_line
# recomputes them.
K_IN = "ef82ddc46f7724c27f714d2a30b1f975b77132fe53ecae9c8efda64f3bc59d1d"
K_OUT = "e85114b2228eeaf99cfa5b8ce8a941a30b421e196b39be8831e9f619fb0f64e9"
MAC = "ff97cc36b2914e5aa2578f44620a8cdb01402684"


def reference_mac(secret: bytes, conference: str, call_id: str, expiry: int) -> str:
    """docs/asterisk.md's construction, written again with the standard library only."""
    k_in = hmac.new(secret, b"secconf mixer token v1 inner", "sha256").hexdigest().encode()
    k_out = hmac.new(secret, b"secconf mixer token v1 outer", "sha256").hexdigest().encode()
    message = f"secconf-join-v1 {conference} {expiry:010d} {call_id}".encode(
        "utf-8", "surrogateescape"
    )
    inner = hashlib.sha1(k_in + message).hexdigest().encode()  # noqa: S324
    return hashlib.sha1(k_out + inner).hexdigest()  # noqa: S324


def test_the_recorded_vector() -> None:
    keys = MixerTokenKeys.derive(SECRET)
    assert keys.key_file_text() == K_IN + K_OUT
    assert token_mac(keys, CONFERENCE, CALL_ID, EXPIRY) == MAC
    assert make_token(keys, CONFERENCE, CALL_ID, EXPIRY - 30.9, 30) == f"{EXPIRY - 1}." + (
        token_mac(keys, CONFERENCE, CALL_ID, EXPIRY - 1)
    )
    assert make_token(keys, CONFERENCE, CALL_ID, EXPIRY - 30, 30) == f"{EXPIRY}.{MAC}"


def test_vector_matches_the_openssl_command_line() -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command (apt-get install openssl)")

    def run(data: bytes, *args: str) -> str:
        result = subprocess.run(
            [openssl, "dgst", *args, "-r"], input=data, capture_output=True, check=True, timeout=10
        )
        return result.stdout.split()[0].decode()

    hexkey = f"hexkey:{SECRET.hex()}"
    k_in = run(b"secconf mixer token v1 inner", "-sha256", "-mac", "HMAC", "-macopt", hexkey)
    k_out = run(b"secconf mixer token v1 outer", "-sha256", "-mac", "HMAC", "-macopt", hexkey)
    message = f"secconf-join-v1 {CONFERENCE} {EXPIRY} {CALL_ID}".encode()
    inner = run(k_in.encode() + message, "-sha1")
    assert (k_in, k_out) == (K_IN, K_OUT)
    assert run(k_out.encode() + inner.encode(), "-sha1") == MAC


@given(
    secret=st.binary(min_size=32, max_size=32),
    conference=st.from_regex(r"[0-9a-z]{16}", fullmatch=True),
    # What Kamailio hands the module: the header's bytes, decoded with surrogateescape.
    call_id=st.binary(min_size=1, max_size=80)
    .filter(lambda raw: not {0, 10, 13} & set(raw))
    .map(lambda raw: raw.decode("utf-8", "surrogateescape")),
    expiry=st.integers(0, 10**10 - 1),
)
def test_mac_matches_the_reference_implementation(
    secret: bytes, conference: str, call_id: str, expiry: int
) -> None:
    keys = MixerTokenKeys.derive(secret)
    assert token_mac(keys, conference, call_id, expiry) == reference_mac(
        secret, conference, call_id, expiry
    )


def test_a_token_checks_for_its_leg_only_and_until_it_expires() -> None:
    keys = MixerTokenKeys.derive(SECRET)
    now = 1_800_000_000.5
    token = make_token(keys, CONFERENCE, CALL_ID, now, 30)
    assert len(token) == TOKEN_LENGTH
    check_token(keys, token, CONFERENCE, CALL_ID, now)
    check_token(keys, token, CONFERENCE, CALL_ID, now + 30.4)  # ...030.9: the expiry's second
    refusals = {
        "expired": (token, CONFERENCE, CALL_ID, now + 30.5),
        "other conference": (token, "0123456789abcdee", CALL_ID, now),
        "other call": (token, CONFERENCE, CALL_ID + "x", now),
        "missing": (None, CONFERENCE, CALL_ID, now),
        "empty": ("", CONFERENCE, CALL_ID, now),
        "later expiry": (str(int(now) + 3600) + token[10:], CONFERENCE, CALL_ID, now),
        "flipped MAC digit": (token[:-1] + ("0" if token[-1] != "0" else "1"), CONFERENCE,
                              CALL_ID, now),
        "upper case": (token.upper(), CONFERENCE, CALL_ID, now),
        "trailing space": (token + " ", CONFERENCE, CALL_ID, now),
        "other key": (make_token(MixerTokenKeys.derive(bytes(32)), CONFERENCE, CALL_ID, now, 30),
                      CONFERENCE, CALL_ID, now),
    }  # fmt: skip
    for what, (presented, conference, call_id, at) in refusals.items():
        with pytest.raises(MixerTokenError) as refused:
            check_token(keys, presented, conference, call_id, at)
        assert keys.inner.decode() not in str(refused.value), what


def test_the_message_decodes_uniquely_and_bad_input_is_refused() -> None:
    assert token_message(CONFERENCE, "c@h", 5) == b"secconf-join-v1 0123456789abcdef 0000000005 c@h"
    # The conference id has no space and the expiry is fixed width: no two inputs share m.
    for conference, call_id, expiry in [
        ("0123 456789abcde", CALL_ID, EXPIRY),
        ("0123456789ABCDEF", CALL_ID, EXPIRY),
        ("", CALL_ID, EXPIRY),
        (CONFERENCE, "", EXPIRY),
        (CONFERENCE, "a\r\nX-Injected: 1", EXPIRY),
        (CONFERENCE, CALL_ID, -1),
        (CONFERENCE, CALL_ID, 10**10),
    ]:
        with pytest.raises(MixerTokenError):
            token_message(conference, call_id, expiry)
    keys = MixerTokenKeys.derive(SECRET)
    with pytest.raises(MixerTokenError):
        make_token(keys, CONFERENCE, CALL_ID, EXPIRY, 0)
    with pytest.raises(MixerTokenError):
        MixerTokenKeys.derive(SECRET[:31])


def test_keys_are_never_shown() -> None:
    keys = MixerTokenKeys.derive(SECRET)
    assert repr(keys) == str(keys) == "MixerTokenKeys(<hidden>)"
    assert K_IN not in repr(keys)


# -- the module's settings ------------------------------------------------------------------

BASE = """
[focus]
domain = "d"
[upstream]
uri = "sip:127.0.0.1:9"
{upstream}
[redis]
url = "redis://127.0.0.1:1/0"
kek_file = "kek"
"""


def write_settings(tmp_path: Path, upstream: str = "") -> Path:
    path = tmp_path / "s.toml"
    path.write_text(BASE.format(upstream=upstream))
    return path


def test_the_secret_is_required_and_read_once_at_start(tmp_path: Path) -> None:
    config = write_settings(tmp_path)
    with pytest.raises(SettingsError, match=r"\[upstream\] token_secret_file is required"):
        load_settings(config, env={})
    secret_file = tmp_path / "mixer-token"
    secret = generate_key_file(secret_file, "mixer token secret")
    settings = load_settings(write_settings(tmp_path, 'token_secret_file = "mixer-token"'), env={})
    assert settings.mixer_token == MixerTokenKeys.derive(secret)
    assert settings.mixer_token_ttl == 30
    assert secret.hex() not in repr(settings)
    assert settings.mixer_token is not None
    assert settings.mixer_token.inner.decode() not in repr(settings)
    # The environment override (the lab launchers), relative to nothing: an absolute path.
    other = tmp_path / "other"
    generate_key_file(other, "mixer token secret")
    overridden = load_settings(config, env={"SECCONF_MIXER_TOKEN_FILE": str(other)})
    assert overridden.mixer_token != settings.mixer_token
    # The watcher and the CLI never read it.
    assert load_settings(config, env={}, mixer_token=False).mixer_token is None


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("missing", "cannot be read"),
        ("readable by others", "run chmod 600"),
        ("not a key", "does not hold a 32-byte key"),
        ("ttl", "token_ttl must be in 1..300"),
    ],
)
def test_an_unusable_secret_stops_the_start(tmp_path: Path, problem: str, message: str) -> None:
    secret_file = tmp_path / "mixer-token"
    upstream = 'token_secret_file = "mixer-token"'
    if problem == "readable by others":
        generate_key_file(secret_file, "mixer token secret")
        secret_file.chmod(0o644)
    elif problem == "not a key":
        secret_file.write_text("short-secret-value\n")
        secret_file.chmod(0o600)
    elif problem == "ttl":
        generate_key_file(secret_file, "mixer token secret")
        upstream += "\ntoken_ttl = 3600"
    with pytest.raises(SettingsError, match=message) as refused:
        load_settings(write_settings(tmp_path, upstream), env={})
    assert "short-secret-value" not in str(refused.value)


def test_token_header_uses_the_settings_and_fails_closed_without_a_secret(tmp_path: Path) -> None:
    from dataclasses import replace

    from secconf.core.errors import ServiceUnavailable

    generate_key_file(tmp_path / "mixer-token", "mixer token secret")
    settings = load_settings(write_settings(tmp_path, 'token_secret_file = "mixer-token"'), env={})
    name, value = token_header(settings, CONFERENCE, CALL_ID, 1_800_000_000)
    assert name == HEADER == "X-Secconf-Token"
    assert settings.mixer_token is not None
    check_token(settings.mixer_token, value, CONFERENCE, CALL_ID, 1_800_000_029)
    assert value.startswith(f"{1_800_000_030}.")
    with pytest.raises(ServiceUnavailable):
        token_header(replace(settings, mixer_token=None), CONFERENCE, CALL_ID, 1_800_000_000)


# -- Asterisk's renderer --------------------------------------------------------------------


def test_render_writes_only_the_derived_keys_mode_0600(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    values = render(etc, {MIXER_TOKEN_SECRET: SECRET.hex(), "AMI_SECRET": "ami-secret-1"})
    assert MIXER_TOKEN_SECRET not in values
    key_file = etc / MIXER_TOKEN_KEY_FILE
    assert key_file.read_text() == K_IN + K_OUT
    for private in (key_file, etc / "manager.conf"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    texts = {path.name: path.read_text() for path in etc.iterdir()}
    for name, text in texts.items():
        for secret_form in (SECRET.hex(), SECRET.hex().upper()):
            assert secret_form not in text, name
        if name != MIXER_TOKEN_KEY_FILE:
            assert K_IN not in text, name
            assert K_OUT not in text, name
    assert "secconf-mixer-token.key" in texts["extensions.conf"]
    # The same secret as base64 or raw bytes gives the same keys; anything else is refused.
    import base64

    assert parse_secret(base64.b64encode(SECRET).decode()) == parse_secret(SECRET) == SECRET
    for bad in ("", "00" * 31, "not base64 !", SECRET.hex() + "00"):
        with pytest.raises(ValueError, match="32-byte secret") as refused:
            parse_secret(bad)
        assert not bad or bad not in str(refused.value)


def test_render_refuses_no_secret_and_a_wildcard_sip_address(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="MIXER_TOKEN_SECRET is required"):
        render(tmp_path / "a", {"SIP_PORT": 5999})
    for wildcard in ("0.0.0.0", "::", " 0.0.0.0 "):  # noqa: S104 - refused
        with pytest.raises(ValueError, match="SIP_HOST must be the internal address"):
            render(tmp_path / "b", {MIXER_TOKEN_SECRET: SECRET, "SIP_HOST": wildcard})
    with pytest.raises(ValueError, match="bracket"):  # [::] never gets that far
        render(tmp_path / "b", {MIXER_TOKEN_SECRET: SECRET, "SIP_HOST": "[::]"})
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "b").exists()


def test_the_renderer_command_reads_the_secret_file_only_if_private(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret_file = tmp_path / "mixer-token"
    secret_file.write_bytes(SECRET)  # raw bytes are fine from a file
    secret_file.chmod(0o640)
    assert main([str(tmp_path / "etc"), "--file", f"{MIXER_TOKEN_SECRET}={secret_file}"]) == 2
    assert "chmod 600" in capsys.readouterr().err
    secret_file.chmod(0o600)
    assert main([str(tmp_path / "etc"), "--file", f"{MIXER_TOKEN_SECRET}={secret_file}"]) == 0
    assert (tmp_path / "etc" / MIXER_TOKEN_KEY_FILE).read_text() == K_IN + K_OUT
    assert main([str(tmp_path / "etc2"), "SIP_PORT=5999"]) == 2  # no secret: nothing rendered
    err = capsys.readouterr().err
    assert "MIXER_TOKEN_SECRET is required" in err
    assert not (tmp_path / "etc2").exists()
