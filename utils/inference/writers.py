"""Transcript output formats: one small writer class per format, picked by name.

    writer = get_writer("srt", "output/")
    path = writer(segments, info, "audio/meeting.mp3")   # -> output/meeting.srt

Every file is written beside its final name and renamed, so a failure never leaves half a file.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Optional, Sequence, TextIO

from utils.core.errors import UsageError
from utils.core.files import atomic_write
from utils.inference.transcriber import Segment, TranscriptionInfo


def format_timestamp(seconds: float, decimal_marker: str = ".", always_hours: bool = False) -> str:
    milliseconds = max(0, int(round(seconds * 1000)))
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    secs, milliseconds = divmod(milliseconds, 1000)
    hours_part = f"{hours:02d}:" if always_hours or hours else ""
    return f"{hours_part}{minutes:02d}:{secs:02d}{decimal_marker}{milliseconds:03d}"


def segment_line(segment: Segment) -> str:
    """The one way a timed segment is shown to a person, in the terminal (infer.py, infer_ct2.py) and in
    the window: `[0.00 - 3.82] text`, seconds with two decimals."""
    return f"[{segment.start:.2f} - {segment.end:.2f}] {segment.text.strip()}"


def _one_line(text: str) -> str:
    # A line break inside a cue would end the cue early in SRT/VTT readers.
    return " ".join(text.split())


class ResultWriter:
    extension: str = ""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir

    def output_path(self, audio_path: str) -> str:
        stem = os.path.splitext(os.path.basename(audio_path))[0] or "transcript"
        return os.path.join(self.output_dir, f"{stem}.{self.extension}")

    def __call__(self, segments: Sequence[Segment], info: Optional[TranscriptionInfo],
                 audio_path: str) -> str:
        path = self.output_path(audio_path)
        with atomic_write(path) as file:
            self.write(list(segments), info, file)
        return path

    def write(self, segments: list[Segment], info: Optional[TranscriptionInfo], file: TextIO) -> None:
        raise NotImplementedError


class WriteTXT(ResultWriter):
    extension = "txt"

    def write(self, segments, info, file):
        for segment in segments:
            print(segment.text.strip(), file=file)


class WriteSubtitles(ResultWriter):
    """Timed cues, `start --> end` then the text and a blank line; the formats differ only in
    a header, cue numbers and the decimal marker of the timestamps."""
    header: Optional[str] = None
    numbered: bool = False
    decimal_marker: str = "."

    def write(self, segments, info, file):
        if self.header is not None:
            print(f"{self.header}\n", file=file)
        for index, segment in enumerate(segments, start=1):
            number = f"{index}\n" if self.numbered else ""
            start = format_timestamp(segment.start, self.decimal_marker, always_hours=True)
            end = format_timestamp(segment.end, self.decimal_marker, always_hours=True)
            print(f"{number}{start} --> {end}\n{_one_line(segment.text)}\n", file=file)


class WriteSRT(WriteSubtitles):
    extension = "srt"
    numbered = True
    decimal_marker = ","


class WriteVTT(WriteSubtitles):
    extension = "vtt"
    header = "WEBVTT"


class WriteTSV(ResultWriter):
    """Start and end in integer milliseconds, as openai-whisper's TSV, so spreadsheets sort them."""
    extension = "tsv"

    def write(self, segments, info, file):
        print("start\tend\ttext", file=file)
        for segment in segments:
            text = _one_line(segment.text).replace("\t", " ")
            print(f"{round(segment.start * 1000)}\t{round(segment.end * 1000)}\t{text}", file=file)


class WriteJSON(ResultWriter):
    extension = "json"

    def write(self, segments, info, file):
        result = {
            "text": "".join(_join_text(segments)),
            "language": info.language if info else None,
            "language_probability": info.language_probability if info else None,
            "duration": info.duration if info else None,
            "segments": [dataclasses.asdict(segment) for segment in segments],
        }
        json.dump(result, file, ensure_ascii=False, indent=2)
        file.write("\n")


def _join_text(segments: Sequence[Segment]) -> list[str]:
    # Languages written without spaces (zh, ja) must not gain spaces between segments.
    parts = []
    for segment in segments:
        text = segment.text.strip()
        if parts and text and (text[0].isascii() and parts[-1][-1:].isascii()):
            parts.append(" ")
        parts.append(text)
    return parts


def transcript_text(segments: Sequence[Segment]) -> str:
    return "".join(_join_text(segments))


WRITERS = {cls.extension: cls for cls in (WriteTXT, WriteSRT, WriteVTT, WriteTSV, WriteJSON)}
FORMATS = tuple(WRITERS) + ("all",)


def get_writer(output_format: str, output_dir: str) -> Callable[..., str]:
    """A writer for one format, or for "all" a writer that writes every format (returns the paths joined)."""
    if output_format == "all":
        writers = [cls(output_dir) for cls in WRITERS.values()]

        def write_all(segments, info, audio_path):
            segments = list(segments)
            return ", ".join(writer(segments, info, audio_path) for writer in writers)

        return write_all
    if output_format not in WRITERS:
        raise UsageError(f"unknown output format {output_format!r}; valid formats: {', '.join(FORMATS)}")
    return WRITERS[output_format](output_dir)
