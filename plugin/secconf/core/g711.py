"""G.711 µ-law (PCMU), a test-tone generator and a Goertzel tone detector.

Enough audio to prove that media really came through a secured path: a sender
encodes a deterministic tone, a receiver decodes what it got and measures the
power at the tone's frequency.  Pure arithmetic, no I/O.

µ-law follows ITU-T G.711 (11/1988) Table 2a: a 14-bit magnitude is biased by
33, its segment is the position of the leading one, the four bits below it are
the mantissa, and the 8-bit code is sent inverted.  Samples here are 16-bit
linear (as RTP/AVP L16 and every sound card use them); the two low bits are
dropped on encoding and come back as zeros on decoding, the convention of the
widely used Sun reference ``g711.c``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

__all__ = [
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "ToneGenerator",
    "goertzel_power",
    "tone_ratio",
    "ulaw_decode",
    "ulaw_decode_sample",
    "ulaw_encode",
    "ulaw_encode_sample",
]

#: RTP/AVP clock rate of PCMU (RFC 3551 §4.5.14) and samples in a 20 ms frame.
SAMPLE_RATE = 8000
FRAME_SAMPLES = 160

_BIAS = 33  # G.711 µ-law bias, in the 14-bit domain
_CLIP = 8159  # largest 14-bit magnitude: top decision value of segment 7


def ulaw_encode_sample(sample: int) -> int:
    """Encode one 16-bit linear sample (clipped to -32768..32767) to a µ-law octet."""
    sample = max(-32768, min(32767, sample)) >> 2  # 14-bit, rounding towards -inf
    if sample < 0:
        magnitude, mask = -sample, 0x7F
    else:
        magnitude, mask = sample, 0xFF
    # 33..8191: magnitudes from _CLIP up saturate at segment 7, mantissa 15.
    biased = min(magnitude + _BIAS, _CLIP + _BIAS - 1)
    segment = biased.bit_length() - 6  # 0..7
    mantissa = (biased >> (segment + 1)) & 0x0F
    return (segment << 4 | mantissa) ^ mask


def ulaw_decode_sample(code: int) -> int:
    """Decode one µ-law octet to a 16-bit linear sample (G.711 Table 2a, times 4)."""
    code = ~code & 0xFF
    segment = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = ((2 * mantissa + _BIAS) << segment) - _BIAS  # 14-bit decoder output
    return -4 * magnitude if code & 0x80 else 4 * magnitude


# Lookup tables: every code decodes once, every 14-bit value encodes once.
_DECODE = tuple(ulaw_decode_sample(code) for code in range(256))
_ENCODE14 = bytes(ulaw_encode_sample(value << 2) for value in range(-8192, 8192))


def ulaw_encode(samples: Sequence[int]) -> bytes:
    """Encode 16-bit linear samples to µ-law octets, one octet per sample."""
    table = _ENCODE14
    return bytes(table[(max(-32768, min(32767, s)) >> 2) + 8192] for s in samples)


def ulaw_decode(payload: bytes) -> list[int]:
    """Decode µ-law octets (e.g. a PCMU RTP payload) to 16-bit linear samples."""
    table = _DECODE
    return [table[code] for code in payload]


class ToneGenerator:
    """A deterministic sine tone, cut into PCMU frames (RFC 3551 §4.5.14: 20 ms = 160 samples).

    Frame *n* is always the same bytes, and the phase runs on across frames.
    """

    def __init__(
        self,
        frequency: float,
        *,
        sample_rate: int = SAMPLE_RATE,
        amplitude: int = 8000,
        frame_samples: int = FRAME_SAMPLES,
    ) -> None:
        if not 0 < frequency < sample_rate / 2:
            raise ValueError("frequency must be between 0 and the Nyquist frequency")
        if not 0 <= amplitude <= 32767:
            raise ValueError("amplitude must fit a 16-bit sample")
        self.frequency = frequency
        self.sample_rate = sample_rate
        self.amplitude = amplitude
        self.frame_samples = frame_samples

    def samples(self, index: int) -> list[int]:
        """The 16-bit linear samples of frame *index*."""
        start = index * self.frame_samples
        step = 2 * math.pi * self.frequency / self.sample_rate
        return [
            round(self.amplitude * math.sin(step * n))
            for n in range(start, start + self.frame_samples)
        ]

    def frame(self, index: int) -> bytes:
        """Frame *index* as a µ-law payload (160 bytes by default)."""
        return ulaw_encode(self.samples(index))

    def frames(self, count: int, start: int = 0) -> Iterator[bytes]:
        """*count* consecutive µ-law payloads from frame *start* on."""
        for index in range(start, start + count):
            yield self.frame(index)


def goertzel_power(
    samples: Sequence[float], frequency: float, sample_rate: int = SAMPLE_RATE
) -> float:
    """Power of *samples* at *frequency* by the Goertzel algorithm (squared DFT magnitude).

    For a sine of amplitude A over N samples at exactly that frequency the
    result is about (A·N/2)².
    """
    coefficient = 2 * math.cos(2 * math.pi * frequency / sample_rate)
    previous = before = 0.0
    for sample in samples:
        previous, before = sample + coefficient * previous - before, previous
    return previous * previous + before * before - coefficient * previous * before


def tone_ratio(samples: Sequence[float], frequency: float, sample_rate: int = SAMPLE_RATE) -> float:
    """Share of the signal's energy at *frequency*: about 1 for a pure tone there, about 0 else.

    Goertzel power divided by (N/2)·Σx², which is what a pure tone at that
    frequency would give (Parseval); 0 for silence.
    """
    energy = math.fsum(float(x) * x for x in samples)
    if energy == 0:
        return 0.0
    return goertzel_power(samples, frequency, sample_rate) / (energy * len(samples) / 2)


def tone_share(
    samples: Sequence[int],
    frequency: float,
    control: float = 1000.0,
    *,
    loud: int = 1000,
    minimum: int = 4000,
) -> float:
    """How clearly *samples* (decoded audio) carry a tone at *frequency*; 0.0 if they do not.

    A conference mixer sends all the time (silence when nobody talks, late frames
    filled with silence under load), so leading and trailing samples quieter than
    *loud* are cut off first.  0.0 when fewer than *minimum* samples remain or the
    energy at *frequency* is not 20 times that at *control*, a frequency nobody
    sends (noise, not a tone); else :func:`tone_ratio` at *frequency*.
    """
    marks = [index for index, sample in enumerate(samples) if abs(sample) > loud]
    if not marks:
        return 0.0
    audio = samples[marks[0] : marks[-1] + 1]
    at_tone = tone_ratio(audio, frequency)
    if len(audio) < minimum or at_tone <= 20 * tone_ratio(audio, control):
        return 0.0
    return at_tone
