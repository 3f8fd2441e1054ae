"""A stretch of speech and its text, with times in seconds: what a transcriber yields, what the output
writers and the server write, and what training labels and augmentation shift (`words` stays None there)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class Word:
    start: float
    end: float
    word: str
    probability: float


@dataclass
class Segment:
    start: float
    end: float
    text: str
    words: Optional[list[Word]] = None
    # What the decoder knew about this segment, where the backend reports it (OpenAI's verbose_json
    # fields); None = not reported by this backend.
    seek: Optional[int] = None                 # start of the 30 s window it came from, in 10 ms frames
    tokens: Optional[list[int]] = None         # text and timestamp token ids
    temperature: Optional[float] = None        # the temperature that produced it (after any fallback)
    avg_logprob: Optional[float] = None
    compression_ratio: Optional[float] = None
    no_speech_prob: Optional[float] = None
