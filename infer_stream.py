"""Live transcription: words as they are spoken, from a file played at real time or a microphone.

    python infer_stream.py --audio_path=dataset/sample_en.wav --simulate_realtime
    python infer_stream.py --microphone --language=en --model_path=models/whisper-base-ct2
    python infer_stream.py --audio_path=talk.wav          # as fast as the model goes

Each committed stretch of words is printed as `[start - end] text` on the stream's clock, with its
latency: the seconds from the end of its last word in the audio to the moment it was committed
(with --simulate_realtime and --microphone; fed as fast as possible there is no real-time clock).
Words are committed once two successive decodes agree on them (LocalAgreement-2); a decode whose
audio ends in a pause of --pause_commit_s, and a pause of --min_silence_s, commit the rest of the
utterance (utils/inference/streaming.py).
"""
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

from utils.apps.recorder import microphone_chunks
from utils.core.cli import guarded, parse_args, print_config
from utils.core.errors import UsageError
from utils.core.languages import to_language_code
from utils.inference.backends.ct2 import COMPUTE_TYPES
from utils.inference.registry import default_model, load_transcriber
from utils.inference.streaming import (
    StreamingFlags,
    StreamingTranscriber,
    TimedEvent,
    file_chunks,
    run_stream,
)


@dataclass
class InferStreamArguments(StreamingFlags):
    audio_path: Optional[str] = field(default=None, metadata={
        "help": "audio or video file to stream (anything infer_ct2.py reads); or --microphone"})
    microphone: bool = field(default=False, metadata={"help": "stream the default microphone until Ctrl+C"})
    simulate_realtime: bool = field(default=False, metadata={
        "help": "play --audio_path at real time, chunk by chunk, as a microphone would deliver it"})
    chunk_s: float = field(default=1.0, metadata={
        "help": "seconds of audio per chunk, and of new audio between two decodes"})
    model_path: str = field(default=default_model("ct2"), metadata={
        "help": "CTranslate2 model folder (streaming needs word timestamps, which the ct2 backend gives)"})
    language: Optional[str] = field(default=None, metadata={
        "help": "spoken language, name or code; unset = detect on the first decode and keep it"})
    task: str = field(default="transcribe", metadata={"help": "transcribe, or translate to English",
                                                      "choices": ("transcribe", "translate")})
    initial_prompt: Optional[str] = field(default=None, metadata={
        "help": "text that conditions the decoding (names, punctuation style)"})
    use_gpu: bool = field(default=False, metadata={"help": "run on the first CUDA GPU"})
    compute_type: str = field(default="default", metadata={
        "help": "CTranslate2 compute type; default = as stored", "choices": COMPUTE_TYPES})
    use_int8: bool = field(default=False, metadata={
        "help": "shorthand for --compute_type=int8 (CPU) or int8_float16 (GPU)"})
    cpu_threads: int = field(default=0, metadata={"help": "CPU threads; 0 = CTranslate2's default"})
    local_files_only: bool = field(default=True, metadata={
        "help": "never contact the Hugging Face hub; False lets --model_path be a hub name"})

    def __post_init__(self):
        if self.microphone == bool(self.audio_path):
            raise UsageError("give either --audio_path=FILE or --microphone, not both or neither")
        if self.microphone and self.simulate_realtime:
            raise UsageError("--simulate_realtime plays a file; a microphone is real time already")
        if self.chunk_s <= 0:
            raise UsageError(f"--chunk_s must be above 0, got {self.chunk_s}")
        if self.pause_commit_s <= 0:
            raise UsageError(f"--pause_commit_s must be above 0 (above --min_silence_s turns it off), "
                             f"got {self.pause_commit_s}")
        if self.use_int8:
            if self.compute_type != "default":
                raise UsageError(f"--use_int8 and --compute_type={self.compute_type} contradict each other; "
                                 f"give one of them")
            self.compute_type = "int8_float16" if self.use_gpu else "int8"


def commit_line(timed: TimedEvent) -> str:
    event = timed.event
    latency = f"  (latency {timed.latency_s:.2f} s)" if timed.latency_s is not None else ""
    return f"[{event.start:.2f} - {event.end:.2f}] {event.text.strip()}{latency}"


def open_microphone():
    """A started Recorder on the default microphone; UsageError in one sentence when there is none."""
    from utils.apps.recorder import MicrophoneError, Recorder

    recorder = Recorder()
    try:
        recorder.start()
    except MicrophoneError as exc:
        reason = str(exc).split(":")[0] if str(exc).startswith("no microphone") else str(exc)
        raise UsageError(f"--microphone: {reason}; connect one, or stream a file with --audio_path") from None
    return recorder


def stream(args: InferStreamArguments) -> int:
    print_config("infer_stream.py configuration", args)
    to_language_code(args.language)
    # A missing file or microphone fails before the slow model load.
    if args.audio_path:
        from utils.core.audio import load_audio

        audio = load_audio(args.audio_path)
    else:
        open_microphone().stop()
    options = args.streaming_options(language=args.language, task=args.task, min_chunk_s=args.chunk_s,
                                     initial_prompt=args.initial_prompt)
    options.check()     # a bad combination fails before the slow model load
    transcriber = load_transcriber("ct2", args.model_path, use_gpu=args.use_gpu, compute_type=args.compute_type,
                                   cpu_threads=args.cpu_threads, local_files_only=args.local_files_only)
    live = StreamingTranscriber(transcriber, options)
    realtime = args.simulate_realtime or args.microphone
    started = time.monotonic()
    if args.microphone:
        chunks = microphone_chunks(args.chunk_s, open_microphone())
        print("listening; press Ctrl+C to stop", flush=True)
    else:
        chunks = file_chunks(audio, args.chunk_s, realtime=args.simulate_realtime, started=started)

    def show(timed: TimedEvent) -> None:
        if timed.event.kind == "commit":
            print(commit_line(timed), flush=True)

    try:
        events = run_stream(live, chunks, started, show, realtime=realtime)
    except KeyboardInterrupt:
        events = None
        for event in live.flush():
            if event.kind == "commit":
                print(commit_line(TimedEvent(event, time.monotonic(), None)), flush=True)
    elapsed = time.monotonic() - started
    latencies = [t.latency_s for t in events or [] if t.event.kind == "commit" and t.latency_s is not None]
    shown = f"; median commit latency {statistics.median(latencies):.2f} s" if latencies else ""
    print(f"streamed {live.received_s:.1f} s of audio in {elapsed:.1f} s: {len(live.committed)} words "
          f"committed, {live.decodes} decodes{shown}", flush=True)
    return 0


def main(argv=None) -> int:
    args = parse_args(InferStreamArguments, argv, description=__doc__)
    return guarded(lambda: stream(args))


if __name__ == "__main__":
    sys.exit(main())
