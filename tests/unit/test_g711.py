"""G.711 µ-law against the ITU-T G.711 table, the tone generator and the Goertzel detector."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secconf.core.g711 import (
    FRAME_SAMPLES,
    ToneGenerator,
    goertzel_power,
    tone_ratio,
    ulaw_decode,
    ulaw_decode_sample,
    ulaw_encode,
    ulaw_encode_sample,
)

# ITU-T G.711 Table 2a (µ-law): the decision value ending each segment, in the
# 14-bit magnitude domain (our 16-bit samples are 4 times these).
SEGMENT_ENDS = (31, 95, 223, 479, 991, 2015, 4063, 8159)


def test_known_values() -> None:
    assert ulaw_encode_sample(0) == 0xFF  # G.711: zero is sent as 1111 1111
    assert ulaw_decode_sample(0xFF) == 0
    assert ulaw_decode_sample(0x7F) == 0  # "negative zero"
    assert ulaw_decode_sample(0x80) == 32124  # largest positive: 8031 * 4
    assert ulaw_decode_sample(0x00) == -32124
    assert ulaw_encode_sample(32767) == 0x80
    assert ulaw_encode_sample(-32768) == 0x00
    assert ulaw_encode_sample(-4) == 0x7E  # -1 in 14 bits: the first negative step


@pytest.mark.parametrize("segment", range(8))
def test_segment_end_points(segment: int) -> None:
    end = SEGMENT_ENDS[segment]
    top = 0xFF ^ (segment << 4 | 0x0F)  # last code of the segment (bits inverted on the line)
    assert ulaw_encode_sample(4 * (end - 1)) == top
    if segment < 7:
        assert ulaw_encode_sample(4 * end) == 0xFF ^ ((segment + 1) << 4)  # first of the next
    else:
        assert ulaw_encode_sample(4 * end) == top  # 8159 and above saturate
    # Decoder output for the last code of segment s: (2*15 + 33) * 2^s - 33 (Table 2a, y column).
    assert ulaw_decode_sample(top) == 4 * ((63 << segment) - 33)
    assert ulaw_decode_sample(top & 0x7F) == -4 * ((63 << segment) - 33)


def test_every_code_decodes_and_re_encodes_to_itself() -> None:
    for code in range(256):
        expected = 0xFF if code == 0x7F else code  # negative zero comes back as zero
        assert ulaw_encode_sample(ulaw_decode_sample(code)) == expected


def test_decoded_values_are_monotonic_per_sign() -> None:
    positives = [ulaw_decode_sample(0xFF - n) for n in range(128)]
    assert positives == sorted(positives)
    assert len(set(positives)) == 128


def test_bulk_and_sample_functions_agree() -> None:
    samples = list(range(-32768, 32768, 7))
    assert ulaw_encode(samples) == bytes(ulaw_encode_sample(s) for s in samples)
    assert ulaw_decode(bytes(range(256))) == [ulaw_decode_sample(c) for c in range(256)]


@given(st.integers(-40000, 40000))
def test_encoding_error_is_within_half_a_step(sample: int) -> None:
    clipped = max(-32768, min(32767, sample))
    decoded = ulaw_decode_sample(ulaw_encode_sample(sample))
    magnitude = min(abs(clipped >> 2), 8158)  # the 14-bit magnitude the encoder quantises
    segment = next(i for i, end in enumerate(SEGMENT_ENDS) if magnitude < end)
    # Half a quantisation step of that segment (2^(s+1) in 14 bits), times 4 for 16 bits,
    # plus the two low bits G.711 does not carry.
    assert abs(decoded - clipped) <= 4 * (1 << segment) + 4 or magnitude >= 8031


def test_tone_frames_are_deterministic_and_continuous() -> None:
    tone = ToneGenerator(1000)
    assert len(tone.frame(0)) == FRAME_SAMPLES == 160
    assert tone.frame(7) == ToneGenerator(1000).frame(7)
    assert list(tone.frames(3, start=5)) == [tone.frame(5), tone.frame(6), tone.frame(7)]
    # 1 kHz at 8 kHz repeats every 8 samples: frame boundaries keep the phase.
    joined = [s for i in range(3) for s in tone.samples(i)]
    assert joined[:8] == joined[160:168] == joined[320:328]


def test_tone_generator_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="Nyquist"):
        ToneGenerator(4000)
    with pytest.raises(ValueError, match="amplitude"):
        ToneGenerator(1000, amplitude=40000)


@pytest.mark.parametrize("frequency", [440, 1000, 1633, 2500])
def test_goertzel_finds_the_tone_through_ulaw(frequency: int) -> None:
    samples = ulaw_decode(b"".join(ToneGenerator(frequency).frames(10)))
    assert tone_ratio(samples, frequency) > 0.95
    for other in (300, 700, 1300, 2000, 3100):
        if abs(other - frequency) > 100:
            assert tone_ratio(samples, other) < 0.01


def test_goertzel_power_scale() -> None:
    samples = ToneGenerator(1000, amplitude=1000).samples(0)
    # About (A*N/2)^2 for a sine of amplitude A over N samples.
    assert goertzel_power(samples, 1000) == pytest.approx((1000 * 160 / 2) ** 2, rel=0.01)
    assert tone_ratio([0] * 160, 1000) == 0.0


def test_mixture_is_seen_as_neither_pure_tone() -> None:
    a = ToneGenerator(1000).samples(0)
    b = ToneGenerator(1500).samples(0)
    mix = [x + y for x, y in zip(a, b, strict=True)]
    assert 0.4 < tone_ratio(mix, 1000) < 0.6
    assert 0.4 < tone_ratio(mix, 1500) < 0.6
