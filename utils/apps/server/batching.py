"""Cross-request batching: concurrent requests' short clips share one encoder and one decoder call.

Each of N concurrent 4 s uploads decoded alone costs one 30 s encoder window and its own decoder loop.
Here a dispatcher thread gathers what arrives within `max_wait_s` (up to `max_batch` clips), groups the
clips that ask for the same decoding (language, task, beam size, timestamps), and runs each group as one
batch through CTranslate2: one `encode` over the stacked spectrograms, one `generate` with a prompt per
clip. Every waiting request gets back the segments of its own row.

With `window_s` > 0 the encoder window is cut to the longest clip of the batch plus `window_s` seconds
of padding (whole seconds, at most 30) instead of Whisper's 30 s: the encoder's cost is about
proportional to its input, and a 4 s clip padded to 30 s spends most of it on silence. Whisper was
trained on 30 s windows, so this trades a little accuracy for speed (tools/benchmark_server.py measures
both).

Only clips that the plain path would decode as one window are batched: at most 30 s, language given (or
an English-only model), no word timestamps, no VAD, no prompt, no temperature other than 0. A clip whose
batched text loops (compresses better than faster-whisper's threshold) or that is unlikely (average
log-probability below -1) is decoded again alone through the transcriber, with the temperature fallback
as configured. Everything else goes the plain way.
"""
from __future__ import annotations

import math
import queue
import threading
import time
import zlib
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from utils.core.audio import CHUNK_LENGTH, duration_of
from utils.inference.transcriber import (
    MAX_NEW_TOKENS_PER_WINDOW,
    ResolvedOptions,
    Segment,
    TranscribeOptions,
    TranscriptionInfo,
)

FRAMES_PER_SECOND = 100           # log-mel frames (hop 160 at 16 kHz)
TIME_PRECISION = 0.02             # one timestamp token
LOOP_COMPRESSION_RATIO = 2.4      # faster-whisper's threshold for a repetition loop
LOW_LOG_PROB = -1.0               # faster-whisper's log_prob_threshold


@dataclass
class _Job:
    audio: np.ndarray
    resolved: ResolvedOptions
    future: Future = field(default_factory=Future)

    @property
    def key(self) -> tuple:
        opts = self.resolved.options
        return self.resolved.language, self.resolved.task, opts.beam_size, opts.timestamps


class RequestBatcher:
    """Batches the short clips of concurrent requests for one CTranslate2 transcriber (see the module)."""

    def __init__(self, transcriber, max_batch: int = 8, max_wait_s: float = 0.05, window_s: float = 0.0):
        if transcriber.backend != "ct2":
            raise ValueError("cross-request batching needs the ct2 backend")
        if max_batch < 2:
            raise ValueError(f"max_batch must be at least 2, got {max_batch}")
        self.transcriber, self.max_batch, self.max_wait_s, self.window_s = transcriber, max_batch, max_wait_s, window_s
        self.model = transcriber.model          # faster-whisper's WhisperModel
        self._queue: queue.Queue = queue.Queue()
        self.batches: list[int] = []            # sizes of the batches run so far (for /health and tests)
        self.redecoded = 0
        self._thread = threading.Thread(target=self._dispatch, name="request-batcher", daemon=True)
        self._thread.start()

    def accepts(self, audio: np.ndarray, options: TranscribeOptions) -> bool:
        language_known = options.language is not None or not self.transcriber.multilingual
        return (language_known and duration_of(audio) <= CHUNK_LENGTH and not options.word_timestamps
                and not options.vad_filter and not options.initial_prompt and options.temperature == 0)

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions
                   ) -> tuple[list[Segment], TranscriptionInfo]:
        """The clip's segments and info, decoded in a batch with whatever other clips are waiting.
        Blocks the calling (worker) thread until its batch is done; a clip the batch decoded badly is
        decoded again alone here, in the caller's thread, so that it holds up no other batch."""
        job = _Job(audio, self.transcriber.resolve_options(options))
        self._queue.put(job)
        result = job.future.result()
        if result is None:
            segments, info = self.transcriber.transcribe(audio, options)
            return list(segments), info
        return result

    # ------------------------------------------------------------------ dispatcher thread

    def _dispatch(self) -> None:
        while True:
            jobs = [self._queue.get()]
            deadline = time.monotonic() + self.max_wait_s
            while len(jobs) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    jobs.append(self._queue.get(timeout=left))
                except queue.Empty:
                    break
            groups: dict = {}
            for job in jobs:
                groups.setdefault(job.key, []).append(job)
            for group in groups.values():
                try:
                    results = self._decode(group)
                except BaseException as exc:   # every waiting request hears of it
                    for job in group:
                        job.future.set_exception(exc)
                    continue
                for job, result in zip(group, results):
                    job.future.set_result(result)

    def _window_frames(self, longest_s: float) -> int:
        if self.window_s <= 0:
            return CHUNK_LENGTH * FRAMES_PER_SECOND
        return min(CHUNK_LENGTH, math.ceil(longest_s + self.window_s)) * FRAMES_PER_SECOND

    def _decode(self, jobs: list[_Job]) -> list[Optional[tuple[list[Segment], TranscriptionInfo]]]:
        import ctranslate2
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer

        self.batches.append(len(jobs))
        first = jobs[0].resolved
        tokenizer = Tokenizer(self.model.hf_tokenizer, self.transcriber.multilingual, task=first.task,
                              language=first.language)
        frames = self._window_frames(max(duration_of(job.audio) for job in jobs))
        features = np.stack([pad_or_trim(self.model.feature_extractor(job.audio)[:, :-1], frames) for job in jobs])
        encoded = self.model.model.encode(ctranslate2.StorageView.from_array(features), to_cpu=False)
        prompt = list(tokenizer.sot_sequence) + ([] if first.options.timestamps else [tokenizer.no_timestamps])
        outputs = self.model.model.generate(
            encoded, [prompt] * len(jobs), beam_size=first.options.beam_size, max_length=len(prompt) +
            MAX_NEW_TOKENS_PER_WINDOW, return_scores=True, suppress_blank=True, suppress_tokens=[-1],
            max_initial_timestamp_index=50)
        results = []
        for job, output in zip(jobs, outputs):
            tokens = output.sequences_ids[0]
            text = tokenizer.decode([t for t in tokens if t < tokenizer.eot])
            # CTranslate2's score is the sum of log-probabilities over (length ** length_penalty = length).
            if loops(text) or (output.scores[0] < LOW_LOG_PROB and text.strip()):
                self.redecoded += 1
                results.append(None)
                continue
            duration = duration_of(job.audio)
            info = TranscriptionInfo(language=first.language, language_probability=None, duration=duration)
            results.append((split_segments(tokens, tokenizer, duration, output.scores[0]), info))
        return results


def loops(text: str) -> bool:
    data = text.encode("utf-8")
    return len(data) > 0 and len(data) / len(zlib.compress(data)) > LOOP_COMPRESSION_RATIO


def split_segments(tokens: list[int], tokenizer, duration: float, avg_logprob: float) -> list[Segment]:
    """Whisper's <|t0|> text <|t1|> pairs as segments (times within the clip); text after the last
    timestamp ends at the clip's end; no timestamp at all is one segment over the clip."""
    begin = tokenizer.timestamp_begin
    segments, words, start = [], [], 0.0

    def close(end: float) -> None:
        text = tokenizer.decode(words).strip()
        if text:
            low = min(max(start, segments[-1].end if segments else 0.0), duration)
            segments.append(Segment(start=round(low, 3), end=round(min(max(end, low), duration), 3), text=text,
                                    tokens=list(words), temperature=0.0, avg_logprob=float(avg_logprob)))

    for token in tokens:
        if token >= begin:
            moment = (token - begin) * TIME_PRECISION
            if words:
                close(moment)
                words = []
            start = moment
        elif token < tokenizer.eot:
            words.append(token)
    if words:
        close(duration)
    return segments
