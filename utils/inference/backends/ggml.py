"""whisper.cpp backend: a GGML file (convert-ggml.py) run by pywhispercpp's bundled whisper.cpp."""
from __future__ import annotations

import atexit
import os
import queue
import threading
from typing import Iterator

import numpy as np

from utils.core.audio import duration_of
from utils.core.languages import is_multilingual
from utils.core.models import ModelLoadError, read_ggml_header
from utils.inference.transcriber import ResolvedOptions, Segment, Transcriber, TranscriptionError, TranscriptionInfo

BLANK_AUDIO = "[BLANK_AUDIO]"  # whisper.cpp's text for a window without speech; no transcript text


class GGMLTranscriber(Transcriber):
    backend = "ggml"
    unsupported = ("word_timestamps", "vad_filter")

    def __init__(self, model_path: str, cpu_threads: int = 0):
        if os.path.isdir(model_path):
            raise ModelLoadError(f"{model_path}: is a folder; the ggml backend reads one GGML model file "
                                 f"(make one with convert-ggml.py)")
        if not os.path.isfile(model_path):
            raise ModelLoadError(f"{model_path}: GGML model file not found (make one with convert-ggml.py)")
        if cpu_threads < 0:
            raise TranscriptionError(f"cpu_threads must be >= 0, got {cpu_threads}")
        self.header = read_ggml_header(model_path)
        self.multilingual = is_multilingual(self.header["n_vocab"])
        self.model_path = model_path
        self.n_threads = cpu_threads or min(4, os.cpu_count() or 1)
        self._models = {}
        # One whisper.cpp context decodes one file at a time.
        self._lock = threading.Lock()
        # pywhispercpp frees its context in __del__, which fails once the interpreter is shutting
        # down; freeing it ourselves at exit avoids a spurious "Exception ignored" message.
        atexit.register(self.close)

    def _model(self, beam_size: int):
        """whisper.cpp fixes greedy vs beam search when a context is made, so keep one of each."""
        from pywhispercpp.model import Model

        strategy = 1 if beam_size > 1 else 0
        if strategy not in self._models:
            self._models[strategy] = Model(self.model_path, params_sampling_strategy=strategy,
                                           n_threads=self.n_threads, print_progress=False,
                                           print_realtime=False, redirect_whispercpp_logs_to=None)
            if self._models[strategy]._ctx is None:
                raise ModelLoadError(f"{self.model_path}: whisper.cpp could not load this model file")
        return self._models[strategy]

    def preload(self, beam_size: int = 1) -> None:
        """Load the whisper.cpp context now rather than on the first transcription."""
        with self._lock:
            self._model(beam_size)

    def close(self) -> None:
        import _pywhispercpp as pw

        for model in self._models.values():
            if model._ctx is not None:
                pw.whisper_free(model._ctx)
                model._ctx = None
        self._models.clear()

    def _transcribe(self, audio: np.ndarray, resolved: ResolvedOptions
                    ) -> tuple[Iterator[Segment], TranscriptionInfo]:
        opts = resolved.options
        language, probability = resolved.language, None
        with self._lock:
            model = self._model(opts.beam_size)
            if language is None:
                (language, probability), _ = model.auto_detect_language(audio)
                probability = float(probability)
        params = dict(language=language, translate=resolved.task == "translate",
                      no_timestamps=not opts.timestamps, initial_prompt=opts.initial_prompt or "",
                      temperature=opts.temperature, no_context=True)
        if opts.beam_size > 1:
            params["beam_search"] = {"beam_size": opts.beam_size, "patience": -1.0}
        info = TranscriptionInfo(language=language, language_probability=probability,
                                 duration=duration_of(audio))
        return self._stream(model, audio, params, info.duration), info

    def _stream(self, model, audio: np.ndarray, params: dict, duration: float) -> Iterator[Segment]:
        """Run whisper.cpp in a thread and hand each segment over as it is decoded."""
        handoff: queue.Queue = queue.Queue()
        done = object()
        failure = []

        def work():
            try:
                with self._lock:
                    model.transcribe(audio, new_segment_callback=handoff.put, **params)
            except Exception as exc:  # re-raised in the consumer's thread below
                failure.append(exc)
            finally:
                handoff.put(done)

        threading.Thread(target=work, daemon=True).start()
        last_end = 0.0
        while (item := handoff.get()) is not done:
            text = item.text.strip()
            if not text or text == BLANK_AUDIO:
                continue
            # whisper.cpp counts time in 10 ms ticks.
            start = min(max(item.t0 / 100.0, last_end), duration)
            end = min(max(item.t1 / 100.0, start), duration)
            last_end = end
            yield Segment(start=round(start, 3), end=round(end, 3), text=text)
        if failure:
            raise failure[0]
