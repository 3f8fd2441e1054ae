"""The one transcription interface: every front end asks a Transcriber for segments.

A backend (utils/inference/backends/, named in utils.inference.registry) subclasses Transcriber;
`transcribe(audio, options)` yields typed `Segment`s lazily plus a `TranscriptionInfo`, so a caller
can stream segments, show progress or stop early.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Union

import numpy as np

from utils.core.audio import AudioError, duration_of, is_silent, load_audio
from utils.core.errors import UserError
from utils.core.languages import LANGUAGES, check_model_language, check_task, to_language_code
from utils.core.segments import Segment, Word  # noqa: F401  (the types every Transcriber caller meets)

AudioInput = Union[str, os.PathLike, bytes, np.ndarray]


class TranscriptionError(UserError):
    """An option a backend cannot honour, or one that cannot work on this machine."""


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
    # Encode only the audio's own length and 3 s after it (at least 10 s; the ct2 backend), not a
    # whole 30 s window: about 2.5x less CPU per live-transcription decode. Audio that does not fit
    # a window that way is decoded as usual.
    short_window: bool = False


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
    # The language codes this model has tokens for (utils.core.languages.model_languages); a backend
    # sets them from its model, and resolve_options refuses any other.
    languages: tuple[str, ...] = tuple(LANGUAGES)
    # Options an engine cannot honour are rejected, never silently ignored.
    unsupported: tuple[str, ...] = ()

    def transcribe(self, audio: AudioInput, options: Optional[TranscribeOptions] = None
                   ) -> tuple[Iterator[Segment], TranscriptionInfo]:
        """Decode `audio` (path, bytes or 16 kHz mono float32 array) and return (segments, info).

        Raises AudioError for unreadable audio, LanguageError for an unknown language/task and
        TranscriptionError for an option this backend cannot honour. Segments come from a
        generator: iterate to decode. `options` None means TranscribeOptions() (detect the language).
        """
        resolved = self.resolve_options(options or TranscribeOptions())
        samples = as_samples(audio)
        if is_silent(samples):
            # Nothing to hear: answered without decoding, where Whisper would spend a window's work
            # on every 30 s and write " you" in each. The language is the one asked for, else English
            # (what Whisper detects in silence), with no probability because none was measured.
            return iter(()), TranscriptionInfo(resolved.language or "en", None, duration_of(samples))
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
                raise TranscriptionError(f"this model is English-only; it cannot transcribe language {language!r}")
            if task != "transcribe":
                raise TranscriptionError("this model is English-only; it cannot translate")
            language = "en"
        check_model_language(language, self.languages)
        if options.beam_size < 1:
            raise TranscriptionError(f"beam_size must be at least 1, got {options.beam_size}")
        if options.temperature < 0:
            raise TranscriptionError(f"temperature must be >= 0, got {options.temperature}")
        if options.temperature_increment_on_fallback < 0:
            raise TranscriptionError("temperature_increment_on_fallback must be >= 0, "
                             f"got {options.temperature_increment_on_fallback}")
        for name in self.unsupported:
            if getattr(options, name):
                raise TranscriptionError(f"the {self.backend} backend does not support {name}; "
                                 f"use the ct2 backend (infer_ct2.py) for it")
        return ResolvedOptions(language=language, task=task, options=options)


# Whisper's sample_len: at most half of the decoder's 448 positions are new tokens per window.
# A window caught in a repetition loop stops there instead of running to 448 tokens (each extra
# token is a decoder step), and the temperature fallback then decodes it again.
MAX_NEW_TOKENS_PER_WINDOW = 224
# What is left of the 448 positions for a prompt: less the answer's 224 and 5 start tokens
# (previous-text marker, start of transcript, language, task, no-timestamps). A longer prompt keeps
# its end, as openai/whisper and OpenAI's API do (openai/whisper keeps 223 and shortens the answer).
MAX_PROMPT_TOKENS = 448 - MAX_NEW_TOKENS_PER_WINDOW - 5
# Only a prompt's end is tokenized: no Whisper token is longer than this many characters / 219.
MAX_PROMPT_CHARS = 64 * MAX_PROMPT_TOKENS


def fit_prompt(text: Optional[str], encode: Callable[[str], list[int]],
               decode: Callable[[list[int]], str]) -> Optional[str]:
    """The end of `text` that fits a window's prompt (MAX_PROMPT_TOKENS tokens), else `text`.

    Cut here because the engines refuse a prompt that does not fit with a message about their
    internals (faster-whisper's and transformers' max_new_tokens sentences).
    """
    if not text:
        return text
    text, keep = text.strip()[-MAX_PROMPT_CHARS:], MAX_PROMPT_TOKENS
    while True:
        ids = encode(" " + text)
        if len(ids) <= MAX_PROMPT_TOKENS:
            return text
        text = decode(ids[-keep:]).strip()
        keep -= 2   # the cut text, encoded again, can come out a token or two longer


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
