"""Serve a Whisper model over HTTP: the original `/recognition` API, OpenAI's audio API
(`/v1/audio/transcriptions`, `/v1/audio/translations`), a web page at `/` and OpenAPI docs at `/docs`.

    python infer_server.py --host=0.0.0.0 --port=5000 --model_path=models/whisper-base-ct2 --backend=ct2
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from utils.inference.backends.transformers import check_compute_type


def str2bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for every interface")
    add("--port", type=int, default=5000, help="TCP port")
    add("--model_path", default="models/whisper-base-ct2",
        help="model folder: a transformers Whisper for --backend=transformers, a CTranslate2 "
             "conversion for --backend=ct2")
    add("--backend", choices=("transformers", "ct2"), default="ct2",
        help="inference engine behind the service")
    add("--use_gpu", type=str2bool, default=False, help="run the model on CUDA")
    add("--compute_type", default=None,
        help="ct2: CTranslate2 compute type, e.g. int8, int8_float16, float16, float32; transformers: "
             "float32, bfloat16 (CPUs with AVX512-BF16/AMX, or GPUs) or float16 (GPU) "
             "(default: the backend's choice for the device)")
    add("--temperature_increment_on_fallback", type=float, default=0.2,
        help="Whisper's fallback: a window that loops or is unsure is decoded again at this much "
             "higher temperature (sampling); 0 = greedy only, so answers are reproducible")
    add("--use_int8", type=str2bool, default=False,
        help="ct2 only, the original project's flag: the same as --compute_type=int8")
    add("--local_files_only", type=str2bool, default=True,
        help="never contact the Hugging Face hub; False lets --model_path be a hub name")
    add("--beam_size", "--num_beams", dest="beam_size", type=positive_int, default=1,
        help="beam search width (1 = greedy); --num_beams is the same setting")
    add("--batch_size", type=positive_int, default=1,
        help="windows of one long upload decoded together (batched inference)")
    add("--vad_filter", type=str2bool, default=False,
        help="skip silence with a voice-activity detector (ct2 backend)")
    add("--language", default=None,
        help="language when a request names none, e.g. zh or chinese; default: detect")
    add("--num_workers", type=positive_int, default=1,
        help="recognitions that run at the same time")
    add("--max_queue", type=int, default=16,
        help="requests that may wait for a worker; beyond, the server answers 503 with Retry-After")
    add("--max_upload_mb", type=float, default=100.0, help="largest accepted upload, in MB (413 beyond)")
    add("--api_key", default=os.environ.get("WHISPER_SERVER_API_KEY"),
        help="when set, every endpoint but /health, / and /docs needs 'Authorization: Bearer <key>' "
             "(default: the WHISPER_SERVER_API_KEY environment variable, else no key)")
    add("--cpu_threads", type=int, default=0,
        help="CPU threads per recognition (0 = the backend's default); with --backend=transformers "
             "torch's threads, shared by all workers")
    add("--warmup", type=str2bool, default=True,
        help="run one second of silence through the model before opening the port, so the first "
             "request is as fast as the rest and a broken model fails at start")
    add("--log_level", default="info", choices=("critical", "error", "warning", "info", "debug"),
        help="uvicorn's log level")
    return parser


def backend_options(args) -> dict:
    options = {"use_gpu": args.use_gpu, "batch_size": args.batch_size,
               "local_files_only": args.local_files_only}
    if args.backend == "ct2":
        # faster-whisper runs this many transcriptions in parallel on one loaded model.
        options["num_workers"] = args.num_workers
        if args.compute_type:
            options["compute_type"] = args.compute_type
    elif args.compute_type:
        options["dtype"] = args.compute_type
    if args.cpu_threads:
        options["cpu_threads"] = args.cpu_threads
    return options


def check_args(parser: argparse.ArgumentParser, args) -> None:
    if args.use_int8:
        if args.compute_type not in (None, "int8"):
            parser.error(f"--use_int8 and --compute_type={args.compute_type} contradict each other")
        args.compute_type = "int8"
    if args.backend == "transformers" and args.compute_type is not None:
        try:
            check_compute_type(args.compute_type, args.use_gpu)
        except ValueError as exc:
            parser.error(str(exc))
    if args.vad_filter and args.backend != "ct2":
        parser.error("--vad_filter needs --backend=ct2 (faster-whisper's Silero VAD)")
    if args.temperature_increment_on_fallback < 0:
        parser.error("--temperature_increment_on_fallback must be 0 or more, "
                     f"got {args.temperature_increment_on_fallback}")
    if args.cpu_threads < 0:
        parser.error(f"--cpu_threads must be 0 or more, got {args.cpu_threads}")
    if args.max_queue < 0:
        parser.error(f"--max_queue must be 0 or more, got {args.max_queue}")
    if args.max_upload_mb <= 0:
        parser.error(f"--max_upload_mb must be above 0, got {args.max_upload_mb}")
    if not 0 < args.port < 65536:
        parser.error(f"--port must be 1-65535, got {args.port}")
    if args.local_files_only and not os.path.isdir(args.model_path):
        parser.error(f"--model_path {args.model_path}: model folder not found "
                     f"(fetch one with `make models`, or point at your fine-tuned model)")
    if args.language:
        from utils.core.languages import to_language_code

        try:
            args.language = to_language_code(args.language)
        except ValueError as exc:
            parser.error(f"--language: {str(exc).split(';')[0]}")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    shown = {**vars(args), "api_key": "(set)" if args.api_key else None}
    print("-" * 20, "configuration", "-" * 20)
    for name, value in shown.items():
        print(f"{name}: {value}")
    print("-" * 55, flush=True)

    import uvicorn

    from utils.apps.server import ServerSettings, create_app
    from utils.inference.registry import load_transcriber
    from utils.inference.transcriber import TranscribeOptions

    started = time.monotonic()
    try:
        transcriber = load_transcriber(args.backend, args.model_path, **backend_options(args))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: cannot load the model: {exc}", file=sys.stderr)
        return 2
    # One short silent recognition makes the first real request as fast as the rest and proves
    # the model works before the port opens.
    try:
        if args.warmup:
            segments, _ = transcriber.transcribe(np.zeros(16000, dtype=np.float32),
                                                 TranscribeOptions(language=args.language or "en"))
            list(segments)
    except ValueError as exc:
        print(f"error: --language={args.language}: {exc}", file=sys.stderr)
        return 2
    print(f"model loaded{' and warmed up' if args.warmup else ''} in {time.monotonic() - started:.1f} s", flush=True)

    settings = ServerSettings(
        backend=args.backend, model_name=os.path.basename(os.path.normpath(args.model_path)),
        num_workers=args.num_workers, max_queue=args.max_queue, max_upload_mb=args.max_upload_mb,
        api_key=args.api_key, language=args.language, beam_size=args.beam_size,
        vad_filter=args.vad_filter,
        temperature_increment_on_fallback=args.temperature_increment_on_fallback)
    app = create_app(transcriber, settings)
    print(f"serving on http://{args.host}:{args.port}/  (API docs: /docs)", flush=True)
    # One uvicorn process: the worker pool inside the app gives concurrency without loading
    # the model once per process.
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
