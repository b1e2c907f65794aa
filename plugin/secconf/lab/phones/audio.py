"""The WAV files a phone sends (a tone, or silence) and records (what it decoded)."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

__all__ = ["data_size", "read_wav", "write_tone_wav"]


def write_tone_wav(
    path: Path, frequency: float, seconds: float, rate: int = 8000, amplitude: int = 8000
) -> Path:
    """A mono 16-bit WAV of a sine at *frequency* (what a phone sends); amplitude 0: silence.

    baresip 1.0.0 hangs up when its ``aufile`` source ends, so a file a phone sends
    must last as long as its calls.
    """
    count = int(seconds * rate)
    if amplitude == 0:
        frames = bytes(2 * count)
    else:
        step = 2 * math.pi * frequency / rate
        samples = (int(amplitude * math.sin(step * i)) for i in range(count))
        frames = struct.pack(f"<{count}h", *samples)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return path


def read_wav(path: Path, start: int = 0) -> tuple[int, list[int]]:
    """(sample rate, mono samples from byte *start* of the data) of a 16-bit PCM WAV.

    Reads the chunks by hand: a recording still being written has a header whose
    sizes are not final yet (libsndfile and mediastreamer fix them at close), so the
    data chunk is taken to run to the end of the file.
    """
    data = path.read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        # mediastreamer's recorder writes the header only when it closes the file:
        # until then the first 44 bytes are zeros, the rest 16-bit mono at the call's rate.
        if data[:44].strip(b"\0"):
            raise ValueError(f"{path} is not a WAV file")
        pcm = data[44 + start :]
        pcm = pcm[: len(pcm) - len(pcm) % 2]
        return 8000, list(struct.unpack(f"<{len(pcm) // 2}h", pcm))
    offset, rate, channels = 12, 8000, 1
    while offset + 8 <= len(data):
        chunk, size = (
            data[offset : offset + 4],
            struct.unpack("<I", data[offset + 4 : offset + 8])[0],
        )
        body = offset + 8
        if chunk == b"fmt ":
            _, channels, rate = struct.unpack("<HHI", data[body : body + 8])
        elif chunk == b"data":
            pcm = data[body + start :]
            pcm = pcm[: len(pcm) - len(pcm) % (2 * channels)]
            samples = list(struct.unpack(f"<{len(pcm) // 2}h", pcm))
            return rate, samples[::channels]
        offset = body + size + (size & 1)
    return rate, []


def data_size(path: Path) -> int:
    """Bytes of sample data in a WAV being written (0 if it does not exist yet)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    return max(0, size - 44)
