"""Transcribe audio or video files with a Whisper model through transformers.

    python infer.py --audio_path=dataset/test.wav --model_path=models/whisper-base
    python infer.py --audio_path talk.mp3 interview.m4a --language=zh --output_format=srt
    python infer.py --audio_path=recordings/ --output_format=none     # a folder; print only

Transcripts are written into --output_dir (default output/) in every format unless --output_format
names one, or none.
"""
import sys
from dataclasses import dataclass, field
from typing import Literal, Optional

from utils.core.cli import guarded, parse_args, print_config
from utils.core.files import check_output_path
from utils.core.languages import to_language_code
from utils.inference.registry import default_model, load_transcriber
from utils.inference.run import CommonInferArguments, attention_choice, transcribe_files


@dataclass
class InferArguments(CommonInferArguments):
    model_path: str = field(default=default_model("transformers"),
                            metadata={"help": "transformers model folder (merged fine-tune or base model)"})
    num_beams: int = field(default=1, metadata={"help": "beam width; 1 = greedy decoding"})
    batch_size: int = field(default=1, metadata={
        "help": "30 s windows decoded side by side; 1 = sequential long-form decoding (most accurate)"})
    use_gpu: bool = field(default=False, metadata={"help": "run on the first CUDA GPU in float16"})
    use_int8: bool = field(default=False, metadata={
        "help": "CPU: dynamic int8 quantization of every linear layer, for CPUs without bfloat16; faster "
                "there but less accurate (docs/performance.md); for int8 prefer infer_ct2.py --use_int8. "
                "Not with --use_gpu or --bf16"})
    bf16: bool = field(default=False, metadata={
        "help": "bfloat16 weights and activations. CPU: needs AVX512-BF16 or AMX (docs/performance.md has "
                "its speed and accuracy). With --use_gpu: bfloat16 instead of float16"})
    timestamps: bool = field(default=True, metadata={
        "help": "predict segment timestamps; False gives one segment per 30 s window"})
    use_compile: bool = field(default=False, metadata={"help": "torch.compile the model's forward pass"})
    cpu_threads: int = field(default=0, metadata={
        "help": "torch CPU threads; 0 = torch's default (one per core); on a CPU busy with other work "
                "fewer threads can be faster"})
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = field(
        default="sdpa", metadata={"help": "attention kernel; flash_attention_2 needs a GPU and flash-attn"})
    use_flash_attention_2: bool = field(default=False, metadata={
        "help": "the original project's flag: the same as --attn_implementation=flash_attention_2 (a CUDA "
                "GPU and the flash-attn package)"})
    use_bettertransformer: bool = field(default=False, metadata={
        "help": "the original project's flag, refused: optimum's BetterTransformer is obsolete; the default "
                "sdpa attention gives its speed-up"})
    assistant_model_path: Optional[str] = field(default=None, metadata={
        "help": "small Whisper sharing the tokenizer, for speculative decoding (batch_size 1)"})

    def __post_init__(self):
        self.attn_implementation = attention_choice(self.attn_implementation, self.use_flash_attention_2,
                                                    self.use_bettertransformer, self.use_gpu)


def transcribe(args: InferArguments) -> int:
    print_config("infer.py configuration", args)
    # Check the language before the (slow) model load, so a mistake fails at once.
    to_language_code(args.language)
    if args.output_format not in (None, "none"):
        check_output_path(args.output_dir, "--output_dir", kind="dir")
    options = args.transcribe_options(beam_size=args.num_beams, timestamps=args.timestamps)
    return transcribe_files(lambda: load_transcriber(
        "transformers", args.model_path, use_gpu=args.use_gpu, batch_size=args.batch_size,
        attn_implementation=args.attn_implementation, use_compile=args.use_compile,
        assistant_model_path=args.assistant_model_path, local_files_only=args.local_files_only,
        cpu_threads=args.cpu_threads, use_int8=args.use_int8, compute_type="bfloat16" if args.bf16 else None),
        args.audio_path, options, args.output_format, args.output_dir)


def main(argv=None) -> int:
    args = parse_args(InferArguments, argv, description=__doc__)
    return guarded(lambda: transcribe(args))


if __name__ == "__main__":
    sys.exit(main())
