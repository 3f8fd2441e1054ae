"""Synthetic background-noise clips (white, pink, brown, mains hum) for the "noise" augmentation.

Real recorded noise (e.g. MUSAN, or recordings of the target environment) is better; these clips
exist so the shipped configs/augmentation.json works out of the box.
"""
from __future__ import annotations

import os

import numpy as np

from utils.core.audio import SAMPLE_RATE
from utils.data.builders.common import write_audio

LEVEL = 0.5     # peak amplitude; the augmentation rescales a noise clip to the drawn SNR anyway


def coloured_noise(rng: np.random.Generator, samples: int, exponent: float) -> np.ndarray:
    """Noise whose power falls as 1/f**exponent (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    freqs = np.fft.rfftfreq(samples)
    freqs[0] = freqs[1]
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n=samples)
    return noise / np.max(np.abs(noise))


def hum(samples: int, mains_hz: float) -> np.ndarray:
    t = np.arange(samples) / SAMPLE_RATE
    tone = sum(np.sin(2 * np.pi * mains_hz * k * t) / k for k in range(1, 6))
    return tone / np.max(np.abs(tone))


def write_noise_clips(output_dir: str, seconds: float = 3.0, seed: int = 0) -> str:
    """white.wav, pink.wav, brown.wav and hum50.wav in `output_dir` (same seed, same files);
    returns the summary line."""
    rng = np.random.default_rng(seed)
    samples = int(seconds * SAMPLE_RATE)
    clips = {"white.wav": coloured_noise(rng, samples, 0.0), "pink.wav": coloured_noise(rng, samples, 1.0),
             "brown.wav": coloured_noise(rng, samples, 2.0), "hum50.wav": hum(samples, 50.0)}
    for name, audio in clips.items():
        write_audio(os.path.join(output_dir, name), LEVEL * audio)
    return f"summary: {len(clips)} noise clips of {seconds:g} s in {output_dir}"
