"""Audio augmentation from configs/augmentation.json: noise, speed, volume, shift, resample.

The config is a JSON list of {"type": ..., "params": {...}, "prob": p}; each entry is
applied in order with probability p. Speed and shift move the sample's timestamps with
the audio (kept on Whisper's 0.02 s grid, inside the clip and inside 0..30 s).
Randomness comes from one numpy Generator, so a seed reproduces every choice.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from utils import REPO_ROOT
from utils.core.audio import CHUNK_LENGTH, SAMPLE_RATE, TIME_PRECISION, AudioError, audio_duration, load_audio, resample
from utils.core.segments import Segment
from utils.data.labels import MAX_TIMESTAMP_INDEX, timestamp_index
from utils.data.manifest import DataError

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".wma", ".webm")
_NOISE_CACHE_SAMPLES = 16_000_000   # 64 MB of float32 per process

# type -> {param: (kind, required)}; kind "number", "int" or "rates" (list of positive ints).
_SCHEMA: dict[str, dict[str, tuple[str, bool]]] = {
    "noise": {"min_snr_dB": ("number", True), "max_snr_dB": ("number", True), "noise_dir": ("str", True)},
    "speed": {"min_speed_rate": ("number", True), "max_speed_rate": ("number", True),
              "num_rates": ("int", False)},
    "volume": {"min_gain_dBFS": ("number", True), "max_gain_dBFS": ("number", True)},
    "shift": {"min_shift_ms": ("number", True), "max_shift_ms": ("number", True)},
    "resample": {"new_sample_rates": ("rates", True)},
}
_RANGES = {"noise": "snr_dB", "speed": "speed_rate", "volume": "gain_dBFS", "shift": "shift_ms"}


class AugmentationConfigError(DataError):
    """The augmentation config is unusable; the message names the file and the entry."""


@dataclass
class AugmentStep:
    type: str
    params: dict
    prob: float
    noise_files: list = field(default_factory=list)


def _check_value(kind: str, value: Any) -> Optional[str]:
    if kind == "number":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else "must be a number"
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        return None if ok else "must be a whole number >= 1"
    if kind == "str":
        return None if isinstance(value, str) and value else "must be a non-empty string"
    if kind == "rates":
        ok = (isinstance(value, list) and value
              and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1000 for v in value))
        return None if ok else "must be a non-empty list of sample rates in Hz (>= 1000)"
    raise AssertionError(kind)


def _resolve_dir(path: str) -> Optional[str]:
    # Configs are written relative to the repository root (like the manifests); accept that
    # from any working directory, but let the working directory win.
    for candidate in (path, os.path.join(REPO_ROOT, path)):
        if os.path.isdir(candidate):
            return os.path.abspath(candidate)
    return None


def _check_params(kind: str, params: Any, where: str) -> None:
    """The parameters of one entry against _SCHEMA, and the ranges they describe."""
    if not isinstance(params, dict):
        raise AugmentationConfigError(f"{where}: 'params' must be an object")
    schema = _SCHEMA[kind]
    unknown = sorted(set(params) - set(schema))
    if unknown:
        raise AugmentationConfigError(f"{where}: unknown parameter(s) {', '.join(unknown)}; "
                                      f"accepted: {', '.join(schema)}")
    for name, (value_kind, required) in schema.items():
        if name not in params:
            if required:
                raise AugmentationConfigError(f"{where}: missing parameter '{name}'")
            continue
        problem = _check_value(value_kind, params[name])
        if problem:
            raise AugmentationConfigError(f"{where}: '{name}' {problem}, got {params[name]!r}")
    if kind in _RANGES:
        low, high = params[f"min_{_RANGES[kind]}"], params[f"max_{_RANGES[kind]}"]
        if low > high:
            raise AugmentationConfigError(f"{where}: min_{_RANGES[kind]} ({low}) is greater than "
                                          f"max_{_RANGES[kind]} ({high})")
    if kind == "speed" and params["min_speed_rate"] <= 0:
        raise AugmentationConfigError(f"{where}: speed rates must be positive")
    if kind == "shift" and max(abs(params["min_shift_ms"]), abs(params["max_shift_ms"])) > 1000:
        raise AugmentationConfigError(f"{where}: shifts are limited to ±1000 ms (a larger advance "
                                      f"cuts speech off the start)")


def _noise_files(noise_dir: str, where: str) -> list[str]:
    """Every readable audio file under `noise_dir` (checked now, not in a DataLoader worker)."""
    directory = _resolve_dir(noise_dir)
    if directory is None:
        raise AugmentationConfigError(f"{where}: noise_dir {noise_dir!r} is not a "
                                      f"directory (set prob to 0 to switch noise off)")
    files = sorted(os.path.join(root, name) for root, _, names in os.walk(directory)
                   for name in names if name.lower().endswith(AUDIO_EXTENSIONS))
    if not files:
        raise AugmentationConfigError(f"{where}: noise_dir {directory} holds no audio files")
    for noise_file in files:
        try:
            seconds = audio_duration(noise_file)
        except AudioError as exc:
            raise AugmentationConfigError(f"{where}: {exc}") from None
        if seconds <= 0:
            raise AugmentationConfigError(f"{where}: noise file {noise_file} has no samples")
    return files


def _parse_entry(entry: Any, where: str) -> AugmentStep:
    if not isinstance(entry, dict):
        raise AugmentationConfigError(f"{where}: expected an object with 'type', 'params', 'prob'")
    unknown = sorted(set(entry) - {"type", "params", "prob"})
    if unknown:
        raise AugmentationConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    kind = entry.get("type")
    if kind not in _SCHEMA:
        raise AugmentationConfigError(f"{where}: 'type' is {kind!r}; use one of {', '.join(_SCHEMA)}")
    where = f"{where} ({kind})"
    prob = entry.get("prob", None)
    if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0 <= prob <= 1:
        raise AugmentationConfigError(f"{where}: 'prob' must be a number from 0 to 1, got {prob!r}")
    params = entry.get("params")
    _check_params(kind, params, where)
    step = AugmentStep(kind, dict(params), float(prob))
    if kind == "noise" and prob > 0:
        step.noise_files = _noise_files(params["noise_dir"], where)
    return step


def parse_config(entries: Any, source: str = "<config>") -> list[AugmentStep]:
    """Validate a loaded config; every problem is reported as '<source>: entry N (type): ...'."""
    if not isinstance(entries, list):
        raise AugmentationConfigError(f"{source}: expected a JSON list of augmentation entries")
    return [_parse_entry(entry, f"{source}: entry {number}") for number, entry in enumerate(entries, start=1)]


def load_config(path: str) -> list[AugmentStep]:
    try:
        with open(path, encoding="utf-8") as handle:
            entries = json.load(handle)
    except FileNotFoundError:
        raise AugmentationConfigError(f"{path}: augmentation config not found") from None
    except json.JSONDecodeError as exc:
        raise AugmentationConfigError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return parse_config(entries, source=path)


def move_segments(segments: Sequence[Segment], *, scale: float = 1.0, offset: float = 0.0,
                  duration: float) -> list[Segment]:
    """Timestamps after the audio was stretched by `scale` and then delayed by `offset` seconds.

    Results lie on the 0.02 s grid inside [0, min(duration, 30)], each at least one step long.
    """
    # Round the clip's end down, so that no timestamp points past the last sample.
    limit = max(min(int(math.floor(duration / TIME_PRECISION + 1e-6)), MAX_TIMESTAMP_INDEX), 1)
    moved = []
    for seg in segments:
        first = min(max(timestamp_index(seg.start * scale + offset), 0), limit)
        last = min(max(timestamp_index(seg.end * scale + offset), 0), limit)
        if last <= first:
            if first < limit:
                last = first + 1
            else:
                first = last - 1
        moved.append(Segment(round(first * TIME_PRECISION, 2), round(last * TIME_PRECISION, 2), seg.text))
    return moved


class Augmenter:
    """Applies a parsed config to (audio, segments); `rng` decides every random choice."""

    def __init__(self, steps: Sequence[AugmentStep]):
        self.steps = list(steps)
        self._noise_cache: dict[str, np.ndarray] = {}

    @classmethod
    def from_file(cls, path: str) -> "Augmenter":
        return cls(load_config(path))

    def describe(self) -> str:
        return ", ".join(f"{s.type}(p={s.prob:g})" for s in self.steps) or "none"

    def __call__(self, audio: np.ndarray, segments: Sequence[Segment],
                 rng: np.random.Generator) -> tuple[np.ndarray, list[Segment], list[str]]:
        """Returns the new audio, moved segments and the names of the steps that ran."""
        applied = []
        segments = list(segments)
        for step in self.steps:
            # One draw per step even when prob is 0 or 1: the random stream then does not
            # depend on the probabilities, so changing one does not reshuffle the others.
            if rng.random() >= step.prob:
                continue
            result = getattr(self, f"_{step.type}")(audio, segments, step, rng)
            if result is None:
                continue
            audio, segments = result
            applied.append(step.type)
        return audio.astype(np.float32, copy=False), segments, applied

    def _speed(self, audio, segments, step, rng):
        p = step.params
        if "num_rates" in p and p["num_rates"] > 1:
            rate = float(rng.choice(np.linspace(p["min_speed_rate"], p["max_speed_rate"], p["num_rates"])))
        else:
            rate = float(rng.uniform(p["min_speed_rate"], p["max_speed_rate"]))
        if abs(rate - 1.0) < 1e-6:
            return None
        # Playing `rate` times faster is resampling from rate*16 kHz to 16 kHz (pitch moves too,
        # like tape); soxr gives a band-limited result where np.interp would alias.
        stretched = resample(audio, int(round(SAMPLE_RATE * rate)), SAMPLE_RATE)
        # A slowed-down clip that no longer fits Whisper's window would lose its end and its
        # labels would lie: leave such a clip as it is.
        if len(stretched) > CHUNK_LENGTH * SAMPLE_RATE:
            return None
        duration = len(stretched) / SAMPLE_RATE
        return stretched, move_segments(segments, scale=1.0 / rate, duration=duration)

    def _shift(self, audio, segments, step, rng):
        p = step.params
        shift_ms = float(rng.uniform(p["min_shift_ms"], p["max_shift_ms"]))
        samples = int(round(abs(shift_ms) * SAMPLE_RATE / 1000))
        if samples == 0:
            return None
        if shift_ms > 0:
            # Delay: silence in front, nothing lost.
            if len(audio) + samples > CHUNK_LENGTH * SAMPLE_RATE:
                return None
            shifted = np.concatenate([np.zeros(samples, dtype=np.float32), audio])
        else:
            if samples >= len(audio):
                return None
            shifted = audio[samples:]
        duration = len(shifted) / SAMPLE_RATE
        return shifted, move_segments(segments, offset=shift_ms / 1000, duration=duration)

    def _volume(self, audio, segments, step, rng):
        p = step.params
        gain_db = float(rng.uniform(p["min_gain_dBFS"], p["max_gain_dBFS"]))
        return audio * np.float32(10 ** (gain_db / 20)), segments

    def _resample(self, audio, segments, step, rng):
        # A round trip through another rate keeps the length (so the labels) and leaves the
        # band limit of that rate: what a telephone (8 kHz) recording sounds like.
        rate = int(rng.choice(step.params["new_sample_rates"]))
        if rate == SAMPLE_RATE:
            return None
        restored = resample(resample(audio, SAMPLE_RATE, rate), rate, SAMPLE_RATE)
        if len(restored) >= len(audio):
            restored = restored[:len(audio)]
        else:
            restored = np.pad(restored, (0, len(audio) - len(restored)))
        return restored, segments

    def _noise(self, audio, segments, step, rng):
        p = step.params
        path = step.noise_files[int(rng.integers(len(step.noise_files)))]
        noise = self._noise_cache.get(path)
        if noise is None:
            try:
                noise = load_audio(path)
            except AudioError as exc:
                raise AugmentationConfigError(f"noise file unusable: {exc}") from None
            # Every DataLoader worker keeps its own copy: cache only up to a budget, so that
            # hours of noise (MUSAN) are decoded on use instead of filling memory.
            cached = sum(len(a) for a in self._noise_cache.values())
            if cached + len(noise) <= _NOISE_CACHE_SAMPLES:
                self._noise_cache[path] = noise
        if len(noise) < len(audio):
            noise = np.tile(noise, int(math.ceil(len(audio) / len(noise))))
        begin = int(rng.integers(0, len(noise) - len(audio) + 1))
        noise = noise[begin:begin + len(audio)]
        snr_db = float(rng.uniform(p["min_snr_dB"], p["max_snr_dB"]))
        signal_power = float(np.mean(audio.astype(np.float64) ** 2))
        noise_power = float(np.mean(noise.astype(np.float64) ** 2))
        if signal_power == 0 or noise_power == 0:
            # SNR is undefined for silence (no-speech samples); add noise at the level it has.
            return audio + noise * np.float32(10 ** (-snr_db / 20)), segments
        gain = math.sqrt(signal_power / (noise_power * 10 ** (snr_db / 10)))
        return audio + noise * np.float32(gain), segments
