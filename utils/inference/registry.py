"""The backend registry: every engine behind the Transcriber interface, by name, in one table.

infer.py, infer_ct2.py, the server, the window, WhisperDesktop and the benchmarks read it for the
names `--backend` accepts, each backend's default model and the options it takes. Adding a backend
is one module in utils/inference/backends/ and one `Backend(...)` line here.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Mapping

from utils.core.errors import UsageError
from utils.core.models import ModelLoadError, looks_like_hub_id, model_format, wrong_kind_of_model

AUTO = "auto"


@dataclass(frozen=True)
class Backend:
    name: str
    module: str               # utils.inference.backends.<module>, imported only when used
    class_name: str
    default_model: str        # what tools/download_model.py and convert-ggml.py write by default
    options: tuple[str, ...]  # keyword options of the class, besides the model path
    summary: str

    def load_class(self) -> type:
        return getattr(importlib.import_module(self.module), self.class_name)


BACKENDS: dict[str, Backend] = {backend.name: backend for backend in (
    Backend("transformers", "utils.inference.backends.transformers", "TransformersTranscriber",
            "models/whisper-base",
            ("use_gpu", "batch_size", "attn_implementation", "use_compile", "assistant_model_path",
             "local_files_only", "compute_type", "cpu_threads", "use_int8"),
            "PyTorch through transformers' long-form generate (any transformers Whisper folder)"),
    Backend("ct2", "utils.inference.backends.ct2", "CT2Transcriber", "models/whisper-base-ct2",
            ("use_gpu", "compute_type", "batch_size", "num_workers", "cpu_threads", "local_files_only"),
            "CTranslate2 through faster-whisper (tools/hf_to_ct2.py makes the folder)"),
    Backend("ggml", "utils.inference.backends.ggml", "GGMLTranscriber", "models/ggml-model.bin",
            ("cpu_threads",),
            "whisper.cpp through pywhispercpp (convert-ggml.py makes the file)"),
)}
BACKEND_NAMES = tuple(BACKENDS)
BACKEND_CHOICES = (AUTO, *BACKEND_NAMES)


def resolve_backend(backend: str, model_path: str) -> str:
    """The backend's name; for "auto" the one that reads `model_path` (ModelLoadError when none does)."""
    if backend == AUTO:
        if looks_like_hub_id(model_path):
            return "transformers"   # a Hugging Face Hub id such as openai/whisper-base
        return model_format(model_path)
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKEND_CHOICES)}")
    return backend


def refuse_wrong_kind(backend: str, model_path: str) -> None:
    """ModelLoadError naming what `model_path` holds when it is a model of another kind than `backend`
    reads (a CTranslate2 folder for --backend=transformers, an adapter, ...), before anything loads."""
    wrong = wrong_kind_of_model(model_path, backend)
    if wrong:
        raise ModelLoadError(wrong)


def backend_options(backend: str, flags: Mapping[str, Any], defaults: Mapping[str, Any] = {}) -> dict:
    """The options of `backend` taken from a script's `flags` (name -> value).

    A flag that is None, or equal to its entry in `defaults`, counts as not given. A given flag that
    this backend does not take is a UsageError naming the backends that do, so that no flag is
    silently ignored."""
    chosen = BACKENDS[backend]
    flags = _int8_as_compute_type(backend, dict(flags))
    options = {}
    for name, value in flags.items():
        if value is None or (name in defaults and value == defaults[name]):
            continue
        if name not in chosen.options:
            takers = [b.name for b in BACKENDS.values() if name in b.options]
            raise UsageError(f"--{name} applies only to --backend={' or '.join(takers)}, not {backend}")
        options[name] = value
    return options


def _int8_as_compute_type(backend: str, flags: dict) -> dict:
    """The original project's --use_int8 on a backend that has no use_int8 option but a compute type
    (CTranslate2): int8 computation, int8_float16 on a GPU."""
    taken = BACKENDS[backend].options
    if not flags.get("use_int8") or "use_int8" in taken:
        return flags
    if "compute_type" not in taken:
        takers = [b.name for b in BACKENDS.values() if {"use_int8", "compute_type"} & set(b.options)]
        raise UsageError(f"--use_int8 applies only to --backend={' or '.join(takers)}, not {backend}")
    int8 = "int8_float16" if flags.get("use_gpu") else "int8"
    if flags.get("compute_type") not in (None, "default", int8):
        raise UsageError(f"--use_int8 and --compute_type={flags['compute_type']} contradict each other; "
                         f"give one of them")
    return {**flags, "use_int8": None, "compute_type": int8}


def refuse_unsupported(backend: str, option: str, value) -> None:
    """A transcription option (vad_filter, word_timestamps) given at start for a backend that cannot
    honour it: refused now, rather than at the first recognition."""
    if value and option in BACKENDS[backend].load_class().unsupported:
        takers = [name for name in BACKEND_NAMES if option not in BACKENDS[name].load_class().unsupported]
        raise UsageError(f"--{option} applies only to --backend={' or '.join(takers)}, not {backend}")


def default_model(backend: str) -> str:
    return BACKENDS[backend].default_model


def load_transcriber(backend: str, model_path: str, **options):
    """Open `model_path` with the named backend ("auto": by what the path holds)."""
    name = resolve_backend(backend, model_path)
    chosen = BACKENDS[name]
    unknown = sorted(set(options) - set(chosen.options))
    if unknown:
        raise UsageError(f"the {name} backend takes no option {', '.join(unknown)}; "
                         f"it takes {', '.join(chosen.options)}")
    return chosen.load_class()(model_path, **options)
