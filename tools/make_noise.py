"""Write synthetic background-noise clips for the "noise" augmentation (dataset/noise/).

Real recorded noise (e.g. MUSAN, or recordings of the target environment) is better;
drop such files into the same folder. These clips exist so the shipped
configs/augmentation.json works out of the box.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.core.audio import SAMPLE_RATE, save_wav  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", default="dataset/noise", help="folder for the WAV files")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each clip")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    args = parser.parse_args()
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    print(f"config: output_dir={args.output_dir} seconds={args.seconds} seed={args.seed}")
    os.makedirs(args.output_dir, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    samples = int(args.seconds * SAMPLE_RATE)
    clips = {"white.wav": coloured_noise(rng, samples, 0.0), "pink.wav": coloured_noise(rng, samples, 1.0),
             "brown.wav": coloured_noise(rng, samples, 2.0), "hum50.wav": hum(samples, 50.0)}
    for name, audio in clips.items():
        save_wav(os.path.join(args.output_dir, name), 0.5 * audio)
    print(f"wrote {len(clips)} noise clips of {args.seconds:g} s to {args.output_dir}")


if __name__ == "__main__":
    main()
