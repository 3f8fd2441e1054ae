"""A desktop window for Whisper: pick a file or record, watch the text appear, copy or save it.

    python infer_gui.py --model_path=models/whisper-base
    python infer_gui.py --backend=ct2 --model_path=models/whisper-base-ct2 --language=zh
    python infer_gui.py --backend=ggml --model_path=models/ggml-model.bin
"""
import sys
from dataclasses import dataclass, field
from typing import Literal, Optional

from transformers import HfArgumentParser

try:
    from utils.apps.gui import DisplayError, GuiSettings, WhisperWindow
except ModuleNotFoundError as missing:
    if missing.name not in ("tkinter", "_tkinter"):
        raise
    sys.exit("error: this Python has no Tk support (tkinter), which the window needs; install it "
             "(Debian/Ubuntu: apt-get install python3-tk; pyenv: install tk-dev, then rebuild Python)")
from utils.apps.recorder import RECORD_DIR
from utils.core.cli import print_config
from utils.inference.backends.transformers import check_compute_type

DEFAULT_MODELS = {"transformers": "models/whisper-base", "ct2": "models/whisper-base-ct2",
                  "ggml": "models/ggml-model.bin"}


@dataclass
class GuiArguments:
    model_path: Optional[str] = field(default=None, metadata={
        "help": "model for the backend: transformers folder, CTranslate2 folder or GGML .bin file; "
                f"unset = {DEFAULT_MODELS}"})
    backend: Literal["transformers", "ct2", "ggml"] = field(default="transformers", metadata={
        "help": "inference engine: transformers (PyTorch), ct2 (faster-whisper) or ggml (whisper.cpp)"})
    language: Optional[str] = field(default=None, metadata={
        "help": "spoken language shown in the window at start, name or code (chinese, zh); unset = detect"})
    task: Literal["transcribe", "translate"] = field(default="transcribe", metadata={
        "help": "task selected at start: transcribe, or translate to English"})
    num_beams: int = field(default=1, metadata={"help": "beam width; 1 = greedy decoding"})
    beam_size: Optional[int] = field(default=None, metadata={
        "help": "the original project's name for --num_beams"})
    use_int8: bool = field(default=False, metadata={
        "help": "ct2 backend only, the original project's flag: the same as --compute_type=int8"})
    num_workers: Optional[int] = field(default=None, metadata={
        "help": "the original project's flag, refused: the window runs one recognition at a time "
                "(parallel recognitions are infer_server.py --num_workers)"})
    use_gpu: bool = field(default=False, metadata={
        "help": "run on the first CUDA GPU (transformers and ct2 backends)"})
    compute_type: Optional[str] = field(default=None, metadata={
        "help": "ct2: CTranslate2 compute type (int8, float16, int8_float16, ...); transformers: float32, "
                "bfloat16 (CPUs with AVX512-BF16/AMX, or GPUs) or float16 (GPU)"})
    cpu_threads: Optional[int] = field(default=None, metadata={
        "help": "ct2 and ggml backends only: CPU threads; unset = the engine's default"})
    vad_filter: bool = field(default=False, metadata={
        "help": "ct2 backend only: skip non-speech with the Silero VAD"})
    local_files_only: bool = field(default=True, metadata={
        "help": "never contact the Hugging Face hub; False lets --model_path be a hub name"})
    record_dir: str = field(default=RECORD_DIR, metadata={"help": "folder for microphone recordings"})


def settings_from(args: GuiArguments) -> GuiSettings:
    """Map the arguments onto the backend's options; a flag the backend cannot use is an error."""
    def only_for(flag: str, backends: tuple) -> None:
        if args.backend not in backends:
            raise ValueError(f"--{flag} applies only to --backend={' or '.join(backends)}, "
                             f"not {args.backend}")

    if args.num_workers is not None:
        raise ValueError("--num_workers: the window runs one recognition at a time; parallel "
                         "recognitions are what infer_server.py --num_workers offers")
    if args.beam_size is not None:
        args.num_beams = args.beam_size
    if args.use_int8:
        only_for("use_int8", ("ct2",))
        if args.compute_type not in (None, "int8"):
            raise ValueError(f"--use_int8 and --compute_type={args.compute_type} contradict each other")
        args.compute_type = "int8"
    if args.num_beams < 1:
        raise ValueError(f"--num_beams must be at least 1, got {args.num_beams}")
    options: dict = {}
    if args.backend in ("transformers", "ct2"):
        options.update(use_gpu=args.use_gpu, local_files_only=args.local_files_only)
    elif args.use_gpu:
        raise ValueError("--use_gpu is not available with --backend=ggml: pywhispercpp's wheel "
                         "is a CPU build; use --backend=ct2 or transformers for a GPU")
    if args.compute_type is not None and args.backend == "transformers":
        check_compute_type(args.compute_type, args.use_gpu)
        options["dtype"] = args.compute_type
    elif args.compute_type is not None:
        only_for("compute_type", ("ct2",))
        options["compute_type"] = args.compute_type
    if args.cpu_threads is not None:
        only_for("cpu_threads", ("ct2", "ggml"))
        options["cpu_threads"] = args.cpu_threads
    if args.vad_filter:
        only_for("vad_filter", ("ct2",))
    return GuiSettings(model_path=args.model_path or DEFAULT_MODELS[args.backend],
                       backend=args.backend, backend_options=options, language=args.language,
                       task=args.task, beam_size=args.num_beams, vad_filter=args.vad_filter,
                       record_dir=args.record_dir, title="Whisper")


def main() -> None:
    (args,) = HfArgumentParser(GuiArguments).parse_args_into_dataclasses()
    try:
        settings = settings_from(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    print_config("infer_gui.py configuration", settings)
    try:
        window = WhisperWindow(settings)
    except DisplayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    # The model loads on a worker thread once the window is up; problems appear as dialogs.
    window.run()


if __name__ == "__main__":
    main()
