"""What infer.py and infer_ct2.py share: their common flags, and one transcription of a file with
progress, `[start - end] text` lines, the requested output files and a one-line summary."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Literal, Optional

import numpy as np

from utils.core.audio import CHUNK_LENGTH
from utils.inference.transcriber import Segment, TranscribeOptions, Transcriber, TranscriptionInfo
from utils.inference.writers import get_writer, transcript_text


@dataclass
class CommonInferArguments:
    """The flags infer.py and infer_ct2.py share; each script's subclass adds its model path and
    engine flags after these."""
    audio_path: str = field(metadata={"help": "audio or video file (anything soundfile or FFmpeg reads)"})
    language: Optional[str] = field(default=None, metadata={
        "help": "spoken language, name or code (chinese, zh); unset = detect and report it"})
    task: Literal["transcribe", "translate"] = field(default="transcribe",
                                                     metadata={"help": "transcribe, or translate to English"})
    local_files_only: bool = field(default=True, metadata={
        "help": "never contact the Hugging Face hub; False lets --model_path be a hub name"})
    initial_prompt: Optional[str] = field(default=None, metadata={
        "help": "text that conditions the first window (spelling of names, punctuation style)"})
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature; 0 = deterministic"})
    temperature_increment_on_fallback: float = field(default=0.2, metadata={
        "help": "Whisper's fallback: a window whose text repeats or is unlikely is decoded again this "
                "much hotter, up to 1.0; 0 = decode once (faster, reproducible)"})
    output_format: Optional[Literal["txt", "srt", "vtt", "tsv", "json", "all"]] = field(
        default=None, metadata={"help": "also write the transcript in this format; unset = print only"})
    output_dir: str = field(default="output", metadata={"help": "folder for --output_format files"})

    def transcribe_options(self, **engine_options) -> TranscribeOptions:
        """TranscribeOptions from the shared flags plus the script's own (beam_size, timestamps, ...)."""
        return TranscribeOptions(
            language=self.language, task=self.task, initial_prompt=self.initial_prompt,
            temperature=self.temperature,
            temperature_increment_on_fallback=self.temperature_increment_on_fallback, **engine_options)


def transcribe_to_outputs(transcriber: Transcriber, audio_path: str, options: TranscribeOptions,
                          audio: Optional[np.ndarray] = None, output_format: Optional[str] = None,
                          output_dir: str = "output",
                          print_segments: bool = True) -> tuple[list[Segment], TranscriptionInfo]:
    """What infer.py and infer_ct2.py do after loading: decode with progress, print
    `[start - end] text` lines, write the requested formats, end with a one-line summary.
    `audio` is the already decoded file, when the caller read it early to fail fast."""
    from tqdm import tqdm

    writer = get_writer(output_format, output_dir) if output_format else None
    began = time.perf_counter()
    segments_iter, info = transcriber.transcribe(audio_path if audio is None else audio, options)
    detected = "" if info.language_probability is None else f" (detected, p={info.language_probability:.2f})"
    print(f"language: {info.language}{detected}; duration: {info.duration:.2f} s")
    segments: list[Segment] = []
    # Progress only pays off past one window; short clips finish before a bar is useful.
    with tqdm(total=round(info.duration, 2), unit="s", desc="transcribing", file=sys.stderr,
              disable=info.duration <= CHUNK_LENGTH, leave=False) as bar:
        for segment in segments_iter:
            segments.append(segment)
            if print_segments:
                line = f"[{segment.start:.2f} - {segment.end:.2f}] {segment.text}"
                tqdm.write(line) if not bar.disable else print(line, flush=True)
            bar.n = round(min(segment.end, info.duration), 2)
            bar.refresh()
    elapsed = time.perf_counter() - began
    if not segments:
        print("no speech found: the transcript is empty")
    written = f"; wrote {writer(segments, info, audio_path)}" if writer else ""
    words = len(transcript_text(segments).split())
    print(f"transcribed {info.duration:.1f} s of audio in {elapsed:.1f} s "
          f"(real-time factor {elapsed / max(info.duration, 1e-9):.3f}): "
          f"{len(segments)} segments, {words} words{written}")
    return segments, info
