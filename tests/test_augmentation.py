"""Augmentation: config validation, what each step does to the audio, and timestamps that move with it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from utils.core.audio import SAMPLE_RATE, TIME_PRECISION, save_wav
from utils.core.segments import Segment
from utils.data.augmentation import (
    AugmentationConfigError,
    Augmenter,
    load_config,
    move_segments,
    parse_config,
)

REPO = Path(__file__).resolve().parent.parent


def tone(freq: float, seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE)[np.argmax(spectrum)])


def one_step(kind: str, params: dict) -> Augmenter:
    return Augmenter(parse_config([{"type": kind, "params": params, "prob": 1.0}]))


SEGMENTS = [Segment(0.5, 1.0, "a"), Segment(1.2, 2.5, "b")]


def test_shipped_config_is_valid():
    steps = load_config(str(REPO / "configs" / "augmentation.json"))
    assert [s.type for s in steps] == ["resample", "noise", "speed", "shift", "volume"]
    noise = next(s for s in steps if s.type == "noise")
    assert len(noise.noise_files) >= 1 and all(Path(f).is_file() for f in noise.noise_files)


@pytest.mark.parametrize("entries, message", [
    ({"type": "speed"}, "expected a JSON list"),
    ([{"type": "echo", "params": {}, "prob": 1}], "entry 1: 'type' is 'echo'"),
    ([{"type": "volume", "params": {"min_gain_dBFS": 1, "max_gain_dBFS": 2}, "prob": 1.5}],
     r"entry 1 \(volume\): 'prob' must be a number from 0 to 1"),
    ([{"type": "volume", "params": {"min_gain_dBFS": 1, "max_gain_dBFS": 2}, "prob": 1},
      {"type": "speed", "params": {"min_speed_rate": 0.9}, "prob": 1}],
     r"entry 2 \(speed\): missing parameter 'max_speed_rate'"),
    ([{"type": "speed", "params": {"min_speed_rate": 1.2, "max_speed_rate": 0.9}, "prob": 1}],
     "min_speed_rate .* greater than max_speed_rate"),
    ([{"type": "shift", "params": {"min_shift_ms": -5, "max_shift_ms": 5, "step": 1}, "prob": 1}],
     "unknown parameter"),
    ([{"type": "volume", "params": {"min_gain_dBFS": "loud", "max_gain_dBFS": 2}, "prob": 1}],
     "'min_gain_dBFS' must be a number"),
    ([{"type": "resample", "params": {"new_sample_rates": []}, "prob": 1}], "non-empty list"),
    ([{"type": "speed", "params": {"min_speed_rate": 0, "max_speed_rate": 1}, "prob": 1}], "must be positive"),
    ([{"type": "shift", "params": {"min_shift_ms": -2000, "max_shift_ms": 5}, "prob": 1}], "limited to ±1000 ms"),
    ([{"type": "noise", "params": {"min_snr_dB": 10, "max_snr_dB": 20, "noise_dir": "no/such/dir"}, "prob": 1}],
     "noise_dir 'no/such/dir' is not a directory"),
    ([{"type": "volume", "params": {"min_gain_dBFS": 1, "max_gain_dBFS": 2}, "prob": 1, "when": "always"}],
     "unknown key"),
])
def test_bad_configs_name_file_and_entry(tmp_path, entries, message):
    path = tmp_path / "aug.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(AugmentationConfigError, match=message) as info:
        load_config(str(path))
    assert str(info.value).startswith(f"{path}: ")


def test_unreadable_noise_file_is_a_config_error(tmp_path):
    noise_dir = tmp_path / "noise"
    noise_dir.mkdir()
    (noise_dir / "broken.wav").write_text("not audio")
    path = tmp_path / "aug.json"
    path.write_text(json.dumps([{"type": "noise", "params": {"min_snr_dB": 5, "max_snr_dB": 5,
                                                             "noise_dir": str(noise_dir)}, "prob": 0.5}]))
    with pytest.raises(AugmentationConfigError, match=r"entry 1 \(noise\): .*broken.wav: not a readable audio"):
        load_config(str(path))


def test_config_file_errors(tmp_path):
    with pytest.raises(AugmentationConfigError, match="not found"):
        load_config(str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text('[{"type": "speed",\n')
    with pytest.raises(AugmentationConfigError, match=r"broken.json: not valid JSON \(line 2"):
        load_config(str(broken))


def test_speed_changes_length_pitch_and_timestamps():
    audio = tone(440, 4.0)
    out, segments, applied = one_step("speed", {"min_speed_rate": 1.25, "max_speed_rate": 1.25})(
        audio, SEGMENTS, np.random.default_rng(0))
    assert applied == ["speed"]
    assert abs(len(out) - len(audio) / 1.25) <= 2
    assert peak_hz(out) == pytest.approx(550, abs=1)
    assert [(s.start, s.end, s.text) for s in segments] == [(0.4, 0.8, "a"), (0.96, 2.0, "b")]


def test_speed_rates_come_from_the_grid_of_num_rates():
    augment = one_step("speed", {"min_speed_rate": 0.9, "max_speed_rate": 1.1, "num_rates": 3})
    rng = np.random.default_rng(1)
    lengths = {len(augment(tone(440, 2.0), [], rng)[0]) for _ in range(30)}
    assert lengths == {round(32000 / 0.9), 32000, round(32000 / 1.1)}


def test_slowing_past_30_seconds_leaves_the_clip_alone():
    audio = tone(440, 29.0)
    out, segments, applied = one_step("speed", {"min_speed_rate": 0.9, "max_speed_rate": 0.9})(
        audio, [Segment(28.0, 29.0, "x")], np.random.default_rng(0))
    assert applied == [] and len(out) == len(audio) and segments[0].end == 29.0


def test_shift_moves_audio_and_timestamps():
    audio = tone(440, 3.0)
    later, segments, _ = one_step("shift", {"min_shift_ms": 500, "max_shift_ms": 500})(
        audio, SEGMENTS, np.random.default_rng(0))
    assert len(later) == len(audio) + 8000 and not later[:8000].any()
    np.testing.assert_array_equal(later[8000:], audio)
    assert [(s.start, s.end) for s in segments] == [(1.0, 1.5), (1.7, 3.0)]

    earlier, segments, _ = one_step("shift", {"min_shift_ms": -600, "max_shift_ms": -600})(
        audio, SEGMENTS, np.random.default_rng(0))
    np.testing.assert_array_equal(earlier, audio[9600:])
    # The first segment now starts before the clip: it is clamped to 0.
    assert [(s.start, s.end) for s in segments] == [(0.0, 0.4), (0.6, 1.9)]


def test_move_segments_stays_on_grid_and_inside_the_clip():
    rng = np.random.default_rng(3)
    for _ in range(200):
        duration = float(rng.uniform(0.5, 30))
        starts = np.sort(rng.uniform(0, duration, 3))
        segments = [Segment(float(s), float(min(s + rng.uniform(0.01, 3), duration)), "t") for s in starts]
        moved = move_segments(segments, scale=float(rng.uniform(0.8, 1.2)), offset=float(rng.uniform(-1, 1)),
                              duration=duration)
        for seg in moved:
            assert 0 <= seg.start < seg.end <= min(duration, 30.0) + 1e-9
            for value in (seg.start, seg.end):
                assert abs(value / TIME_PRECISION - round(value / TIME_PRECISION)) < 1e-6


def test_volume_gain():
    audio = tone(440, 1.0)
    out, _, _ = one_step("volume", {"min_gain_dBFS": 20 * np.log10(2), "max_gain_dBFS": 20 * np.log10(2)})(
        audio, [], np.random.default_rng(0))
    np.testing.assert_allclose(out, 2 * audio, rtol=1e-5)


def test_noise_at_requested_snr(tmp_path):
    noise_dir = tmp_path / "noise"
    noise_dir.mkdir()
    save_wav(noise_dir / "hiss.wav", np.random.default_rng(0).uniform(-0.5, 0.5, 8000))
    audio = tone(440, 2.0)   # longer than the noise file: the noise is repeated
    out, _, applied = one_step("noise", {"min_snr_dB": 10, "max_snr_dB": 10, "noise_dir": str(noise_dir)})(
        audio, [], np.random.default_rng(0))
    assert applied == ["noise"] and len(out) == len(audio)
    added = out - audio
    snr = 10 * np.log10(np.mean(audio.astype(np.float64) ** 2) / np.mean(added.astype(np.float64) ** 2))
    assert snr == pytest.approx(10, abs=0.01)


def test_resample_removes_what_the_lower_rate_cannot_carry():
    audio = tone(1000, 1.0) + tone(6000, 1.0)
    out, _, _ = one_step("resample", {"new_sample_rates": [8000]})(audio, [], np.random.default_rng(0))
    assert len(out) == len(audio)
    spectrum = np.abs(np.fft.rfft(out))
    freqs = np.fft.rfftfreq(len(out), 1 / SAMPLE_RATE)
    low, high = spectrum[np.argmin(abs(freqs - 1000))], spectrum[np.argmin(abs(freqs - 6000))]
    assert high < 0.01 * low


def test_same_seed_same_result_and_probability():
    augment = Augmenter(load_config(str(REPO / "configs" / "augmentation.json")))
    audio = tone(440, 2.0)
    first = augment(audio, SEGMENTS, np.random.default_rng(42))
    again = augment(audio, SEGMENTS, np.random.default_rng(42))
    np.testing.assert_array_equal(first[0], again[0])
    assert first[1] == again[1] and first[2] == again[2]
    runs = [tuple(augment(audio, SEGMENTS, np.random.default_rng(seed))[2]) for seed in range(40)]
    assert len(set(runs)) > 5
    # prob 0.5 steps ran in roughly half the runs, the 0.2 resample less often.
    counts = {kind: sum(kind in run for run in runs) for kind in ("volume", "resample")}
    assert 10 <= counts["volume"] <= 30 and counts["resample"] < counts["volume"]
    never = Augmenter(parse_config([{"type": "volume", "params": {"min_gain_dBFS": 6, "max_gain_dBFS": 6},
                                     "prob": 0}]))
    out, _, applied = never(audio, [], np.random.default_rng(0))
    assert applied == [] and np.array_equal(out, audio)
