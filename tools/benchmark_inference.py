"""Speed of every backend on the same file and model: seconds and real-time factor.

    python tools/benchmark_inference.py --audio_path=dataset/test_long.wav --language=en

The transformers folder is the reference; the CTranslate2 folder and GGML file default to ones
converted from it on the fly (tools/hf_to_ct2.py, convert-ggml.py) unless given.
"""
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from transformers import HfArgumentParser  # noqa: E402

from utils.audio import load_audio  # noqa: E402
from utils.languages import to_language_code  # noqa: E402
from utils.transcriber import (BACKENDS, TranscribeOptions, duration_of, exit_on_user_error,  # noqa: E402
                               load_transcriber, print_config)
from utils.writers import transcript_text  # noqa: E402


@dataclass
class BenchmarkArguments:
    audio_path: str = field(default="dataset/test_long.wav", metadata={"help": "audio file to transcribe"})
    model_path: str = field(default="models/whisper-base", metadata={"help": "transformers model folder"})
    ct2_model_path: Optional[str] = field(default=None, metadata={
        "help": "CTranslate2 folder of the same model; unset = convert model_path into a temp folder"})
    ggml_model_path: Optional[str] = field(default=None, metadata={
        "help": "GGML file of the same model; unset = export model_path into a temp file"})
    backends: str = field(default="transformers,ct2,ggml", metadata={"help": "comma-separated backends to run"})
    language: Optional[str] = field(default=None, metadata={"help": "language name or code; unset = detect"})
    beam_size: int = field(default=1, metadata={"help": "beam width for every backend"})
    batch_size: int = field(default=1, metadata={"help": "batch size for transformers and ct2"})
    compute_type: str = field(default="int8", metadata={"help": "CTranslate2 compute type"})
    threads: int = field(default=0, metadata={"help": "CPU threads for ct2 and ggml; 0 = their default"})
    use_gpu: bool = field(default=False, metadata={"help": "run transformers and ct2 on the first CUDA GPU"})


def main():
    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses()
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    unknown = [name for name in backends if name not in BACKENDS]
    if unknown or not backends:
        raise ValueError(f"--backends: unknown {', '.join(unknown) or '(none)'}; valid: {', '.join(BACKENDS)}")
    to_language_code(args.language)
    print_config("benchmark configuration", args)
    audio = load_audio(args.audio_path)
    duration = duration_of(audio)
    options = TranscribeOptions(language=args.language, beam_size=args.beam_size)
    workdir = tempfile.TemporaryDirectory(prefix="benchmark-")

    paths = {"transformers": args.model_path, "ct2": args.ct2_model_path, "ggml": args.ggml_model_path}
    if "ct2" in backends and not paths["ct2"]:
        from tools.hf_to_ct2 import convert

        paths["ct2"] = os.path.join(workdir.name, "ct2")
        convert(args.model_path, paths["ct2"], "float16", force=False)
    if "ggml" in backends and not paths["ggml"]:
        from utils.ggml_export import export_ggml

        paths["ggml"] = os.path.join(workdir.name, "model.bin")
        export_ggml(args.model_path, paths["ggml"], use_f16=True, progress=False)
    settings = {
        "transformers": dict(use_gpu=args.use_gpu, batch_size=args.batch_size),
        "ct2": dict(use_gpu=args.use_gpu, batch_size=args.batch_size, compute_type=args.compute_type,
                    cpu_threads=args.threads),
        "ggml": dict(cpu_threads=args.threads),
    }

    rows = []
    for backend in backends:
        began = time.perf_counter()
        transcriber = load_transcriber(backend, paths[backend], **settings[backend])
        loaded = time.perf_counter()
        segments, info = transcriber.transcribe(audio, options)
        segments = list(segments)
        seconds = time.perf_counter() - loaded
        rows.append((backend, loaded - began, seconds, seconds / duration, len(transcript_text(segments).split()),
                     info.language))
        print(f"{backend}: {seconds:.1f} s, {len(segments)} segments", flush=True)

    print(f"\n{os.path.basename(args.audio_path)}: {duration:.1f} s of audio, model {args.model_path}")
    print(f"{'backend':<14}{'load s':>8}{'transcribe s':>14}{'RTF':>8}{'words':>7}  language")
    for backend, load_s, seconds, rtf, words, language in rows:
        print(f"{backend:<14}{load_s:>8.1f}{seconds:>14.1f}{rtf:>8.3f}{words:>7}  {language}")
    fastest = min(rows, key=lambda row: row[2])
    print(f"fastest: {fastest[0]} at real-time factor {fastest[3]:.3f}")
    workdir.cleanup()


if __name__ == "__main__":
    exit_on_user_error(main)
