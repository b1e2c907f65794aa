"""secconf.core.g711.tone_share: is this decoded audio the tone someone sent?"""

from __future__ import annotations

import math
import random

from secconf.core.g711 import tone_share


def _sine(frequency: float, count: int, amplitude: int = 8000) -> list[int]:
    return [int(amplitude * math.sin(2 * math.pi * frequency * i / 8000)) for i in range(count)]


def test_a_tone_between_silences_is_recognised() -> None:
    samples = [0] * 3000 + _sine(440.0, 8000) + [0] * 3000
    assert tone_share(samples, 440.0) > 0.9


def test_another_tone_noise_silence_and_short_bursts_are_not() -> None:
    assert tone_share(_sine(660.0, 8000), 440.0) < 0.01
    rng = random.Random(7)
    noise = [rng.randint(-8000, 8000) for _ in range(8000)]
    assert tone_share(noise, 440.0) < 0.05
    assert tone_share([0] * 8000, 440.0) == 0.0
    assert tone_share(_sine(440.0, 1000), 440.0) == 0.0  # an eighth of a second: too short


def test_the_control_frequency_tells_a_mix_from_a_tone() -> None:
    mixed = [a + b for a, b in zip(_sine(440.0, 8000), _sine(1000.0, 8000), strict=True)]
    assert tone_share(mixed, 440.0) == 0.0
