"""Build jsonlines records in the project's data format and write them atomically.

Every data-set builder (aishell.py, tools/create_*_data.py, tools/synthesize_speech.py)
writes through here, so the format of ../shared/DESIGN.md is produced in one place and
an interrupted run never leaves a half-written manifest behind.
"""
from __future__ import annotations

import json
import math
import os
from typing import Iterable, Optional, Sequence, Union

from utils import REPO_ROOT
from utils.core.audio import TIME_PRECISION

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
    """Context manager writing jsonlines to `<path>.part`, renamed onto `path` only when
    the block finishes without an exception, so readers never see a partial file."""

    def __init__(self, path: PathLike):
        self.path = os.fspath(path)
        self.tmp = f"{self.path}.part"
        self.count = 0
        self._file = None

    def __enter__(self) -> "ManifestWriter":
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._file = open(self.tmp, "w", encoding="utf-8")
        return self

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        self._file.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            os.remove(self.tmp)


def write_manifest(path: PathLike, records: Iterable[dict]) -> int:
    """Write all records atomically; returns how many were written."""
    with ManifestWriter(path) as writer:
        for record in records:
            writer.write(record)
    return writer.count


def write_text_atomic(path: PathLike, text: str) -> None:
    path = os.fspath(path)
    tmp = f"{path}.part"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
