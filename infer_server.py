"""Serve a Whisper model over HTTP: the original `/recognition` API, OpenAI's audio API
(`/v1/audio/transcriptions`, `/v1/audio/translations`), a web page at `/` and OpenAPI docs at `/docs`.

    python infer_server.py --host=0.0.0.0 --port=5000 --model_path=models/whisper-base-ct2
    python infer_server.py --port=0 --model_path=models/whisper-base    # any free port, printed at start
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Literal, Optional

from utils.core.cli import guarded, parse_args, print_config
from utils.core.errors import UsageError, UserError
from utils.core.languages import to_language_code
from utils.core.models import model_name
from utils.inference.registry import (
    BACKEND_CHOICES,
    BACKENDS,
    backend_options,
    default_model,
    load_transcriber,
    refuse_unsupported,
    resolve_backend,
)
from utils.inference.run import attention_choice

API_KEY_VARIABLE = "WHISPER_SERVER_API_KEY"
# The flags handed to the engine (when the chosen backend takes them), rather than to the app.
ENGINE_FLAGS = ("use_gpu", "compute_type", "use_int8", "batch_size", "cpu_threads", "local_files_only",
                "use_compile", "assistant_model_path", "attn_implementation")


@dataclass
class ServerArguments:
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on; 0.0.0.0 for every interface"})
    port: int = field(default=5000, metadata={
        "help": "TCP port; 0 = any free port, named by the 'serving on http://...' line at start"})
    model_path: str = field(default=default_model("ct2"), metadata={
        "help": "a CTranslate2 folder (model.bin), a transformers folder (config.json and weights) or a "
                "GGML file; with --local_files_only=False also a hub name"})
    backend: str = field(default="auto", metadata={
        "help": "inference engine; auto = the one that reads --model_path", "choices": BACKEND_CHOICES})
    use_gpu: bool = field(default=False, metadata={"help": "run the model on CUDA"})
    compute_type: Optional[str] = field(default=None, metadata={
        "help": "ct2: CTranslate2 compute type, e.g. int8, int8_float16, float16, float32; transformers: "
                "float32, bfloat16 (CPUs with AVX512-BF16/AMX, or GPUs) or float16 (GPU); unset = the "
                "backend's choice for the device"})
    temperature_increment_on_fallback: float = field(default=0.0, metadata={
        "help": "Whisper's fallback: a window that loops or is unsure is decoded again at this much higher "
                "temperature (sampling), e.g. 0.2 as infer.py does; 0 (the default) = greedy only, so the "
                "same upload always gets the same answer"})
    use_int8: bool = field(default=False, metadata={
        "help": "the original project's flag: ct2: --compute_type=int8 (int8_float16 on a GPU); "
                "transformers: dynamic int8 quantization on the CPU"})
    local_files_only: bool = field(default=True, metadata={
        "help": "never contact the Hugging Face hub; False lets --model_path be a hub name"})
    beam_size: int = field(default=1, metadata={
        "help": "beam search width (1 = greedy); --num_beams is the same setting", "aliases": ["--num_beams"]})
    batch_size: int = field(default=1, metadata={"help": "windows of one long upload decoded together"})
    use_compile: bool = field(default=False, metadata={
        "help": "torch.compile the model's forward pass (--backend=transformers)"})
    assistant_model_path: Optional[str] = field(default=None, metadata={
        "help": "small Whisper sharing the tokenizer, for speculative decoding (--backend=transformers, "
                "batch_size 1)"})
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = field(default="sdpa", metadata={
        "help": "attention kernel of --backend=transformers; flash_attention_2 needs a GPU and flash-attn"})
    use_flash_attention_2: bool = field(default=False, metadata={
        "help": "the original project's flag: the same as --attn_implementation=flash_attention_2"})
    use_bettertransformer: bool = field(default=False, metadata={
        "help": "the original project's flag, refused: optimum's BetterTransformer is obsolete; the default "
                "sdpa attention gives its speed-up"})
    vad_filter: bool = field(default=False, metadata={
        "help": "skip silence with a voice-activity detector (backends that have one: ct2)"})
    language: Optional[str] = field(default=None, metadata={
        "help": "language when a request names none, e.g. zh or chinese; unset = detect"})
    num_workers: int = field(default=1, metadata={"help": "recognitions that run at the same time"})
    batch_requests: int = field(default=0, metadata={
        "help": "ct2: gather up to this many concurrent requests' clips (30 s or shorter, language given) "
                "into one encoder and decoder call; 0 or 1 = each request alone"})
    batch_window_s: float = field(default=5.0, metadata={
        "help": "with --batch_requests: a batch's encoder window is its longest clip plus this many seconds "
                "instead of Whisper's 30 s (0 = always 30 s)"})
    max_queue: int = field(default=16, metadata={
        "help": "requests that may wait for a worker; beyond, the server answers 503 with Retry-After"})
    max_upload_mb: float = field(default=100.0, metadata={"help": "largest accepted upload, in MB (413 beyond)"})
    max_audio_s: float = field(default=3600.0, metadata={
        "help": "longest accepted audio, in seconds (413 beyond): checked from the file's header before "
                "decoding and again while decoding, so a small file of long silence is refused too"})
    max_streams: int = field(default=2, metadata={
        "help": "live transcription streams (WebSocket /ws/stream and /v1/realtime) at once; beyond, "
                "the socket is closed with 1013 (try again later)"})
    request_timeout_s: float = field(default=600.0, metadata={
        "help": "a recognition still running (or waiting) this many seconds after it was admitted is "
                "stopped and answered 504; a client that hangs up stops its recognition too"})
    shutdown_timeout_s: float = field(default=30.0, metadata={
        "help": "on SIGTERM or Ctrl+C: stop accepting, let running requests finish for up to this many "
                "seconds, then stop the rest and exit"})
    cors_origins: Optional[str] = field(default=None, metadata={
        "help": "origins whose web pages may call this server from a browser, comma-separated "
                "(e.g. https://app.example.com), or * for any; unset = none (no CORS headers)"})
    api_key: Optional[str] = field(default=None, metadata={
        "secret": True,
        "help": "when set, every endpoint but /health, / and /docs needs 'Authorization: Bearer <key>'; "
                f"unset = the {API_KEY_VARIABLE} environment variable, else no key"})
    cpu_threads: int = field(default=0, metadata={
        "help": "CPU threads per recognition (0 = the backend's default); with --backend=transformers "
                "torch's threads, shared by all workers"})
    warmup: bool = field(default=True, metadata={
        "help": "run one second of a quiet tone through the model before opening the port, so the first "
                "request is as fast as the rest and a broken model fails at start"})
    log_level: Literal["critical", "error", "warning", "info", "debug"] = field(
        default="info", metadata={"help": "uvicorn's log level"})

    def __post_init__(self):
        if self.api_key is None:
            # Read here, not as the default: --help prints defaults, and the key must not show there.
            self.api_key = os.environ.get(API_KEY_VARIABLE)
        check_ranges(self)
        self.attn_implementation = attention_choice(self.attn_implementation, self.use_flash_attention_2,
                                                    self.use_bettertransformer, self.use_gpu)
        cors_origins(self.cors_origins)
        try:
            self.language = to_language_code(self.language)
        except UserError as exc:
            # The first clause names the language; the list of 100 valid ones would drown it.
            raise UsageError(f"--language: {str(exc).split(';')[0]}") from None


def check_ranges(args: ServerArguments) -> None:
    at_least = {"beam_size": 1, "batch_size": 1, "num_workers": 1, "max_queue": 0, "cpu_threads": 0, "max_streams": 0,
                "temperature_increment_on_fallback": 0, "batch_requests": 0, "batch_window_s": 0}
    for name, low in at_least.items():
        if getattr(args, name) < low:
            raise UsageError(f"--{name} must be {low} or more, got {getattr(args, name)}")
    for name in ("max_upload_mb", "max_audio_s", "request_timeout_s"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name} must be above 0, got {getattr(args, name)}")
    if args.shutdown_timeout_s < 0:
        raise UsageError(f"--shutdown_timeout_s must be 0 or more, got {args.shutdown_timeout_s}")
    if not 0 <= args.port < 65536:
        raise UsageError(f"--port must be 0 (any free port) to 65535, got {args.port}")


def cors_origins(value: Optional[str]) -> tuple[str, ...]:
    """--cors_origins as a tuple: "*" alone, or origins such as https://app.example.com."""
    origins = tuple(item.strip().rstrip("/") for item in (value or "").split(",") if item.strip())
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise UsageError(f"--cors_origins: {origin!r} is not an origin; write it as "
                             f"https://host[:port], or * for any")
    return origins


def engine_options(args: ServerArguments, backend: str) -> dict:
    """The keyword options of `backend` from the flags; a flag it does not take is a UsageError."""
    flags = {name: getattr(args, name) for name in ENGINE_FLAGS}
    takes = BACKENDS[backend].options
    defaults = {item.name: item.default for item in dataclasses.fields(ServerArguments)}
    options = backend_options(backend, flags, defaults)
    if "num_workers" in takes:
        # The engine runs this many transcriptions in parallel on one loaded model (faster-whisper).
        options["num_workers"] = args.num_workers
    return options


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound now so that a taken port fails before the slow model load; it
    accepts connections only once uvicorn serves on it."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise UsageError(f"--host={host} --port={port}: cannot listen there ({exc.strerror or exc}); "
                         f"pick another port, or --port=0 for any free one") from None
    return sock


def warn_if_open(sock: socket.socket, api_key: Optional[str]) -> None:
    """A server other machines can reach and that needs no key serves anyone who finds the port: allowed
    (a trusted network), but said at start."""
    host = sock.getsockname()[0]
    if api_key or ipaddress.ip_address(host).is_loopback:
        return
    print(f"warning: listening on {host} without an API key: anyone who can reach this port can use the "
          f"server; set --api_key (or {API_KEY_VARIABLE}), or --host=127.0.0.1", file=sys.stderr, flush=True)


def load_model(args: ServerArguments, backend: str, options: dict):
    started = time.monotonic()
    transcriber = load_transcriber(backend, args.model_path, **options)
    if args.warmup:
        # One short recognition makes the first real request as fast as the rest and proves the
        # model and the request defaults work before the port opens. A quiet tone, not silence:
        # silence is answered without running the model.
        import numpy as np

        from utils.inference.transcriber import TranscribeOptions

        tone = (0.1 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)   # 1 s, -20 dBFS
        try:
            segments, _ = transcriber.transcribe(tone, TranscribeOptions(
                language=args.language or "en", beam_size=args.beam_size, vad_filter=args.vad_filter,
                temperature_increment_on_fallback=args.temperature_increment_on_fallback))
            list(segments)
        except UserError as exc:
            if args.language:
                raise UsageError(f"--language={args.language}: {exc}") from None
            raise
    warmed = " and warmed up" if args.warmup else ""
    print(f"loaded {args.model_path} on the {backend} backend{warmed} in {time.monotonic() - started:.1f} s",
          flush=True)
    return transcriber


def serve(args: ServerArguments) -> None:
    print_config("infer_server.py configuration", args)
    backend = resolve_backend(args.backend, args.model_path)
    options = engine_options(args, backend)
    refuse_unsupported(backend, "vad_filter", args.vad_filter)
    if args.batch_requests > 1 and backend != "ct2":
        raise UsageError(f"--batch_requests applies only to --backend=ct2, not {backend}")
    sock = listening_socket(args.host, args.port)
    warn_if_open(sock, args.api_key)
    transcriber = load_model(args, backend, options)

    import uvicorn

    from utils.apps.server import ServerSettings, create_app

    settings = ServerSettings(
        backend=backend, model_name=model_name(args.model_path), num_workers=args.num_workers,
        max_queue=args.max_queue, max_upload_mb=args.max_upload_mb, api_key=args.api_key,
        language=args.language, beam_size=args.beam_size, vad_filter=args.vad_filter,
        temperature_increment_on_fallback=args.temperature_increment_on_fallback,
        max_audio_s=args.max_audio_s, request_timeout_s=args.request_timeout_s,
        cors_origins=cors_origins(args.cors_origins), max_streams=args.max_streams,
        batch_requests=args.batch_requests, batch_window_s=args.batch_window_s,
        model_created=int(os.path.getmtime(args.model_path)) if os.path.exists(args.model_path) else 0)
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    # Tests and tools started with --port=0 read the port from this line.
    print(f"serving on http://{shown_host}:{port}/  (API docs: /docs)", flush=True)
    # One uvicorn process: the worker pool inside the app gives concurrency without loading
    # the model once per process.
    server = uvicorn.Server(uvicorn.Config(create_app(transcriber, settings), log_level=args.log_level,
                                           timeout_graceful_shutdown=args.shutdown_timeout_s))
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again under the handler that
    # was there before it ran; the default one would end the process with -15 instead of 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    server.run(sockets=[sock])


def main(argv=None) -> int:
    args = parse_args(ServerArguments, argv, description=__doc__)
    return guarded(lambda: serve(args))


if __name__ == "__main__":
    sys.exit(main())
