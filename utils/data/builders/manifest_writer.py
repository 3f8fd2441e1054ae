"""Manifest lines in the project's data format (docs/data-format.md), written atomically.

Every builder writes through here, so the format is produced in one place and an interrupted
run never leaves a half-written manifest behind (utils.core.files.atomic_write).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from collections import Counter
from typing import Dict, Iterable, Optional, Sequence, Union

from utils import REPO_ROOT
from utils.core.audio import TIME_PRECISION
from utils.core.files import atomic_write

PathLike = Union[str, os.PathLike]


def manifest_audio_path(path: PathLike) -> str:
    """How an audio file is named in a manifest: relative to the repository root when it
    lies inside it (shipped and default data, as in the original project), else absolute
    so the manifest works from any working directory."""
    path = os.path.abspath(path)
    if path.startswith(REPO_ROOT + os.sep):
        return os.path.relpath(path, REPO_ROOT)
    return path


def snap_time(seconds: float, down: bool = False) -> float:
    """Round a time onto Whisper's 0.02 s timestamp grid (two decimals, no float noise);
    `down` rounds toward zero, for an end time that must stay inside the audio."""
    steps = seconds / TIME_PRECISION
    steps = math.floor(steps + 1e-6) if down else round(steps)
    return round(steps * TIME_PRECISION, 2)


def make_record(audio_path: str, sentence: str, duration: float,
                sentences: Optional[Sequence[dict]] = None, language: Optional[str] = None,
                start_time: Optional[float] = None, end_time: Optional[float] = None) -> dict:
    """One manifest line. Optional fields are omitted rather than written as null,
    because the original project's loaders test for presence, not for None."""
    audio = {"path": audio_path}
    if start_time is not None:
        audio["start_time"] = round(float(start_time), 3)
    if end_time is not None:
        audio["end_time"] = round(float(end_time), 3)
    record: dict = {"audio": audio, "sentence": sentence}
    if language:
        record["language"] = language
    if sentences is not None:
        record["sentences"] = [{"start": snap_time(s["start"]), "end": snap_time(s["end"]),
                                "text": s["text"]} for s in sentences]
    record["duration"] = round(float(duration), 2)
    return record


class ManifestWriter:
    """`with ManifestWriter(path) as w: w.write(record)`: jsonlines that replace `path` only when
    the block ends without an exception (atomic_write); counts the lines and their seconds."""

    def __init__(self, path: PathLike):
        self.path = os.fspath(path)
        self.count = 0
        self.seconds = 0.0
        self._stack = contextlib.ExitStack()
        self._file = None

    def __enter__(self) -> "ManifestWriter":
        self._file = self._stack.enter_context(atomic_write(self.path))
        return self

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.count += 1
        self.seconds += float(record.get("duration", 0.0))

    def __exit__(self, *exc_info) -> bool:
        return self._stack.__exit__(*exc_info)


class ManifestSet:
    """One manifest per split, `<folder>/<split><suffix>`, all put in place together when the
    block succeeds: a rerun never leaves a new train split beside an old test split."""

    def __init__(self, folder: PathLike, splits: Iterable[str], suffix: str = ".jsonl"):
        self.folder = os.fspath(folder)
        self.writers: Dict[str, ManifestWriter] = {
            split: ManifestWriter(os.path.join(self.folder, f"{split}{suffix}")) for split in splits}
        self._stack: Optional[contextlib.ExitStack] = None

    def __enter__(self) -> "ManifestSet":
        with contextlib.ExitStack() as stack:
            for writer in self.writers.values():
                stack.enter_context(writer)
            self._stack = stack.pop_all()
        return self

    def write(self, split: str, record: dict) -> None:
        self.writers[split].write(record)

    def __exit__(self, *exc_info) -> bool:
        return self._stack.__exit__(*exc_info)

    def summary(self, skipped: Counter, unit: str = "lines") -> str:
        """The builders' closing line: what each manifest holds, and what was left out and why."""
        written = ", ".join(f"{os.path.basename(w.path)} {w.count} {unit} ({w.seconds / 3600:.2f} h)"
                            for w in self.writers.values())
        left_out = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()) if n) or "none"
        return f"summary: {written} in {self.folder}; skipped: {left_out}"
