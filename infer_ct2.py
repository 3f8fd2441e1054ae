"""Transcribe audio or video files with a CTranslate2 Whisper model (faster-whisper).

    python infer_ct2.py --audio_path=dataset/test.wav --model_path=models/whisper-base-ct2
    python infer_ct2.py --audio_path talk.mp3 'meetings/*.m4a' --use_int8 --batch_size=8 --output_format=srt

Transcripts are written into --output_dir (default output/) in every format unless --output_format
names one, or none.

Convert a transformers model first with tools/hf_to_ct2.py.
"""
import sys
from dataclasses import dataclass, field
from typing import Optional

from utils.core.cli import guarded, parse_args, print_config
from utils.core.errors import UsageError
from utils.core.files import check_output_path
from utils.core.languages import to_language_code
from utils.inference.backends.ct2 import COMPUTE_TYPES
from utils.inference.registry import default_model, load_transcriber
from utils.inference.run import CommonInferArguments, needs_segment_times, transcribe_files


@dataclass
class InferCT2Arguments(CommonInferArguments):
    model_path: str = field(default=default_model("ct2"),
                            metadata={"help": "CTranslate2 model folder (made by tools/hf_to_ct2.py)"})
    beam_size: int = field(default=1, metadata={"help": "beam width; 1 = greedy decoding",
                                                "aliases": ["--num_beams"]})
    batch_size: int = field(default=1, metadata={
        "help": "> 1 uses faster-whisper's BatchedInferencePipeline (30 s windows side by side; without "
                "--vad_filter a window that loops is decoded again alone with the temperature fallback)"})
    use_gpu: bool = field(default=False, metadata={"help": "run on the first CUDA GPU"})
    compute_type: str = field(default="default", metadata={
        "help": "CTranslate2 compute type; default = as stored", "choices": COMPUTE_TYPES})
    use_int8: bool = field(default=False, metadata={
        "help": "shorthand for --compute_type=int8 (CPU) or int8_float16 (GPU)"})
    vad_filter: bool = field(default=False, metadata={"help": "skip non-speech with the Silero VAD"})
    word_timestamps: bool = field(default=False, metadata={"help": "also give each word's start and end"})
    timestamps: Optional[bool] = field(default=None, metadata={
        "help": "predict segment timestamps (Whisper's timestamp tokens); False gives one segment per window. "
                "Unset (auto) = off when --batch_size > 1 and the output is text only (--output_format=txt "
                "or none, no --word_timestamps): the batched pipeline then reads as faster-whisper's own "
                "default does, more accurately (WER 10.4 -> 7.5 % on dataset/en_long.flac with --vad_filter) "
                "and with fewer tokens to decode; on otherwise, since subtitles need the times"})
    cpu_threads: int = field(default=0, metadata={"help": "CPU threads; 0 = this machine's cores"})
    num_workers: int = field(default=1, metadata={
        "help": "the original project's flag: 1 only, since files are transcribed one after the other "
                "(parallel recognitions are infer_server.py --num_workers)"})

    def __post_init__(self):
        if self.num_workers != 1:
            raise UsageError(f"--num_workers={self.num_workers}: infer_ct2.py transcribes one file after the "
                             f"other, so more workers would sit idle; for parallel recognitions serve the model "
                             f"with infer_server.py --num_workers")
        if self.use_int8:
            if self.compute_type != "default":
                raise UsageError(f"--use_int8 and --compute_type={self.compute_type} contradict each other; "
                                 f"give one of them")
            self.compute_type = "int8_float16" if self.use_gpu else "int8"
        if self.timestamps is None:
            # The sequential decoder seeks from the last timestamp it predicted; without timestamps it
            # moves on by whole 30 s windows and cuts words at their edges, so only the batched path,
            # whose windows end at pauses, leaves them out.
            self.timestamps = self.batch_size == 1 or needs_segment_times(self.output_format,
                                                                          self.word_timestamps)


def transcribe(args: InferCT2Arguments) -> int:
    print_config("infer_ct2.py configuration", args)
    # Check the language before the (slow) model load, so a mistake fails at once.
    to_language_code(args.language)
    if args.output_format not in (None, "none"):
        check_output_path(args.output_dir, "--output_dir", kind="dir")
    options = args.transcribe_options(beam_size=args.beam_size, timestamps=args.timestamps,
                                      word_timestamps=args.word_timestamps, vad_filter=args.vad_filter)
    return transcribe_files(lambda: load_transcriber(
        "ct2", args.model_path, use_gpu=args.use_gpu, compute_type=args.compute_type,
        batch_size=args.batch_size, cpu_threads=args.cpu_threads, local_files_only=args.local_files_only),
        args.audio_path, options, args.output_format, args.output_dir)


def main(argv=None) -> int:
    args = parse_args(InferCT2Arguments, argv, description=__doc__)
    return guarded(lambda: transcribe(args))


if __name__ == "__main__":
    sys.exit(main())
