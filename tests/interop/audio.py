"""Tone checks on what a conference member heard (the ConfBridge mix of several tones)."""

from __future__ import annotations

from secconf.core.g711 import tone_ratio

CONTROL = 1000.0  # nobody sends it: the mix's energy there is noise only


def share(samples: list[int], frequency: float, rate: int = 8000) -> float:
    return tone_ratio(samples, frequency, rate) if samples else 0.0


def loud(samples: list[int]) -> list[int]:
    """Without the silence around the talk (the mixer sends all the time)."""
    index = [i for i, sample in enumerate(samples) if abs(sample) > 500]
    return samples[index[0] : index[-1] + 1] if index else []


def assert_hears(samples: list[int], tones: tuple[float, ...], who: str, rate: int = 8000) -> None:
    """Each of *tones* has a clear share of the audio's energy, the control frequency none."""
    samples = loud(samples)
    assert len(samples) >= rate, f"{who}: only {len(samples)} samples of audio"
    shares = {tone: share(samples, tone, rate) for tone in (*tones, CONTROL)}
    for tone in tones:
        # Mixed tones do not share the energy evenly (Asterisk's mix, the phones' levels):
        # a clear share each, and far above the frequency nobody sends.
        assert shares[tone] > 0.05, (who, shares)
        assert shares[tone] > 50 * shares[CONTROL], (who, shares)
