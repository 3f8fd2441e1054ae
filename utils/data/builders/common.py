"""What the corpus modules share besides manifests (manifest_writer) and archives (archives): the
error class, the check that a clip fits Whisper, and writing audio clips atomically."""
from __future__ import annotations

import os
from collections import Counter
from typing import Optional

import numpy as np

from utils.core.audio import CHUNK_LENGTH, SAMPLE_RATE, AudioError, audio_duration
from utils.core.errors import UserError
from utils.core.files import atomic_write


class BuildError(UserError):
    """The corpus given to a builder cannot be used; the message names the file (and line or entry)."""


def usable_duration(path: str, skipped: Counter) -> Optional[float]:
    """Seconds of the clip at `path`, or None when it is missing, unreadable or does not fit one
    Whisper window; the reason is counted in `skipped` for the summary line."""
    if not os.path.isfile(path):
        skipped["missing audio"] += 1
        return None
    try:
        duration = audio_duration(path)
    except AudioError:
        skipped["unreadable audio"] += 1
        return None
    if not 0 < duration <= CHUNK_LENGTH:
        skipped[f"clips not within 0-{CHUNK_LENGTH} s"] += 1
        return None
    return duration


def write_audio(path: str, audio: np.ndarray, bits: int = 16) -> None:
    """16 kHz mono 16-bit FLAC for .flac paths, WAV otherwise, written atomically.

    `bits` < 16 rounds the samples to that resolution inside the 16-bit container: FLAC
    stores the unused low bits for free, so 11 bits (about 45 dB SNR at our levels, far
    above what recognition needs) makes the shipped corpus about a third smaller.
    """
    import soundfile

    if bits < 16:
        step = 2.0 ** (bits - 1)
        audio = np.round(audio * step) / step
    kind = "FLAC" if path.endswith(".flac") else "WAV"
    with atomic_write(path, "wb") as handle:
        soundfile.write(handle, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, format=kind, subtype="PCM_16")
