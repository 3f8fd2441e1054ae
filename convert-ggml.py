"""Export a transformers Whisper folder (base or merged fine-tune) to whisper.cpp's GGML format.

    python convert-ggml.py --model_dir=models/whisper-base --output_path=models/ggml-whisper-base.bin
    python convert-ggml.py --model_dir=models/whisper-base --output_path=models/ggml-whisper-base-q5_0.bin \
        --quantization=q5_0 --test_data=dataset/en_test.jsonl

The file runs in whisper.cpp itself, in pywhispercpp, and in the WhisperDesktop/Android apps; q8_0 and
q5_0 files are whisper.cpp's quantized types (about 0.55x and 0.37x the size of f16, for phones).
"""
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Literal, Optional

from utils.core.cli import guarded, parse_args, print_config
from utils.core.errors import UsageError
from utils.core.files import check_output_path
from utils.inference.registry import default_model


@dataclass
class ConvertArguments:
    model_dir: str = field(default=default_model("transformers"),
                           metadata={"help": "transformers model folder (merged fine-tune or base model)"})
    output_path: str = field(default=default_model("ggml"), metadata={"help": "GGML file to write"})
    quantization: Optional[Literal["f16", "f32", "q8_0", "q5_0"]] = field(default=None, metadata={
        "help": "type of the weight matrices: f16; q8_0 or q5_0 (whisper.cpp's 8- and 5-bit blocks: smaller "
                "files, accuracy in docs/inference.md); f32, which whisper.cpp's CPU build (as bundled in "
                "pywhispercpp 1.5) cannot run. Unset = f16, or what --use_f16 says"})
    use_f16: Optional[bool] = field(default=None, metadata={
        "help": "the original project's flag: True = --quantization=f16, False = --quantization=f32"})
    test_data: Optional[str] = field(default=None, metadata={
        "help": "after writing, transcribe this jsonlines manifest with the new file (whisper.cpp, greedy) "
                "and print its WER (CER for Chinese, Japanese...) and the time taken"})
    cpu_threads: int = field(default=0, metadata={"help": "whisper.cpp threads for --test_data; 0 = up to 4"})

    def __post_init__(self):
        implied = {None: None, True: "f16", False: "f32"}[self.use_f16]
        if implied and self.quantization and implied != self.quantization:
            raise UsageError(f"--use_f16={self.use_f16} asks for {implied} weights but --quantization="
                             f"{self.quantization}; give only --quantization")
        self.quantization = self.quantization or implied or "f16"
        if self.cpu_threads < 0:
            raise UsageError(f"--cpu_threads must be 0 (automatic) or more, got {self.cpu_threads}")
        if self.cpu_threads and not self.test_data:
            raise UsageError("--cpu_threads sets whisper.cpp's threads for --test_data; give --test_data too")


def convert(args: ConvertArguments) -> None:
    from utils.export.ggml import export_ggml

    print_config("convert-ggml.py configuration", args)
    check_output_path(args.output_path, "--output_path")
    summary = export_ggml(args.model_dir, args.output_path, quantization=args.quantization)
    print(f"wrote {args.output_path}: {summary['tensors']} tensors, {summary['vocab']} tokens, "
          f"{summary['n_mels']} mel bins, {summary['quantization']}, {summary['bytes'] / 2**20:.1f} MiB")
    if args.test_data:
        check_transcription(args.output_path, args.test_data, args.cpu_threads)


def check_transcription(model_path: str, test_data: str, cpu_threads: int) -> None:
    """Transcribe every clip of `test_data` with the GGML file and print the error rate per language:
    what a quantization costs, measured on the user's own clips."""
    from tqdm import tqdm

    from utils.core.audio import load_audio
    from utils.core.metrics import CER_LANGUAGES, error_rate
    from utils.data.manifest import load_manifest
    from utils.inference.registry import load_transcriber
    from utils.inference.transcriber import TranscribeOptions

    clips = load_manifest(test_data)
    transcriber = load_transcriber("ggml", model_path, cpu_threads=cpu_threads)
    transcriber.preload()
    by_language: dict = {}
    started = time.perf_counter()
    for clip in tqdm(clips, desc=f"transcribing {os.path.basename(test_data)}"):
        audio = load_audio(clip["path"], clip["start_time"], clip["end_time"])
        segments, info = transcriber.transcribe(audio, TranscribeOptions(language=clip["language"]))
        hypothesis = " ".join(segment.text for segment in segments)
        by_language.setdefault(info.language, ([], []))
        by_language[info.language][0].append(clip["sentence"])
        by_language[info.language][1].append(hypothesis)
    seconds = time.perf_counter() - started
    for language, (references, hypotheses) in sorted(by_language.items()):
        result = error_rate(references, hypotheses, "cer" if language in CER_LANGUAGES else "wer")
        print(f"{language}: {result.metric.upper()} {100 * result.value:.1f} % ({result.counts.errors} errors in "
              f"{result.counts.reference_units} {'characters' if result.metric == 'cer' else 'words'}, "
              f"{len(references)} clips)")
    audio_seconds = sum(clips["duration"])
    print(f"transcribed {len(clips)} clips ({audio_seconds:.1f} s of audio) in {seconds:.1f} s "
          f"with {transcriber.n_threads} threads")


def main(argv=None) -> int:
    args = parse_args(ConvertArguments, argv, description=__doc__)
    return guarded(lambda: convert(args))


if __name__ == "__main__":
    sys.exit(main())
