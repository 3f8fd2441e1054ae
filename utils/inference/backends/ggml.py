"""whisper.cpp backend: a GGML file (convert-ggml.py) run by pywhispercpp's bundled whisper.cpp."""
from __future__ import annotations

import atexit
import os
import queue
import subprocess
import sys
import threading
from typing import Iterator

import numpy as np

from utils.core.audio import duration_of
from utils.core.languages import is_multilingual, model_languages
from utils.core.models import ModelLoadError, check_ggml_file
from utils.inference.transcriber import ResolvedOptions, Segment, Transcriber, TranscriptionError, TranscriptionInfo

BLANK_AUDIO = "[BLANK_AUDIO]"  # whisper.cpp's text for a window without speech; no transcript text

# A child process loads the file once in whisper.cpp and prints this; pywhispercpp hands back a
# context-less model for a file whisper.cpp refused, and the first call on it crashes the process
# (SIGSEGV), so the real load is tried where a crash costs nothing.
_LOAD_CHECK = ("import sys, _pywhispercpp as pw\nfrom pywhispercpp.model import Model\n"
               "model = Model(sys.argv[1], redirect_whispercpp_logs_to=None)\n"
               "print('loaded', pw.whisper_model_n_vocab(model._ctx))")
_LOADABLE: dict[tuple, bool] = {}   # (path, size, mtime) -> whether whisper.cpp loaded it


def check_whisper_cpp_loads(model_path: str, n_vocab: int, timeout: float = 300) -> None:
    """ModelLoadError unless whisper.cpp itself loads `model_path` (in a child process, once per
    version of the file: the answer is cached by path, size and modification time)."""
    stat = os.stat(model_path)
    key = (os.path.realpath(model_path), stat.st_size, stat.st_mtime_ns)
    if key not in _LOADABLE:
        try:
            result = subprocess.run([sys.executable, "-c", _LOAD_CHECK, model_path], capture_output=True,
                                    text=True, timeout=timeout)
            _LOADABLE[key] = result.returncode == 0 and f"loaded {n_vocab}" in result.stdout
        except subprocess.TimeoutExpired:
            _LOADABLE[key] = False
    if not _LOADABLE[key]:
        raise ModelLoadError(f"{model_path}: whisper.cpp cannot load this GGML file although its header and "
                             f"tensor table look right; export it again with convert-ggml.py")


class GGMLTranscriber(Transcriber):
    backend = "ggml"
    unsupported = ("word_timestamps", "vad_filter", "short_window")

    def __init__(self, model_path: str, cpu_threads: int = 0):
        if os.path.isdir(model_path):
            raise ModelLoadError(f"{model_path}: is a folder; the ggml backend reads one GGML model file "
                                 f"(make one with convert-ggml.py)")
        if not os.path.isfile(model_path):
            raise ModelLoadError(f"{model_path}: GGML model file not found (make one with convert-ggml.py)")
        if cpu_threads < 0:
            raise TranscriptionError(f"cpu_threads must be >= 0, got {cpu_threads}")
        self.header = check_ggml_file(model_path)
        check_whisper_cpp_loads(model_path, self.header["n_vocab"])
        self.multilingual = is_multilingual(self.header["n_vocab"])
        self.languages = model_languages(self.header["n_vocab"])
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
                      temperature=opts.temperature, temperature_inc=opts.temperature_increment_on_fallback,
                      no_context=True)
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
