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
