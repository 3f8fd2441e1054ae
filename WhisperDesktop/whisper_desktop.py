"""WhisperDesktop: the infer_gui.py window on whisper.cpp (GGML), packaged without PyTorch.

    python WhisperDesktop/whisper_desktop.py --model_path=models/ggml-model.bin
    WhisperDesktop --transcribe=dataset/test.wav --language=zh      # the built app, no window
"""
from __future__ import annotations

import argparse
import os
import sys

if not getattr(sys, "frozen", False):
    # Run from a source checkout: the shared `utils` package lives one folder up.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.apps.recorder import RECORD_DIR  # noqa: E402

MODEL_NAME = "ggml-model.bin"   # convert-ggml.py's default output name
SAVE_FORMATS = ("txt", "srt", "vtt")


def app_dir() -> str:
    """The folder holding the executable (built app) or the repository (source checkout)."""
    if getattr(sys, "frozen", False):
        return os.path.dirname(sys.executable)
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_model_path() -> str:
    """The first existing of <app>/models/ggml-model.bin and ./models/ggml-model.bin."""
    candidates = [os.path.join(app_dir(), "models", MODEL_NAME), os.path.join("models", MODEL_NAME)]
    return next((path for path in candidates if os.path.isfile(path)), candidates[0])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="WhisperDesktop", description="Speech to text on whisper.cpp: a window, or one file with --transcribe.")
    parser.add_argument("--model_path", default=None,
                        help=f"GGML model file from convert-ggml.py; unset = models/{MODEL_NAME} beside the "
                             "app, else in the current folder")
    parser.add_argument("--language", default=None,
                        help="spoken language, name or code (chinese, zh); unset = detect")
    parser.add_argument("--task", default="transcribe", choices=("transcribe", "translate"),
                        help="transcribe, or translate to English")
    parser.add_argument("--num_beams", type=int, default=1, help="beam width; 1 = greedy decoding")
    parser.add_argument("--cpu_threads", type=int, default=0,
                        help="whisper.cpp threads; 0 = up to 4, as many as the machine has")
    parser.add_argument("--record_dir", default=RECORD_DIR, help="folder for microphone recordings (window mode)")
    parser.add_argument("--transcribe", metavar="AUDIO", default=None,
                        help="transcribe this file, print timestamped lines and exit, without a window")
    parser.add_argument("--output_format", choices=SAVE_FORMATS, default=None,
                        help="with --transcribe: also write the transcript in this format")
    parser.add_argument("--output_dir", default="output", help="with --transcribe: folder for --output_format")
    return parser


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.num_beams < 1:
        parser.error(f"--num_beams must be at least 1, got {args.num_beams}")
    if args.cpu_threads < 0:
        parser.error(f"--cpu_threads must be >= 0, got {args.cpu_threads}")
    if args.transcribe is None:
        for flag in ("output_format",):
            if getattr(args, flag) is not None:
                parser.error(f"--{flag} only applies with --transcribe; in the window use Save as…")
        if args.output_dir != "output":
            parser.error("--output_dir only applies with --transcribe; in the window use Save as…")


def transcribe_file(args: argparse.Namespace) -> int:
    """The headless mode: one file in, `[start - end] text` lines out (and a file if asked)."""
    from utils.inference.registry import load_transcriber
    from utils.inference.run import transcribe_to_outputs
    from utils.inference.transcriber import USER_ERRORS, TranscribeOptions

    try:
        transcriber = load_transcriber("ggml", args.model_path, cpu_threads=args.cpu_threads)
        options = TranscribeOptions(language=args.language, task=args.task, beam_size=args.num_beams)
        transcribe_to_outputs(transcriber, args.transcribe, options, output_format=args.output_format,
                              output_dir=args.output_dir)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    args.model_path = args.model_path or default_model_path()
    print("WhisperDesktop configuration:")
    for name, value in vars(args).items():
        print(f"  {name} = {value!r}")
    if args.transcribe is not None:
        return transcribe_file(args)

    from utils.apps.gui import DisplayError, GuiSettings, WhisperWindow

    settings = GuiSettings(model_path=args.model_path, backend="ggml",
                           backend_options={"cpu_threads": args.cpu_threads}, language=args.language,
                           task=args.task, beam_size=args.num_beams, record_dir=args.record_dir,
                           title="WhisperDesktop")
    try:
        window = WhisperWindow(settings)
    except DisplayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    window.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
