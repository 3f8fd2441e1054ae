"""A desktop window for Whisper: pick a file or record, watch the text appear, copy or save it.

    python infer_gui.py --model_path=models/whisper-base
    python infer_gui.py --model_path=models/whisper-base-ct2 --compute_type=int8 --language=zh
    python infer_gui.py --backend=ggml --model_path=models/ggml-model.bin

The backend follows what --model_path holds unless --backend names one; a flag that the backend
cannot use is refused at start with one sentence.
"""
import sys
from dataclasses import dataclass, field, fields
from typing import Literal, Optional

from utils.apps.recorder import RECORD_DIR
from utils.core.cli import guarded, parse_args, print_config
from utils.core.errors import UsageError
from utils.core.languages import TASKS, to_language_code
from utils.inference.registry import (
    AUTO,
    BACKEND_CHOICES,
    BACKEND_NAMES,
    BACKENDS,
    backend_options,
    default_model,
    refuse_unsupported,
    refuse_wrong_kind,
    resolve_backend,
)
from utils.inference.run import attention_choice

# The flags handed to the backend itself (through the registry, which knows which backend takes which).
ENGINE_FLAGS = ("use_gpu", "compute_type", "cpu_threads", "batch_size", "use_compile", "local_files_only",
                "use_int8", "attn_implementation", "assistant_model_path")


def _takers(option: str) -> str:
    return " or ".join(b.name for b in BACKENDS.values() if option in b.options)


def _for(option: str) -> str:
    """Which backends take `option`, for a help text."""
    if all(option in b.options for b in BACKENDS.values()):
        return "any backend"
    return f"--backend={_takers(option)}"


@dataclass
class GuiArguments:
    model_path: Optional[str] = field(default=None, metadata={
        "help": "model for the backend: transformers folder, CTranslate2 folder or GGML .bin file; unset = "
                "the backend's default (" + ", ".join(f"{b.name}: {b.default_model}" for b in BACKENDS.values())
                + f"; for auto the {BACKEND_NAMES[0]} one)"})
    backend: str = field(default=AUTO, metadata={
        "choices": BACKEND_CHOICES,
        "help": "inference engine; auto = the one that reads --model_path. "
                + "; ".join(f"{b.name}: {b.summary}" for b in BACKENDS.values())})
    language: Optional[str] = field(default=None, metadata={
        "help": "spoken language shown in the window at start, name or code (chinese, zh); unset = detect"})
    task: str = field(default="transcribe", metadata={
        "choices": TASKS, "help": "task selected at start: transcribe, or translate to English"})
    num_beams: int = field(default=1, metadata={
        "help": "beam width; 1 = greedy decoding (--beam_size is the original project's name)",
        "aliases": ["--beam_size"]})
    use_int8: bool = field(default=False, metadata={
        "help": "the original project's flag, int8 weights: --backend=" + _takers("use_int8")
                + " quantizes its linear layers (CPU); a backend with only --compute_type computes in int8 "
                "(int8_float16 on a GPU)"})
    num_workers: Optional[int] = field(default=None, metadata={
        "help": "the original project's flag, refused: the window runs one recognition at a time "
                "(parallel recognitions are infer_server.py --num_workers)"})
    use_gpu: bool = field(default=False, metadata={
        "help": f"run on the first CUDA GPU ({_for('use_gpu')})"})
    compute_type: Optional[str] = field(default=None, metadata={
        "help": "precision the backend computes in: a CTranslate2 compute type (int8, int8_float16, "
                "float16, ...) or a torch dtype (float32, bfloat16, float16), as the backend takes; "
                f"unset = its default ({_for('compute_type')})"})
    cpu_threads: Optional[int] = field(default=None, metadata={
        "help": f"CPU threads; unset = the engine's default ({_for('cpu_threads')})"})
    batch_size: Optional[int] = field(default=None, metadata={
        "help": "30 s windows decoded side by side; unset = 1, sequential long-form decoding (most "
                f"accurate) ({_for('batch_size')})"})
    use_compile: bool = field(default=False, metadata={
        "help": f"torch.compile the model's forward pass ({_for('use_compile')})"})
    assistant_model_path: Optional[str] = field(default=None, metadata={
        "help": f"small Whisper sharing the tokenizer, for speculative decoding ({_for('assistant_model_path')})"})
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = field(default="sdpa", metadata={
        "help": f"attention kernel; flash_attention_2 needs a GPU and flash-attn ({_for('attn_implementation')})"})
    use_flash_attention_2: bool = field(default=False, metadata={
        "help": "the original project's flag: the same as --attn_implementation=flash_attention_2"})
    use_bettertransformer: bool = field(default=False, metadata={
        "help": "the original project's flag, refused: optimum's BetterTransformer is obsolete; the default "
                "sdpa attention gives its speed-up"})
    vad_filter: bool = field(default=False, metadata={
        "help": "skip non-speech with the Silero VAD (refused by a backend without one)"})
    local_files_only: bool = field(default=True, metadata={
        "help": "never contact the Hugging Face hub; False lets --model_path be a hub name"})
    record_dir: str = field(default=RECORD_DIR, metadata={"help": "folder for microphone recordings"})

    def __post_init__(self):
        if self.num_workers is not None:
            raise UsageError("--num_workers: the window runs one recognition at a time; parallel "
                             "recognitions are what infer_server.py --num_workers offers")
        if self.num_beams < 1:
            raise UsageError(f"--num_beams must be at least 1, got {self.num_beams}")
        self.attn_implementation = attention_choice(self.attn_implementation, self.use_flash_attention_2,
                                                    self.use_bettertransformer, self.use_gpu)


FLAG_DEFAULTS = {f.name: f.default for f in fields(GuiArguments) if f.name in ENGINE_FLAGS}


def settings_from(args: GuiArguments):
    """The window's settings: the backend resolved, its options checked against the registry."""
    from utils.apps.gui import GuiSettings  # here, not at the top: --help must not load the toolkit

    model_path = args.model_path or default_model(BACKEND_NAMES[0] if args.backend == AUTO else args.backend)
    backend = resolve_backend(args.backend, model_path)
    # The model loads once the window is up; a model of the wrong kind is refused before it opens.
    refuse_wrong_kind(backend, model_path)
    # Checked before the window opens: a misspelt language fails here, not at the first recognition.
    to_language_code(args.language)
    options = backend_options(backend, {name: getattr(args, name) for name in ENGINE_FLAGS}, defaults=FLAG_DEFAULTS)
    refuse_unsupported(backend, "vad_filter", args.vad_filter)
    return GuiSettings(model_path=model_path, backend=backend, backend_options=options, language=args.language,
                       task=args.task, beam_size=args.num_beams, vad_filter=args.vad_filter,
                       record_dir=args.record_dir, title="Whisper")


def open_window(args: GuiArguments) -> None:
    settings = settings_from(args)
    print_config("infer_gui.py configuration", settings)
    from utils.apps.gui import WhisperWindow

    # The model loads on a worker thread once the window is up; problems appear as dialogs.
    WhisperWindow(settings).run()


def main(argv=None) -> int:
    args = parse_args(GuiArguments, argv, description=__doc__)
    return guarded(lambda: open_window(args))


if __name__ == "__main__":
    sys.exit(main())
