"""Live transcription measured: latency, accuracy against offline decoding, CPU, concurrent streams.

    python tools/benchmark_streaming.py --model_path=models/whisper-base-ct2 --compute_type=int8 \\
        --english_s=90 --streams 1 2 3 --output_prefix=docs/benchmark_streaming

Long English is built from the shipped clips (dataset/en_test.jsonl, 0.6 s pauses between them);
Mandarin is dataset/test_long.wav (espeak-ng, 183 s) when --mandarin is on. Each stream plays its
audio at real time in chunks of --chunk_s on its own thread (utils/inference/streaming.py); audio
that arrives while a decode runs is fed in one piece at the next one, as the server does, so a
stream that cannot keep up shows as a growing lag rather than as a slower clock. N concurrent
streams share one model loaded with N CTranslate2 workers.

Per row: committed-word latency (median, p90: the wall time of a word's commit minus the moment
its end was spoken), partial latency (median: a partial's wall time minus its last word's end),
policy latency (median and p90 seconds of audio fed after a word's end until its commit, the
chunks fed one by one without a clock: what chunking, agreement and the VAD's wait cost on a
machine that decodes instantly), the CPU seconds one decode takes there, the median wall time of
one decode in the real-time runs, error rate (WER for English, CER for Mandarin) of the committed
text against the same model's offline transcript (same --beam_size) and against the reference,
the offline one's against the reference, CPU seconds per second of audio per stream, and the lag
(wall time after the audio's end until the last commit). A stream holds real time when its lag
at the end stays under --realtime_lag_s.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from utils.bench.report import command_line, machine_description  # noqa: E402
from utils.core.audio import SAMPLE_RATE, load_audio  # noqa: E402
from utils.core.cli import guarded, parse_args, print_config  # noqa: E402
from utils.core.errors import UsageError  # noqa: E402
from utils.core.files import write_json_atomic, write_text_atomic  # noqa: E402
from utils.core.metrics import error_rate  # noqa: E402
from utils.inference.streaming import (  # noqa: E402
    StreamingFlags,
    StreamingOptions,
    StreamingTranscriber,
    file_chunks,
    run_stream,
)
from utils.inference.transcriber import TranscribeOptions  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class BenchmarkArguments(StreamingFlags):
    model_path: str = field(default="models/whisper-base-ct2", metadata={"help": "CTranslate2 model folder"})
    compute_type: str = field(default="int8", metadata={"help": "CTranslate2 compute type"})
    chunk_s: float = field(default=1.0, metadata={"help": "seconds per chunk (and between decodes)"})
    english_s: float = field(default=90.0, metadata={"help": "seconds of long English to build"})
    english_path: str = field(default="", metadata={
        "help": "stream this English recording instead (e.g. dataset/en_long.flac); needs --english_reference_path"})
    english_reference_path: str = field(default="", metadata={"help": "the text read in --english_path"})
    mandarin_model_path: str = field(default="", metadata={
        "help": "CTranslate2 model for the Mandarin row (e.g. make demo's fine-tune); default --model_path"})
    beam_size: int = field(default=StreamingOptions.beam_size, metadata={
        "help": "beam width of the stream's decodes and of the offline transcript it is compared with"})
    mandarin: bool = field(default=True, metadata={
        "help": "also stream dataset/test_long.wav (Mandarin, one stream)"})
    mandarin_s: float = field(default=90.0, metadata={"help": "seconds of dataset/test_long.wav streamed"})
    policy_only: bool = field(default=False, metadata={
        "help": "only the pass without a clock (latency in audio seconds, error rates): minutes, any load"})
    streams: list[str] = field(default_factory=lambda: ["1", "2", "3"], metadata={
        "help": "numbers of concurrent English streams, one row each"})
    realtime_lag_s: float = field(default=5.0, metadata={
        "help": "a stream holds real time when its last commit comes less than this after the audio ends"})
    output_prefix: str = field(default="docs/benchmark_streaming", metadata={
        "help": "writes PREFIX.json and PREFIX.md (the table)"})

    def __post_init__(self):
        try:
            self.stream_counts = [int(n) for n in self.streams]
        except ValueError:
            raise UsageError(f"--streams takes whole numbers, got {' '.join(self.streams)}") from None
        if bool(self.english_path) != bool(self.english_reference_path):
            raise UsageError("--english_path and --english_reference_path go together")
        if min(self.stream_counts) < 1 or self.chunk_s <= 0 or self.english_s <= 0 or self.beam_size < 1:
            raise UsageError("--streams and --beam_size must be at least 1, --chunk_s and --english_s above 0")


def long_english(seconds: float) -> tuple[np.ndarray, str]:
    with open(os.path.join(REPO, "dataset", "en_test.jsonl"), encoding="utf-8") as handle:
        samples = [json.loads(line) for line in handle if line.strip()]
    pause = np.zeros(int(0.6 * SAMPLE_RATE), dtype=np.float32)
    parts, sentences, total = [], [], 0
    while total < seconds * SAMPLE_RATE:
        sample = samples[len(sentences) % len(samples)]
        parts += [load_audio(os.path.join(REPO, sample["audio"]["path"])), pause]
        sentences.append(sample["sentence"])
        total += len(parts[-2]) + len(pause)
    return np.concatenate(parts), " ".join(sentences)


def mandarin(seconds: float) -> tuple[np.ndarray, str]:
    """The first `seconds` of test_long.wav cut after a whole line of test_long.txt's reference:
    the file reads the lines one after another with pauses, so it is cut at the pause nearest."""
    audio = load_audio(os.path.join(REPO, "dataset", "test_long.wav"))
    with open(os.path.join(REPO, "dataset", "test_long.txt"), encoding="utf-8") as handle:
        lines = [line.strip() for line in handle if line.strip()]
    if seconds * SAMPLE_RATE >= len(audio):
        return audio, "".join(lines)
    # Lines take time in proportion to their characters, near enough to find the pause.
    total, chars, kept = len(audio) / SAMPLE_RATE, sum(len(line) for line in lines), []
    for line in lines:
        if (sum(len(k) for k in kept) + len(line)) / chars * total > seconds:
            break
        kept.append(line)
    cut = sum(len(k) for k in kept) / chars * total
    window = audio[int((cut - 1.0) * SAMPLE_RATE):int((cut + 1.0) * SAMPLE_RATE)]
    frame = 320
    energy = [float(np.abs(window[i:i + frame]).mean()) for i in range(0, len(window) - frame, frame)]
    end = int((cut - 1.0) * SAMPLE_RATE) + int(np.argmin(energy)) * frame
    return audio[:end], "".join(kept)


def streaming_options(args: BenchmarkArguments, language: str) -> StreamingOptions:
    return args.streaming_options(language=language, min_chunk_s=args.chunk_s)


@dataclass
class StreamResult:
    text: str = ""
    commit_latencies: list = field(default_factory=list)
    partial_latencies: list = field(default_factory=list)
    decode_walls: list = field(default_factory=list)
    lag_s: float = 0.0
    decodes: int = 0


def play(transcriber, audio: np.ndarray, options: StreamingOptions, result: StreamResult,
         start_at: float) -> None:
    """One stream at real time (run_stream reads the chunks on the clock on its own thread)."""
    stream = StreamingTranscriber(transcriber, options)
    chunk_s = options.min_chunk_s

    def note(timed):
        event = timed.event
        if event.kind == "commit":
            result.commit_latencies += [timed.wall - (start_at + word.end) for word in event.words]
        elif event.kind == "partial" and event.words:
            result.partial_latencies.append(timed.latency_s)

    run_stream(stream, file_chunks(audio, chunk_s, realtime=True, started=start_at), start_at, note)
    result.lag_s = time.monotonic() - (start_at + len(audio) / SAMPLE_RATE)
    result.text, result.decodes, result.decode_walls = stream.committed_text, stream.decodes, stream.decode_walls


def model_for(args: BenchmarkArguments, language: str) -> str:
    return args.mandarin_model_path if language == "zh" and args.mandarin_model_path else args.model_path


def percentile(values: list, q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def measure(args: BenchmarkArguments, name: str, audio: np.ndarray, reference: str, language: str,
            streams: int, offline: str) -> dict:
    from utils.inference.registry import load_transcriber

    cpu_threads = max(1, (os.cpu_count() or 2) // streams)
    transcriber = load_transcriber("ct2", model_for(args, language), compute_type=args.compute_type,
                                   num_workers=streams, cpu_threads=cpu_threads)
    results = [StreamResult() for _ in range(streams)]
    start = time.monotonic() + 0.5
    cpu_before, wall_before = time.process_time(), time.monotonic()
    # Streams start a fraction of a chunk apart, as independent speakers would.
    threads = [threading.Thread(target=play, args=(transcriber, audio, streaming_options(args, language), result,
                                                   start + i * args.chunk_s / streams))
               for i, result in enumerate(results)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu = time.process_time() - cpu_before
    audio_s = len(audio) / SAMPLE_RATE
    metric = metric_for(language)
    commits = [x for r in results for x in r.commit_latencies]
    partials = [x for r in results for x in r.partial_latencies]
    row = {
        "audio": name, "seconds": round(audio_s, 1), "streams": streams, "chunk_s": args.chunk_s,
        "metric": metric,
        "commit_latency_median_s": round(statistics.median(commits), 2) if commits else None,
        "commit_latency_p90_s": round(percentile(commits, 90), 2),
        "partial_latency_median_s": round(statistics.median(partials), 2) if partials else None,
        "decode_wall_median_s": round(statistics.median(x for r in results for x in r.decode_walls), 2),
        "committed_vs_offline": round(statistics.mean(rate(language, offline, r.text) for r in results), 4),
        "committed_vs_reference": round(statistics.mean(rate(language, reference, r.text) for r in results), 4),
        "offline_vs_reference": rate(language, reference, offline),
        "cpu_s_per_audio_s_per_stream": round(cpu / audio_s / streams, 3),
        "lag_s_max": round(max(r.lag_s for r in results), 2),
        "decodes_per_stream": round(statistics.mean(r.decodes for r in results), 1),
        "wall_s": round(time.monotonic() - wall_before, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    row["real_time"] = row["lag_s_max"] < args.realtime_lag_s
    print(json.dumps(row), flush=True)
    return row


def offline_and_policy(args: BenchmarkArguments, audio: np.ndarray, reference: str,
                       language: str) -> tuple[str, dict]:
    """The offline transcript, and the policy's own latency and accuracy: chunks fed one by one
    without a clock, so a word's latency is the audio fed after its end until its commit (chunking,
    agreement and the VAD's wait; what a machine that decodes instantly would see), with the CPU one
    decode takes. Its committed text is the real-time runs' on a machine that keeps up."""
    from utils.inference.registry import load_transcriber

    transcriber = load_transcriber("ct2", model_for(args, language), compute_type=args.compute_type)
    segments, _ = transcriber.transcribe(audio, TranscribeOptions(language=language, beam_size=args.beam_size))
    offline = " ".join(segment.text for segment in segments)
    stream = StreamingTranscriber(transcriber, streaming_options(args, language))
    step, latencies = int(args.chunk_s * SAMPLE_RATE), []
    cpu = time.process_time()
    for begin in range(0, len(audio) + step, step):
        events = stream.feed(audio[begin:begin + step]) if begin < len(audio) else stream.flush()
        latencies += [e.received_s - w.end for e in events if e.kind == "commit" for w in e.words]
    policy = {"policy_latency_median_s": round(statistics.median(latencies), 2),
              "policy_latency_p90_s": round(percentile(latencies, 90), 2),
              "cpu_s_per_decode": round((time.process_time() - cpu) / max(stream.decodes, 1), 3),
              "policy_vs_offline": rate(language, offline, stream.committed_text),
              "policy_vs_reference": rate(language, reference, stream.committed_text),
              "offline_vs_reference": rate(language, reference, offline)}
    return offline, policy


def metric_for(language: str) -> str:
    return "cer" if language == "zh" else "wer"


def rate(language: str, reference: str, hypothesis: str) -> float:
    return round(error_rate([reference], [hypothesis], metric_for(language), language=language).value, 4)


def policy_table(rows: list[dict]) -> str:
    lines = ["| audio | policy latency median / p90 (s) | CPU s per decode | committed vs offline | "
             "committed vs reference | offline vs reference |", "|---|---|---|---|---|---|"]
    for r in rows:
        metric = r["metric"].upper()
        lines.append(f"| {r['audio']} ({r['seconds']:g} s) | {r['policy_latency_median_s']} / "
                     f"{r['policy_latency_p90_s']} | {r['cpu_s_per_decode']} | "
                     f"{metric} {r['policy_vs_offline']:.1%} | {metric} {r['policy_vs_reference']:.1%} | "
                     f"{metric} {r['offline_vs_reference']:.1%} |")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    lines = ["| audio | streams | commit latency median / p90 (s) | partial latency median (s) | "
             "policy latency median / p90 (s) | CPU s per decode | decode wall median (s) | "
             "committed vs offline | committed vs reference | offline vs reference | CPU s per audio s "
             "per stream | lag at end (s) | real time | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        metric = r["metric"].upper()
        lines.append(
            f"| {r['audio']} ({r['seconds']:g} s) | {r['streams']} | {r['commit_latency_median_s']} / "
            f"{r['commit_latency_p90_s']} | {r['partial_latency_median_s']} | "
            f"{r['policy_latency_median_s']} / {r['policy_latency_p90_s']} | {r['cpu_s_per_decode']} | "
            f"{r['decode_wall_median_s']} | "
            f"{metric} {r['committed_vs_offline']:.1%} | {metric} {r['committed_vs_reference']:.1%} | "
            f"{metric} {r['offline_vs_reference']:.1%} | {r['cpu_s_per_audio_s_per_stream']} | "
            f"{r['lag_s_max']} | {'yes' if r['real_time'] else 'no'} | {r['load_average_1min']} |")
    return "\n".join(lines)


def run(args: BenchmarkArguments, argv) -> int:
    print_config("benchmark_streaming.py configuration", args)
    if args.english_path:
        with open(args.english_reference_path, encoding="utf-8") as handle:
            english = (load_audio(args.english_path), handle.read().strip())
    else:
        english = long_english(args.english_s)
    inputs = [("English", *english, "en", args.stream_counts)]
    if args.mandarin:
        inputs.append(("Mandarin", *mandarin(args.mandarin_s), "zh", [1]))
    rows = []
    for name, audio, reference, language, counts in inputs:
        offline, policy = offline_and_policy(args, audio, reference, language)
        print(json.dumps({"audio": name, **policy}), flush=True)
        if args.policy_only:
            rows.append({"audio": name, "seconds": round(len(audio) / SAMPLE_RATE, 1), "metric": metric_for(language),
                         **policy})
            continue
        for streams in counts:
            rows.append({**measure(args, name, audio, reference, language, streams, offline), **policy})
    models = args.model_path + (f" (Mandarin: {args.mandarin_model_path})" if args.mandarin_model_path else "")
    markdown = (f"Streaming benchmark: {models} ({args.compute_type}), chunks of {args.chunk_s:g} s, "
                f"{'greedy' if args.beam_size == 1 else f'beam {args.beam_size}'} (stream and offline), "
                f"on {machine_description()}.\n\n`{command_line('tools/benchmark_streaming.py', argv)}`\n\n"
                f"{policy_table(rows) if args.policy_only else table(rows)}\n")
    write_json_atomic(args.output_prefix + ".json", {"rows": rows, "machine": machine_description()})
    write_text_atomic(args.output_prefix + ".md", markdown)
    print(markdown)
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(BenchmarkArguments, argv, description=__doc__)
    return guarded(lambda: run(args, argv))


if __name__ == "__main__":
    sys.exit(main())
