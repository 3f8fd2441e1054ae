"""CTranslate2 backend: faster-whisper's WhisperModel (BatchedInferencePipeline for batch_size > 1)."""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
import threading
from typing import Iterator

import numpy as np

from utils.core.audio import CHUNK_LENGTH, SAMPLE_RATE, duration_of, split_at_quiet_points
from utils.core.languages import LANGUAGES
from utils.core.models import ModelLoadError, check_model_dir
from utils.inference.transcriber import (
    MAX_NEW_TOKENS_PER_WINDOW,
    ResolvedOptions,
    Segment,
    Transcriber,
    TranscriptionError,
    TranscriptionInfo,
    Word,
    fit_prompt,
    temperature_schedule,
)

# faster-whisper's compression-ratio threshold: text that gzips better than this is a repetition loop.
LOOP_COMPRESSION_RATIO = 2.4

# short_window: the audio's frames and this much after them (10 ms frames). With 1 s of padding
# whisper-base's live WER on 60 s of English doubled (25.6 % against 11.25 % with full windows);
# with 2-10 s it stayed within a word or two of the full window's (docs/streaming.md). Honoured by
# sequential decoding (batch_size 1), the one live transcription uses.
SHORT_WINDOW_PAD_FRAMES = 300
# and never under 10 s: on a 4 s clip tiny.en read "Not rain till the airport" for "The train to the
# airport" with 5-7 s windows, the full window's words from 10 s on.
SHORT_WINDOW_MIN_FRAMES = 1000
FRAMES_PER_WINDOW = 3000


def short_window_frames(samples: int) -> int:
    """Encoder frames for `samples` of audio under short_window: whole seconds, at most a window."""
    frames = max(SHORT_WINDOW_MIN_FRAMES, samples // (SAMPLE_RATE // 100) + SHORT_WINDOW_PAD_FRAMES)
    return min(FRAMES_PER_WINDOW, math.ceil(frames / 100) * 100)


def windowed_model_class():
    """faster-whisper's WhisperModel whose encoder may be given fewer than a window's 3000 frames.

    faster-whisper always pads a window to 30 s (its pad_or_trim), and has no option for less;
    CTranslate2's encoder takes any length up to that. The limit is per thread, so one model serves
    short-window streams and full-window requests at once."""
    from faster_whisper import WhisperModel

    class WindowedWhisperModel(WhisperModel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.frame_limit = threading.local()

        def encode(self, features):
            limit = getattr(self.frame_limit, "frames", None)
            if limit:
                features = features[..., :limit]
            return super().encode(features)

    return WindowedWhisperModel


COMPUTE_TYPES = ("default", "auto", "int8", "int8_float32", "int8_float16", "int8_bfloat16",
                 "int16", "float16", "bfloat16", "float32")


class CT2Transcriber(Transcriber):
    backend = "ct2"

    def __init__(self, model_path: str, use_gpu: bool = False, compute_type: str = "default",
                 batch_size: int = 1, num_workers: int = 1, cpu_threads: int = 0,
                 local_files_only: bool = True):
        import ctranslate2
        from faster_whisper import BatchedInferencePipeline

        if compute_type not in COMPUTE_TYPES:
            raise TranscriptionError(f"unknown compute_type {compute_type!r}; valid: {', '.join(COMPUTE_TYPES)}")
        if batch_size < 1 or num_workers < 1 or cpu_threads < 0:
            raise TranscriptionError("batch_size and num_workers must be at least 1, cpu_threads at least 0")
        if use_gpu and ctranslate2.get_cuda_device_count() == 0:
            raise TranscriptionError("use_gpu was requested but CTranslate2 sees no CUDA GPU; run without --use_gpu")
        if os.path.isdir(model_path) and not os.path.exists(os.path.join(model_path, "model.bin")) \
                and os.path.exists(os.path.join(model_path, "config.json")):
            raise ModelLoadError(f"{model_path}: this is a transformers model, not a CTranslate2 one; "
                                    f"convert it with tools/hf_to_ct2.py first")
        # faster-whisper reads the mel count from preprocessor_config.json; without it a
        # 128-mel model (large-v3) would silently get 80-mel features.
        check_model_dir(model_path, ("model.bin", "tokenizer.json"), must_exist=local_files_only)
        if cpu_threads == 0 and not use_gpu:
            # CTranslate2's own default is 4 threads on any machine: oversubscribed on 2 cores (the
            # benchmark's faster-whisper "as shipped" row), idle cores on 16. The cores, shared out.
            cpu_threads = max(1, (os.cpu_count() or 1) // num_workers)
        try:
            self.model = windowed_model_class()(model_path, device="cuda" if use_gpu else "cpu",
                                      compute_type=compute_type, cpu_threads=cpu_threads,
                                      num_workers=num_workers, local_files_only=local_files_only)
        except (OSError, RuntimeError, ValueError) as exc:
            raise ModelLoadError(f"{model_path}: cannot load a CTranslate2 Whisper model ({exc})") from None
        self.batch_size = batch_size
        self.pipeline = BatchedInferencePipeline(self.model) if batch_size > 1 else None
        self.multilingual = bool(self.model.model.is_multilingual)
        # faster-whisper passes a language its model has no token for straight on, and CTranslate2
        # then decodes without one ("The The The ..."); the model's own count decides instead.
        self.languages = tuple(LANGUAGES)[:self.model.model.num_languages] if self.multilingual else ("en",)
        n_mels, features = self.model.model.n_mels, self.model.feature_extractor.mel_filters.shape[0]
        if n_mels != features:
            raise ModelLoadError(f"{model_path}: the model takes {n_mels} mel bins but its "
                                 f"preprocessor_config.json makes {features}; copy the preprocessor_config.json "
                                 f"of the model it was converted from")

    def _transcribe(self, audio: np.ndarray, resolved: ResolvedOptions
                    ) -> tuple[Iterator[Segment], TranscriptionInfo]:
        opts = resolved.options
        # faster-whisper's own loop defence (compression ratio 2.4, log-prob -1, no-speech 0.6 are
        # its defaults) needs the list of fallback temperatures: a single float disables it.
        # The batched pipeline decodes at the first temperature only; windows that loop are decoded
        # again one by one (_redecode_loops).
        kwargs = dict(language=resolved.language, task=resolved.task, beam_size=opts.beam_size,
                      temperature=list(temperature_schedule(opts)),
                      max_new_tokens=MAX_NEW_TOKENS_PER_WINDOW, initial_prompt=fit_prompt(
                          opts.initial_prompt, lambda text: self.model.hf_tokenizer.encode(
                              text, add_special_tokens=False).ids, self.model.hf_tokenizer.decode),
                      word_timestamps=opts.word_timestamps, vad_filter=opts.vad_filter,
                      without_timestamps=not opts.timestamps)
        if self.pipeline is None:
            # Same choice as the transformers backend: no conditioning on the previous window,
            # which keeps a mistake in one window from looping into the next.
            frames = short_window_frames(len(audio)) if opts.short_window else FRAMES_PER_WINDOW
            short = frames < FRAMES_PER_WINDOW
            self.model.frame_limit.frames = frames if short else None
            try:
                segments, fw_info = self.model.transcribe(audio, condition_on_previous_text=False, **kwargs)
                if short:
                    segments = list(segments)   # decoded now, while this thread's limit holds
            finally:
                self.model.frame_limit.frames = None
        elif opts.vad_filter:
            # Without max_new_tokens: faster-whisper's batched pipeline then drops the last sentence of
            # many chunks (13.1 % instead of 10.5 % WER on dataset/en_long.flac, docs/performance.md).
            segments, fw_info = self.pipeline.transcribe(audio, batch_size=self.batch_size, **dict(
                kwargs, max_new_tokens=None))
        else:
            # The batched pipeline needs window bounds (in seconds); without VAD cut at quiet points.
            windows = split_at_quiet_points(audio, CHUNK_LENGTH)
            segments, fw_info = self.pipeline.transcribe(
                audio, batch_size=self.batch_size, clip_timestamps=[
                    {"start": s / SAMPLE_RATE, "end": e / SAMPLE_RATE} for s, e in windows], **kwargs)
            if len(kwargs["temperature"]) > 1:
                segments = self._redecode_loops(segments, audio, windows, kwargs)
        info = TranscriptionInfo(language=fw_info.language,
                                 language_probability=(None if resolved.language
                                                       else float(fw_info.language_probability)),
                                 duration=duration_of(audio))
        return self._convert(segments, info.duration), info

    def _redecode_loops(self, segments, audio: np.ndarray, windows: list[tuple[int, int]],
                        kwargs: dict) -> Iterator:
        """Batched windows that fell into a repetition loop, decoded again one by one with fallback.

        The batched pipeline decodes every window once, at the first temperature, so a window that
        loops ("000,000,000,...") stays in the transcript. A window whose text compresses better than
        faster-whisper's own threshold (2.4, as its sequential decoding checks) goes through the
        sequential decoder, which retries at the higher temperatures. Only the looping windows pay;
        the others keep their batched result. (faster-whisper has no such pass; without VAD our
        windows' bounds are known, with VAD the pipeline's own chunks are not, so VAD runs skip it.)
        """
        from faster_whisper.transcribe import get_compression_ratio

        # The first temperature already looped; a retry stops at the first one that does not loop.
        # log_prob_threshold is off (on hard audio nearly every window is below -1, so every retry
        # would run to 1.0), and one sample per temperature: of best_of=5 samples the most probable
        # is picked, often the loop again, and five samples cost more than twice the time for no gain
        # (`python tools/microbenchmarks.py best-of`, docs/performance.md).
        retry = dict(kwargs, temperature=kwargs["temperature"][1:], best_of=1, log_prob_threshold=None,
                     compression_ratio_threshold=LOOP_COMPRESSION_RATIO)
        starts = [s / SAMPLE_RATE for s, _ in windows]
        for seek, window_segments in itertools.groupby(segments, key=lambda seg: seg.seek):
            window_segments = list(window_segments)
            text = "".join(seg.text for seg in window_segments)
            if get_compression_ratio(text) <= LOOP_COMPRESSION_RATIO:
                yield from window_segments
                continue
            # seek is the window's start in 10 ms frames
            index = min(range(len(windows)), key=lambda i: abs(starts[i] - seek / 100))
            start, end = windows[index]
            offset = start / SAMPLE_RATE
            again, _ = self.model.transcribe(audio[start:end], condition_on_previous_text=False, **retry)
            for seg in again:
                words = None if seg.words is None else [
                    dataclasses.replace(w, start=w.start + offset, end=w.end + offset) for w in seg.words]
                yield dataclasses.replace(seg, seek=seek, start=seg.start + offset, end=seg.end + offset,
                                          words=words)

    @staticmethod
    def _convert(segments, duration: float) -> Iterator[Segment]:
        # faster-whisper's last segment may end at the window's end (4.0 s for a 3.82 s clip); times
        # are kept within the audio, as the other backends keep them.
        last_end = 0.0
        for seg in segments:
            text = seg.text.strip()
            if not text:
                continue
            start = min(max(float(seg.start), last_end), duration)
            end = min(max(float(seg.end), start), duration)
            last_end = end
            words = None
            if seg.words is not None:
                words = [Word(start=round(float(w.start), 3), end=round(float(w.end), 3), word=w.word,
                              probability=round(float(w.probability), 4)) for w in seg.words]
            # What faster-whisper's decoder reports for the segment (OpenAI's verbose_json fields).
            yield Segment(start=round(start, 3), end=round(end, 3), text=text, words=words, seek=int(seg.seek),
                          tokens=[int(t) for t in seg.tokens], temperature=seg.temperature,
                          avg_logprob=float(seg.avg_logprob), compression_ratio=float(seg.compression_ratio),
                          no_speech_prob=float(seg.no_speech_prob))

    def decoded_text(self, tokens: list[int]) -> str:
        """Whisper's text for a segment's tokens as the decoder wrote it (with its leading space)."""
        tokenizer = self.model.hf_tokenizer
        # Ids from <|endoftext|> on are special and timestamp tokens, as faster-whisper's own decode skips them.
        end_of_text = tokenizer.token_to_id("<|endoftext|>")
        return tokenizer.decode([t for t in tokens if t < end_of_text])
