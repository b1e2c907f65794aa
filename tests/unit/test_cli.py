"""The `secconf` command as an operator runs it: real processes, real captures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SDP_DIR

SECCONF = Path(sys.executable).parent / "secconf"
ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
UNMASKED_KEY = re.compile(r"inline:(?!<redacted>)", re.IGNORECASE)


def _run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SECCONF), *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
        check=False,
    )


def test_demo_captures_keys_every_secure_capture_and_shows_no_key() -> None:
    result = _run("demo", "--captures", str(SDP_DIR))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all captures round-tripped" in result.stdout
    assert "keyed" in result.stdout
    assert "refused 488" in result.stdout
    assert not UNMASKED_KEY.search(result.stdout)
    for capture in SDP_DIR.glob("*.sdp"):
        for match in re.finditer(r"inline:([A-Za-z0-9+/=]{20,})", capture.read_text()):
            assert match.group(1) not in result.stdout


def test_demo_fails_when_a_capture_does_not_round_trip(tmp_path: Path) -> None:
    (tmp_path / "PROVENANCE.toml").write_text('["broken.sdp"]\nsource = "test"\n')
    (tmp_path / "broken.sdp").write_bytes(b"v=0\r\nthis is not sdp\r\n")
    result = _run("demo", "--captures", str(tmp_path))
    assert result.returncode == 1
    assert "parse error" in result.stdout


@pytest.mark.parametrize(
    "name", ["linphone-srtp-audio-video-offer.sdp", "baresip-srtp-mand-offer.sdp"]
)
def test_sdp_inspect_masks_keys(name: str) -> None:
    result = _run("sdp", "inspect", str(SDP_DIR / name))
    assert result.returncode == 0, result.stderr
    assert "AES_CM_128_HMAC_SHA1_80" in result.stdout
    assert "key " in result.stdout
    raw = (SDP_DIR / name).read_text()
    for match in re.finditer(r"inline:([A-Za-z0-9+/=]{20,})", raw):
        assert match.group(1) not in result.stdout


def test_sdp_inspect_refuses_malformed_input_with_its_status() -> None:
    result = _run("sdp", "inspect", "-", stdin=b"v=0\r\nnot sdp\r\n")
    assert result.returncode == 1
    assert "400 Bad Request" in result.stderr
