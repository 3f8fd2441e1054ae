"""What infer.py and infer_ct2.py share: their common flags, the expansion of --audio_path (files,
folders, globs), and the transcription of each file with progress, `[start - end] text` lines, the
requested output files and one-line summaries."""
from __future__ import annotations

import glob
import importlib.util
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional

import numpy as np

from utils.core.audio import CHUNK_LENGTH, load_audio
from utils.core.errors import EXIT_USAGE, UsageError, UserError
from utils.inference.transcriber import Segment, TranscribeOptions, Transcriber, TranscriptionInfo
from utils.inference.writers import FORMATS, get_writer, segment_line, transcript_text

# What a folder given to --audio_path contributes: files with these endings (case-insensitive), so that
# transcripts, manifests and pictures lying beside the audio are left alone.
MEDIA_EXTENSIONS = (".wav", ".mp3", ".flac", ".m4a", ".ogg", ".opus", ".aac", ".wma", ".webm", ".mp4",
                    ".mkv", ".mov", ".avi")
NO_OUTPUT = "none"
# The --output_format values that need only the text, not when each segment starts and ends.
TEXT_ONLY_FORMATS = ("txt", NO_OUTPUT)


def attention_choice(attn_implementation: str, use_flash_attention_2: bool, use_bettertransformer: bool,
                     use_gpu: bool) -> str:
    """The transformers attention kernel from the original project's flags (--use_flash_attention_2,
    --use_bettertransformer) and ours (--attn_implementation); UsageError, before any model loads, for
    what cannot run here. Shared by infer.py, infer_gui.py and infer_server.py."""
    if use_bettertransformer:
        raise UsageError("--use_bettertransformer: optimum's BetterTransformer is obsolete and transformers "
                         "no longer offers it; the default --attn_implementation=sdpa already gives its fused "
                         "attention, so drop the flag")
    flag = "--use_flash_attention_2" if use_flash_attention_2 else "--attn_implementation=flash_attention_2"
    if use_flash_attention_2:
        attn_implementation = "flash_attention_2"
    if attn_implementation == "flash_attention_2":
        missing = [] if use_gpu else ["a CUDA GPU (--use_gpu)"]
        if importlib.util.find_spec("flash_attn") is None:
            missing.append("the flash-attn package, which is not installed here (pip install flash-attn)")
        if missing:
            raise UsageError(f"{flag}: flash_attention_2 needs {' and '.join(missing)}; without the flag the "
                             f"default sdpa attention is used, which runs everywhere")
    return attn_implementation


@dataclass
class CommonInferArguments:
    """The flags infer.py and infer_ct2.py share; each script's subclass adds its model path and
    engine flags after these."""
    audio_path: list[str] = field(metadata={
        "help": "audio or video files (anything soundfile or FFmpeg reads), folders (their audio and video "
                "files) or quoted globs ('talks/*.mp3'); the model loads once for all of them"})
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
    output_format: Literal[FORMATS + (NO_OUTPUT,)] = field(default="all", metadata={
        "help": "transcript files written per input into --output_dir, named after it (talk.srt): one "
                "format, all of them (txt, srt, vtt, tsv, json), or none = print only"})
    output_dir: str = field(default="output", metadata={"help": "folder for --output_format files"})

    def transcribe_options(self, **engine_options) -> TranscribeOptions:
        """TranscribeOptions from the shared flags plus the script's own (beam_size, timestamps, ...)."""
        return TranscribeOptions(
            language=self.language, task=self.task, initial_prompt=self.initial_prompt,
            temperature=self.temperature,
            temperature_increment_on_fallback=self.temperature_increment_on_fallback, **engine_options)


def needs_segment_times(output_format: Optional[str], word_timestamps: bool) -> bool:
    """Whether the outputs asked for show segment times: a subtitle, TSV or JSON file (or all of
    them), or word timestamps; a text file or the printed text alone does not."""
    return word_timestamps or output_format not in TEXT_ONLY_FORMATS + (None,)


def transcribe_to_outputs(transcriber: Transcriber, audio_path: str, options: TranscribeOptions,
                          audio: Optional[np.ndarray] = None, output_format: Optional[str] = None,
                          output_dir: str = "output",
                          print_segments: bool = True) -> tuple[list[Segment], TranscriptionInfo]:
    """What infer.py and infer_ct2.py do after loading: decode with progress, print
    `[start - end] text` lines, write the requested formats, end with a one-line summary.
    `audio` is the already decoded file, when the caller read it early to fail fast."""
    from tqdm import tqdm

    writer = get_writer(output_format, output_dir) if output_format not in (None, NO_OUTPUT) else None
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
                line = segment_line(segment)
                tqdm.write(line) if not bar.disable else print(line, flush=True)
            bar.n = round(min(segment.end, info.duration), 2)
            bar.refresh()
    elapsed = time.perf_counter() - began
    if not segments:
        print("no speech found: the transcript is empty")
    written = f"; wrote {_shorter(writer(segments, info, audio_path))}" if writer else ""
    words = len(transcript_text(segments).split())
    print(f"transcribed {info.duration:.1f} s of audio in {elapsed:.1f} s "
          f"(real-time factor {elapsed / max(info.duration, 1e-9):.3f}): "
          f"{len(segments)} segments, {words} words{written}")
    return segments, info


def _shorter(paths: str) -> str:
    """"out/a.txt, out/a.srt" -> "out/a.{txt,srt}" (what --output_format=all wrote, on one short line)."""
    stems = {os.path.splitext(path)[0] for path in paths.split(", ")}
    if len(stems) != 1 or ", " not in paths:
        return paths
    return f"{stems.pop()}.{{{','.join(os.path.splitext(path)[1][1:] for path in paths.split(', '))}}}"


def expand_audio_paths(paths: list[str]) -> list[str]:
    """The files --audio_path names, in the order given: a folder's media files sorted by name, a glob's
    matches sorted, any other path as it is (a missing one fails when it is read, naming it).
    UsageError for a folder without media files, a glob that matches nothing, or two inputs whose
    output files would overwrite each other."""
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(os.path.join(path, name) for name in os.listdir(path)
                           if name.lower().endswith(MEDIA_EXTENSIONS) and not name.startswith("."))
            if not found:
                raise UsageError(f"--audio_path: the folder {path} holds no audio or video files "
                                 f"({', '.join(MEDIA_EXTENSIONS)})")
            files.extend(found)
        elif glob.has_magic(path) and not os.path.exists(path):
            found = sorted(match for match in glob.glob(path) if os.path.isfile(match))
            if not found:
                raise UsageError(f"--audio_path: no file matches {path}")
            files.extend(found)
        else:
            files.append(path)
    stems: dict[str, str] = {}
    for path in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in stems and stems[stem] != path:
            raise UsageError(f"--audio_path: {stems[stem]} and {path} would write the same output files "
                             f"({stem}.*); transcribe them in separate runs with different --output_dir")
        stems[stem] = path
    return list(dict.fromkeys(files))


def transcribe_files(load: Callable[[], Transcriber], paths: list[str], options: TranscribeOptions,
                     output_format: str = "all", output_dir: str = "output") -> int:
    """What infer.py and infer_ct2.py do: expand `paths`, load the model once with `load()`, transcribe
    every file, end with a summary line; the exit status (EXIT_USAGE when some file failed).

    One input that cannot be read fails at once, before the slow model load (one `error:` line). Of
    several inputs, one that cannot be read or decoded is reported on its own `error:` line and counted,
    and the others are still transcribed (a folder of recordings with one broken file is common)."""
    files = expand_audio_paths(paths)
    first = load_audio(files[0]) if len(files) == 1 else None
    transcriber = load()
    if first is not None:
        transcribe_to_outputs(transcriber, files[0], options, first, output_format, output_dir)
        return 0
    began = time.perf_counter()
    failed, seconds = [], 0.0
    for number, path in enumerate(files, start=1):
        print(f"== {number}/{len(files)} {path}", flush=True)
        try:
            _, info = transcribe_to_outputs(transcriber, path, options, load_audio(path), output_format,
                                            output_dir)
            seconds += info.duration
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            failed.append(path)
    elapsed = time.perf_counter() - began
    written = f"; outputs in {output_dir}" if output_format != NO_OUTPUT and len(failed) < len(files) else ""
    failures = f", {len(failed)} failed ({', '.join(failed)})" if failed else ", 0 failed"
    print(f"{len(files)} files{failures}: {seconds:.1f} s of audio in {elapsed:.1f} s{written}", flush=True)
    return EXIT_USAGE if failed else 0
