"""Speech for the inference tests, built from the shipped English sample clips."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from utils.core.audio import SAMPLE_RATE, load_audio, save_wav

REPO = Path(__file__).resolve().parent.parent
EN_MANIFEST = REPO / "dataset" / "en_test.jsonl"


def english_samples() -> list[dict]:
    with open(EN_MANIFEST, encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]


def english_clip(index: int = 0) -> tuple[str, str]:
    """(path, sentence) of one shipped English clip."""
    sample = english_samples()[index]
    return str(REPO / sample["audio"]["path"]), sample["sentence"]


def long_english(path: Path, seconds: float, gap: float = 0.6) -> tuple[str, float]:
    """Write a WAV of English clips one after another (with pauses) until `seconds` are filled."""
    pause = np.zeros(int(gap * SAMPLE_RATE), dtype=np.float32)
    parts, total, samples = [], 0, english_samples()
    while total < seconds * SAMPLE_RATE:
        for sample in samples:
            parts += [load_audio(REPO / sample["audio"]["path"]), pause]
            total += len(parts[-2]) + len(pause)
            if total >= seconds * SAMPLE_RATE:
                break
    audio = np.concatenate(parts)
    save_wav(path, audio)
    return str(path), len(audio) / SAMPLE_RATE


def normalize(text: str) -> str:
    """Lower-case words without punctuation, for comparing transcripts across engines."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return jiwer.wer(normalize(reference), normalize(hypothesis))
