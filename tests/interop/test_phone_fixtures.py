"""The phone fixtures themselves: linphonec and baresip call each other directly, SRTP only.

No focus: linphone dials baresip, then baresip dials linphone back (the path a
replacement call takes: a phone auto-answering an incoming SRTP call).  Each
phone sends its own tone and must record the other's, decrypted.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from secconf.core.g711 import tone_ratio
from secconf.lab.phones.audio import write_tone_wav
from tests.fixtures.phones import PhoneFactory
from tests.interop.audio import loud

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

LINPHONE_TONE, BARESIP_TONE, CONTROL = 660.0, 880.0, 1000.0


def assert_tone(rate: int, samples: list[int], tone: float, who: str) -> None:
    samples = loud(samples)  # the recording starts before the first packet: silence
    assert len(samples) >= rate // 2, f"{who}: only {len(samples)} samples"
    at_tone, at_control = tone_ratio(samples, tone, rate), tone_ratio(samples, CONTROL, rate)
    assert at_tone > 0.5, (who, at_tone, at_control)
    assert at_tone > 100 * at_control, (who, at_tone, at_control)


def test_linphone_and_baresip_call_each_other_with_srtp(
    phones: PhoneFactory, tmp_path: Path
) -> None:
    linphone = phones.linphone("lin", tone=write_tone_wav(tmp_path / "l.wav", LINPHONE_TONE, 30))
    baresip = phones.baresip("bs", tone=write_tone_wav(tmp_path / "b.wav", BARESIP_TONE, 30))

    # linphone -> baresip (baresip answers by itself).
    since = baresip.position()
    linphone.dial(baresip.contact)
    linphone.wait_connected(10)
    assert "lin" in baresip.wait_incoming(since, 10)
    marks = linphone.mark(), baresip.mark()
    time.sleep(1.5)
    assert_tone(*linphone.heard(marks[0]), BARESIP_TONE, "linphone")
    assert_tone(*baresip.heard(marks[1]), LINPHONE_TONE, "baresip")
    linphone.hangup()
    linphone.wait_ended(5)
    baresip.wait_ended(5)

    # baresip -> linphone (linphonec -a answers by itself): the replacement-call path.
    since = linphone.position()
    baresip.dial(linphone.contact)
    baresip.wait_connected(10)
    assert "bs" in linphone.wait_incoming(since, 10)
    mark = baresip.mark()
    time.sleep(1.5)
    assert_tone(*baresip.heard(mark), LINPHONE_TONE, "baresip (second call)")
    baresip.hangup()
    baresip.wait_ended(5)
