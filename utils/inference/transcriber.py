"""The one transcription interface: every front end asks a Transcriber for segments.

`load_transcriber("transformers" | "ct2" | "ggml", model_path, ...)` returns an object whose
`transcribe(audio, options)` yields typed `Segment`s lazily plus a `TranscriptionInfo`; the
backends (utils/backend_*.py) differ only in the engine behind it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal, Optional, Union

import numpy as np

from utils.core.audio import CHUNK_LENGTH, SAMPLE_RATE, AudioError, load_audio
from utils.core.languages import check_task, to_language_code

AudioInput = Union[str, os.PathLike, bytes, np.ndarray]

BACKENDS = ("transformers", "ct2", "ggml")


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


@dataclass
class TranscribeOptions:
    language: Optional[str] = None        # name ("chinese") or code ("zh"); None = detect
    task: str = "transcribe"              # or "translate"
    beam_size: int = 1
    timestamps: bool = True
    word_timestamps: bool = False
    vad_filter: bool = False
    initial_prompt: Optional[str] = None
    temperature: float = 0.0
    # Whisper's defence against repetition loops: a window whose text compresses too well (it
    # repeats) or is too unlikely is decoded again at a temperature this much higher, up to 1.0.
    # 0 = decode once at `temperature`.
    temperature_increment_on_fallback: float = 0.2


@dataclass
class TranscriptionInfo:
    language: str
    language_probability: Optional[float]
    duration: float


@dataclass
class ResolvedOptions:
    """TranscribeOptions after validation: language is a code (or None = detect)."""
    language: Optional[str]
    task: str
    options: TranscribeOptions = field(repr=False)


class Transcriber:
    """Backend-agnostic speech-to-text. Subclasses implement `_transcribe`."""

    backend = "abstract"
    multilingual = True
    # Options an engine cannot honour are rejected, never silently ignored.
    unsupported: tuple[str, ...] = ()

    def transcribe(self, audio: AudioInput, options: TranscribeOptions = TranscribeOptions()
                   ) -> tuple[Iterator[Segment], TranscriptionInfo]:
        """Decode `audio` (path, bytes or 16 kHz mono float32 array) and return (segments, info).

        Raises AudioError for unreadable audio and ValueError for an unknown language/task or an
        option this backend cannot honour. Segments come from a generator: iterate to decode.
        """
        resolved = self.resolve_options(options)
        samples = as_samples(audio)
        return self._transcribe(samples, resolved)

    def _transcribe(self, audio: np.ndarray, options: ResolvedOptions
                    ) -> tuple[Iterator[Segment], TranscriptionInfo]:
        raise NotImplementedError

    def resolve_options(self, options: TranscribeOptions) -> ResolvedOptions:
        language = to_language_code(options.language)
        task = check_task(options.task)
        if not self.multilingual:
            # English-only checkpoints have no language or task tokens to set.
            if language not in (None, "en"):
                raise ValueError(f"this model is English-only; it cannot transcribe language {language!r}")
            if task != "transcribe":
                raise ValueError("this model is English-only; it cannot translate")
            language = "en"
        if options.beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {options.beam_size}")
        if options.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {options.temperature}")
        if options.temperature_increment_on_fallback < 0:
            raise ValueError("temperature_increment_on_fallback must be >= 0, "
                             f"got {options.temperature_increment_on_fallback}")
        for name in self.unsupported:
            if getattr(options, name):
                raise ValueError(f"the {self.backend} backend does not support {name}; "
                                 f"use the ct2 backend (infer_ct2.py) for it")
        return ResolvedOptions(language=language, task=task, options=options)


# Whisper's sample_len: at most half of the decoder's 448 positions are new tokens per window.
# A window caught in a repetition loop stops there instead of running to 448 tokens (each extra
# token is a decoder step), and the temperature fallback then decodes it again.
MAX_NEW_TOKENS_PER_WINDOW = 224


def temperature_schedule(options: TranscribeOptions) -> tuple[float, ...]:
    """The temperatures tried in turn on a window: `temperature`, then each fallback step up to 1.0."""
    step = options.temperature_increment_on_fallback
    if step <= 0 or options.temperature >= 1.0:
        return (options.temperature,)
    count = int((1.0 - options.temperature) / step + 1e-6)
    return tuple(round(options.temperature + i * step, 4) for i in range(count + 1))


def as_samples(audio: AudioInput) -> np.ndarray:
    """Any accepted input as 16 kHz mono float32 samples (AudioError when unusable)."""
    if isinstance(audio, np.ndarray):
        if audio.ndim != 1:
            raise AudioError(f"<array>: expected mono samples (1-D), got shape {audio.shape}")
        if audio.size == 0:
            raise AudioError("<array>: audio has no samples")
        return audio.astype(np.float32, copy=False)
    return load_audio(audio)


CUT_SEARCH_SECONDS = 10.0    # look this far back from a piece's limit for the quietest moment
CUT_FRAME = SAMPLE_RATE // 10


def split_at_quiet_points(audio: np.ndarray, max_seconds: float) -> list[tuple[int, int]]:
    """Cut `audio` into contiguous pieces no longer than `max_seconds`, each ending at the
    quietest 0.1 s frame of its last few seconds so that words are rarely cut in half.

    Written here because transformers' pipeline chunking (chunk_length_s) overlaps
    windows and merges them heuristically, which neither streams nor keeps generate's timestamps.
    """
    limit = int(max_seconds * SAMPLE_RATE)
    search = min(int(CUT_SEARCH_SECONDS * SAMPLE_RATE), limit // 2)
    pieces, start = [], 0
    while len(audio) - start > limit:
        window = audio[start + limit - search:start + limit]
        frames = window[:len(window) // CUT_FRAME * CUT_FRAME].reshape(-1, CUT_FRAME)
        quietest = int(np.argmin((frames ** 2).mean(axis=1)))
        cut = start + limit - search + quietest * CUT_FRAME + CUT_FRAME // 2
        pieces.append((start, cut))
        start = cut
    pieces.append((start, len(audio)))
    return pieces


def duration_of(samples: np.ndarray) -> float:
    return len(samples) / SAMPLE_RATE


def load_transcriber(backend: str, model_path: str, **backend_options) -> Transcriber:
    """Open `model_path` with the named backend.

    backend_options (each backend rejects ones it does not know):
      transformers: use_gpu, batch_size, attn_implementation, use_compile, assistant_model_path,
                    local_files_only, dtype, cpu_threads
      ct2:          use_gpu, compute_type, batch_size, num_workers, cpu_threads, local_files_only
      ggml:         cpu_threads
    """
    if backend == "transformers":
        from utils.inference.backends.transformers import TransformersTranscriber as cls
    elif backend == "ct2":
        from utils.inference.backends.ct2 import CT2Transcriber as cls
    elif backend == "ggml":
        from utils.inference.backends.ggml import GGMLTranscriber as cls
    else:
        raise ValueError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    return cls(model_path, **backend_options)


def check_model_dir(model_path: str, required: tuple[str, ...], must_exist: bool) -> None:
    """A local model folder must hold `required` files.

    A path that does not exist may still be a hub name ("openai/whisper-base") for online users,
    so it is only an error when `must_exist` (e.g. --local_files_only).
    """
    if not os.path.exists(model_path):
        if must_exist:
            raise FileNotFoundError(f"{model_path}: model folder not found")
        return
    if not os.path.isdir(model_path):
        raise FileNotFoundError(f"{model_path}: expected a model folder, found a file")
    missing = [name for name in required if not os.path.exists(os.path.join(model_path, name))]
    if missing:
        raise FileNotFoundError(f"{model_path}: not a usable model folder, missing {', '.join(missing)}")


@dataclass
class CommonInferArguments:
    """The flags infer.py and infer_ct2.py share (HfArgumentParser fields); each script's
    subclass adds its model path and engine flags after these."""
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


USER_ERRORS = (AudioError, ValueError, FileNotFoundError)


def print_config(title: str, config) -> None:
    """The effective configuration, one `name = value` per line, at the start of a run."""
    import dataclasses

    print(f"{title}:")
    for item in dataclasses.fields(config):
        print(f"  {item.name} = {getattr(config, item.name)!r}")


def transcribe_to_outputs(transcriber: Transcriber, audio_path: str, options: TranscribeOptions,
                          audio: Optional[np.ndarray] = None, output_format: Optional[str] = None, output_dir: str = "output",
                          print_segments: bool = True) -> tuple[list[Segment], TranscriptionInfo]:
    """What infer.py and infer_ct2.py do after loading: decode with progress, print
    `[start - end] text` lines, write the requested formats, end with a one-line summary.
    `audio` is the already decoded file, when the caller read it early to fail fast."""
    import sys
    import time

    from tqdm import tqdm

    from utils.inference.writers import get_writer, transcript_text

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


def report_errors(run: Callable[[], object], errors: Union[type, tuple[type, ...]],
                  status: int = 1) -> int:
    """Run `run()` and return 0; one of `errors` (a user mistake: bad input, a missing file) ends
    in one `error: <message>` line on stderr and `status` instead of a traceback.

    For a script's `main(argv) -> int`: `return report_errors(lambda: build(args), MyError)`."""
    import sys

    try:
        run()
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return status
    return 0


def exit_on_user_error(main) -> None:
    """Run `main()`; a user mistake ends in one line on stderr and exit status 1, not a traceback."""
    import sys

    status = report_errors(main, USER_ERRORS)
    if status:
        sys.exit(status)
