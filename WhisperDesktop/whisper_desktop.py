"""WhisperDesktop: the infer_gui.py window on whisper.cpp (GGML), packaged without PyTorch.

    python WhisperDesktop/whisper_desktop.py --model_path=models/ggml-model.bin
    WhisperDesktop --transcribe=dataset/test.wav --language=zh      # the built app, no window
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Optional

if not getattr(sys, "frozen", False):
    # Run from a source checkout: the shared `utils` package lives one folder up.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.apps.recorder import RECORD_DIR  # noqa: E402
from utils.core.cli import guarded, parse_args, print_config  # noqa: E402
from utils.core.errors import UsageError  # noqa: E402
from utils.core.languages import TASKS, to_language_code  # noqa: E402
from utils.inference.registry import default_model  # noqa: E402

BACKEND = "ggml"   # the app's one engine: whisper.cpp needs no PyTorch
SAVE_FORMATS = ("txt", "srt", "vtt")


def app_dir() -> str:
    """The folder holding the executable (built app) or the repository (source checkout)."""
    if getattr(sys, "frozen", False):
        return os.path.dirname(sys.executable)
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_model_path() -> str:
    """The backend's default model (models/ggml-model.bin) beside the app, else in the current folder."""
    candidates = [os.path.join(app_dir(), default_model(BACKEND)), default_model(BACKEND)]
    return next((path for path in candidates if os.path.isfile(path)), candidates[0])


@dataclass
class DesktopArguments:
    model_path: Optional[str] = field(default=None, metadata={
        "help": f"GGML model file from convert-ggml.py; unset = {default_model(BACKEND)} beside the app, "
                "else in the current folder"})
    language: Optional[str] = field(default=None, metadata={
        "help": "spoken language, name or code (chinese, zh); unset = detect"})
    task: str = field(default="transcribe", metadata={
        "choices": TASKS, "help": "transcribe, or translate to English"})
    num_beams: int = field(default=1, metadata={"help": "beam width; 1 = greedy decoding"})
    cpu_threads: int = field(default=0, metadata={
        "help": "whisper.cpp threads; 0 = up to 4, as many as the machine has"})
    record_dir: str = field(default=RECORD_DIR, metadata={
        "help": "folder for microphone recordings (window mode)"})
    transcribe: Optional[str] = field(default=None, metadata={
        "help": "transcribe this audio file, print timestamped lines and exit, without a window"})
    output_format: Optional[str] = field(default=None, metadata={
        "choices": SAVE_FORMATS, "help": "with --transcribe: also write the transcript in this format"})
    output_dir: str = field(default="output", metadata={
        "help": "with --transcribe: folder for --output_format"})

    def __post_init__(self):
        if self.num_beams < 1:
            raise UsageError(f"--num_beams must be at least 1, got {self.num_beams}")
        if self.cpu_threads < 0:
            raise UsageError(f"--cpu_threads must be >= 0, got {self.cpu_threads}")
        if self.transcribe is None:
            if self.output_format is not None:
                raise UsageError("--output_format only applies with --transcribe; in the window use Save as…")
            if self.output_dir != "output":
                raise UsageError("--output_dir only applies with --transcribe; in the window use Save as…")
        self.model_path = self.model_path or default_model_path()


def transcribe_file(args: DesktopArguments) -> None:
    """The headless mode: one file in, `[start - end] text` lines out (and a file if asked)."""
    from utils.inference.registry import load_transcriber
    from utils.inference.run import transcribe_to_outputs
    from utils.inference.transcriber import TranscribeOptions

    transcriber = load_transcriber(BACKEND, args.model_path, cpu_threads=args.cpu_threads)
    options = TranscribeOptions(language=args.language, task=args.task, beam_size=args.num_beams)
    transcribe_to_outputs(transcriber, args.transcribe, options, output_format=args.output_format,
                          output_dir=args.output_dir)


def open_window(args: DesktopArguments) -> None:
    from utils.apps.gui import GuiSettings, WhisperWindow

    settings = GuiSettings(model_path=args.model_path, backend=BACKEND,
                           backend_options={"cpu_threads": args.cpu_threads}, language=args.language,
                           task=args.task, beam_size=args.num_beams, record_dir=args.record_dir,
                           title="WhisperDesktop")
    WhisperWindow(settings).run()


def run(args: DesktopArguments) -> None:
    print_config("WhisperDesktop configuration", args)
    to_language_code(args.language)   # a misspelt language fails now, not after the model loads
    if args.transcribe is not None:
        transcribe_file(args)
    else:
        open_window(args)


def main(argv=None) -> int:
    args = parse_args(DesktopArguments, argv, description=__doc__)
    return guarded(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
