"""Throughput and latency of the real server (infer_server.py) under concurrent clients.

    python tools/benchmark_server.py --workers=1,2 --requests=24 --concurrency=4 --output_prefix=docs/benchmark_server

For each `--workers` value, and each `--batch_requests` value (one worker thread per waiting
request, their clips decoded together: utils/apps/server/batching.py) with each `--batch_window_s`,
the server is started on a free loopback port, warmed up with one
request, then `--concurrency` client threads send `--requests` uploads of `--audio_path` in total
(bounded load: the run stops by itself). Reported: requests per second, p50/p95 latency. The CPU
threads are shared out so that workers x threads = `--total_threads`, otherwise more workers
would also mean more threads and the comparison would measure oversubscription. Rounds are
interleaved and the table shows medians.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from utils.bench.report import (  # noqa: E402
    command_line,
    machine_description,
    pyplot,
    save_figure,
    write_readme_section,
)
from utils.bench.server_process import ServerProcess  # noqa: E402
from utils.core.cli import guarded, parse_args, print_config  # noqa: E402
from utils.core.errors import UsageError, UserError  # noqa: E402
from utils.core.files import write_json_atomic, write_text_atomic  # noqa: E402
from utils.inference.registry import default_model  # noqa: E402

BACKEND = "ct2"     # the engine whose --num_workers the benchmark compares


@dataclass
class ServerBenchmarkArguments:
    model_path: str = field(default=default_model(BACKEND), metadata={
        "help": "CTranslate2 model folder the server loads"})
    audio_path: str = field(default="dataset/audio/en_test_0001.flac", metadata={
        "help": "the upload every request sends"})
    language: str = field(default="en", metadata={"help": "language the requests ask for (skips detection)"})
    compute_type: str = field(default="int8", metadata={"help": "CTranslate2 compute type of the server"})
    workers: str = field(default="1,2", metadata={"help": "comma-separated --num_workers values to compare"})
    batch_requests: str = field(default="", metadata={
        "help": "comma-separated infer_server.py --batch_requests values to compare as well (one engine call "
                "at a time with all --total_threads); empty = none"})
    batch_window_s: str = field(default="5", metadata={
        "help": "comma-separated --batch_window_s values of the --batch_requests rows (0 = Whisper's 30 s window)"})
    total_threads: int = field(default=os.cpu_count() or 1, metadata={
        "help": "CPU threads shared by all workers (each worker gets total_threads // workers, at least 1)"})
    requests: int = field(default=24, metadata={"help": "requests per measurement"})
    concurrency: int = field(default=4, metadata={"help": "client threads sending at the same time"})
    repeats: int = field(default=3, metadata={"help": "interleaved rounds; the table shows medians"})
    window_error: Optional[str] = field(default=None, metadata={
        "help": "also score --batch_requests' shorter encoder windows: a jsonlines test set (e.g. "
                "dataset/en_test.jsonl) decoded alone and in batches at each --batch_window_s, in this process"})
    startup_timeout: float = field(default=180.0, metadata={"help": "seconds to wait for the server's /health"})
    output_prefix: Optional[str] = field(default=None, metadata={
        "help": "write <prefix>.md, <prefix>.json and <prefix>.png"})
    readme: Optional[str] = field(default=None, metadata={
        "help": "also put the table, the goal and the chart in this README's 'speed-server' section "
                "(between its marker comments)"})

    def __post_init__(self):
        try:
            values = [int(value) for value in self.workers.split(",") if value.strip()]
        except ValueError:
            raise UsageError(f"--workers: expected comma-separated integers, got {self.workers!r}") from None
        if not values or min(values) < 1:
            raise UsageError(f"--workers: every value must be at least 1, got {self.workers!r}")
        try:
            batches = [int(v) for v in self.batch_requests.split(",") if v.strip()]
            windows = [float(v) for v in self.batch_window_s.split(",") if v.strip()]
        except ValueError:
            raise UsageError("--batch_requests and --batch_window_s: expected comma-separated numbers") from None
        if any(v < 2 for v in batches) or any(v < 0 for v in windows) or (batches and not windows):
            raise UsageError("--batch_requests: every value must be at least 2; --batch_window_s: 0 or more")
        for name in ("total_threads", "requests", "concurrency", "repeats"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name} must be at least 1, got {getattr(self, name)}")

    @property
    def worker_counts(self) -> list[int]:
        return [int(value) for value in self.workers.split(",") if value.strip()]

    @property
    def setups(self) -> list[tuple[int, int, float]]:
        """(num_workers, batch_requests, batch_window_s) of every row: worker rows, then batching rows."""
        batches = [int(v) for v in self.batch_requests.split(",") if v.strip()]
        windows = [float(v) for v in self.batch_window_s.split(",") if v.strip()]
        return [(workers, 0, 0.0) for workers in self.worker_counts] + \
            [(1, batch, window) for batch in batches for window in windows]


def threads_of(args: ServerBenchmarkArguments, setup: tuple[int, int, float]) -> int:
    workers, batch, _ = setup
    # A batching server runs one engine call at a time: it gets every thread.
    return args.total_threads if batch else max(1, args.total_threads // workers)


def setup_label(setup: tuple[int, int, float]) -> str:
    workers, batch, window = setup
    if not batch:
        return f"num_workers={workers}"
    return f"batch_requests={batch}, window {'30 s' if window == 0 else f'clip+{window:g} s'}"


def start_server(args: ServerBenchmarkArguments, setup: tuple[int, int, float], threads: int,
                 log_path: str) -> ServerProcess:
    """infer_server.py in its own process on loopback, ready; the caller stops it (never left running)."""
    workers, batch, window = setup
    server = ServerProcess(["--host=127.0.0.1", "--log_level=warning", f"--backend={BACKEND}",
                            f"--model_path={args.model_path}", f"--compute_type={args.compute_type}",
                            f"--num_workers={workers}", f"--cpu_threads={threads}", f"--language={args.language}",
                            f"--max_queue={args.concurrency}",
                            *([f"--batch_requests={batch}", f"--batch_window_s={window:g}"] if batch else [])],
                           log_path)
    try:
        return server.wait_ready(args.startup_timeout)
    except RuntimeError:
        server.stop()
        raise UserError(f"infer_server.py did not start and answer /health within {args.startup_timeout:.0f} s; "
                        f"see {log_path} (or raise --startup_timeout)") from None


def one_request(url: str, audio: bytes, name: str) -> tuple[float, str]:
    import requests

    began = time.perf_counter()
    response = requests.post(url + "/recognition", files={"audio": (name, audio)}, timeout=600)
    latency = time.perf_counter() - began
    if response.status_code != 200:
        raise UserError(f"infer_server.py answered {response.status_code}: {response.text[:200]}")
    text = " ".join(item["text"] for item in response.json()["results"])
    return latency, text


def measure(server: ServerProcess, audio: bytes, name: str, requests_total: int, concurrency: int) -> dict:
    one_request(server.url, audio, name)   # warm-up, not counted
    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as clients:
        results = list(clients.map(lambda _: one_request(server.url, audio, name), range(requests_total)))
    wall = time.perf_counter() - began
    latencies = sorted(latency for latency, _ in results)
    texts = {text for _, text in results}
    return {"requests": requests_total, "seconds": wall, "requests_per_s": requests_total / wall,
            "p50_s": statistics.median(latencies), "p95_s": percentile(latencies, 95),
            "distinct_texts": len(texts), "text": sorted(texts)[0]}


def percentile(sorted_values: list[float], q: float) -> float:
    # Nearest-rank percentile: with a few dozen requests an interpolated value would suggest
    # a precision the sample does not have.
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


def bar_chart(rows: list[dict], path: str, title: str) -> None:
    plt = pyplot()
    labels = [row["label"].replace(", ", "\n") for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    left.bar(labels, [row["requests_per_s"] for row in rows], color="#1f77b4")
    left.set_ylabel("requests / s (median)")
    width = 0.35
    positions = range(len(rows))
    right.bar([p - width / 2 for p in positions], [row["p50_s"] for row in rows], width, label="p50")
    right.bar([p + width / 2 for p in positions], [row["p95_s"] for row in rows], width, label="p95")
    right.set_xticks(list(positions), labels)
    for axes in (left, right):
        axes.tick_params(axis="x", labelsize=7)
    right.set_ylabel("latency s (median of rounds)")
    right.legend()
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)


def run_rounds(args: ServerBenchmarkArguments, audio: bytes, name: str) -> dict[tuple, list]:
    """setup -> its measurements, one server process each, rounds interleaved."""
    from tqdm import tqdm

    logs = tempfile.mkdtemp(prefix="benchmark-server-")
    runs: dict[tuple, list] = {setup: [] for setup in args.setups}
    with tqdm(total=len(runs) * args.repeats, desc="server runs", file=sys.stderr) as bar:
        for round_index in range(args.repeats):
            for index, setup in enumerate(runs):
                threads = threads_of(args, setup)
                server = start_server(args, setup, threads, os.path.join(logs, f"server-{index}-{round_index}.log"))
                try:
                    result = measure(server, audio, name, args.requests, args.concurrency)
                finally:
                    server.stop()
                result["threads_per_worker"] = threads
                result["load"] = os.getloadavg()[0]
                runs[setup].append(result)
                bar.write(f"round {round_index + 1} {setup_label(setup)} x {threads} threads: "
                          f"{result['requests_per_s']:.2f} req/s, p50 {result['p50_s']:.2f} s, "
                          f"p95 {result['p95_s']:.2f} s, load {result['load']:.1f}")
                bar.update(1)
    return runs


def summarise(runs: dict[tuple, list]) -> list[dict]:
    return [{"workers": setup[0], "batch_requests": setup[1], "batch_window_s": setup[2], "label": setup_label(setup),
             "threads_per_worker": results[0]["threads_per_worker"],
             "requests_per_s": statistics.median(r["requests_per_s"] for r in results),
             "p50_s": statistics.median(r["p50_s"] for r in results),
             "p95_s": statistics.median(r["p95_s"] for r in results),
             "rounds": [round(r["requests_per_s"], 3) for r in results],
             "texts": sorted({r["text"] for r in results}),
             "text": results[0]["text"]} for setup, results in runs.items()]


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "| --num_workers | threads per worker | requests/s | p50 latency s | p95 latency s | "
             "rounds (req/s) | --batch_requests | answer |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        batch = f"{row['batch_requests']}, {row['label'].split(', ')[1]}" if row["batch_requests"] else "off"
        lines.append(f"| {row['workers']} | {row['threads_per_worker']} | {row['requests_per_s']:.2f} | "
                     f"{row['p50_s']:.2f} | {row['p95_s']:.2f} | {', '.join(f'{v:.2f}' for v in row['rounds'])} | "
                     f"{batch} | {' / '.join(row['texts'])} |")
    return "\n".join(lines) + "\n"


def goals(rows: list[dict]) -> list[str]:
    if len(rows) < 2:
        return []
    first = rows[0]
    lines = []
    plain = [row for row in rows[1:] if not row["batch_requests"]]
    if plain:
        best = max(plain, key=lambda row: row["requests_per_s"])
        lines.append(f"num_workers={best['workers']} gives {best['requests_per_s'] / first['requests_per_s']:.2f}x "
                     f"the throughput of num_workers={first['workers']} (goal 1.5x)")
    for row in rows:
        if row["batch_requests"]:
            lines.append(f"{row['label']} gives {row['requests_per_s'] / first['requests_per_s']:.2f}x the throughput "
                         f"of {first['label']} (goal 2x), p95 {row['p95_s']:.2f} s vs {first['p95_s']:.2f} s")
    return lines


def window_errors(args: ServerBenchmarkArguments) -> list[dict]:
    """WER (Whisper's normaliser) and seconds of --window_error's clips decoded one by one (the plain
    path) and by utils/apps/server/batching.py in batches of --batch_requests at each window."""
    import json
    from concurrent.futures import ThreadPoolExecutor

    from utils.apps.server.batching import RequestBatcher
    from utils.core.audio import load_audio
    from utils.core.metrics import error_rate
    from utils.inference.registry import load_transcriber
    from utils.inference.transcriber import TranscribeOptions

    with open(args.window_error, encoding="utf-8") as handle:
        items = [json.loads(line) for line in handle if line.strip()]
    clips = [load_audio(os.path.join(REPO, item["audio"]["path"])) for item in items]
    references = [item["sentence"] for item in items]
    transcriber = load_transcriber(BACKEND, args.model_path, compute_type=args.compute_type,
                                   cpu_threads=args.total_threads)
    options = TranscribeOptions(language=args.language, temperature_increment_on_fallback=0.0)
    batch = max([int(v) for v in args.batch_requests.split(",") if v.strip()] or [8])

    def texts_of(transcribe) -> tuple[list[str], float]:
        began = time.perf_counter()
        with ThreadPoolExecutor(batch) as pool:
            texts = list(pool.map(lambda clip: " ".join(s.text for s in transcribe(clip)[0]), clips))
        return texts, time.perf_counter() - began

    lock = threading.Lock()

    def alone(clip):
        with lock:   # one at a time, as one plain worker decodes them
            segments, info = transcriber.transcribe(clip, options)
            return list(segments), info

    rows = []
    windows = sorted({float(v) for v in args.batch_window_s.split(",") if v.strip()})
    for label, window in [("alone, 30 s window", None)] + [
            (f"batched by {batch}, window {'30 s' if w == 0 else f'clip+{w:g} s'}", w) for w in windows]:
        if window is None:
            texts, seconds = texts_of(alone)
        else:
            batcher = RequestBatcher(transcriber, batch, max_wait_s=0.2, window_s=window)
            texts, seconds = texts_of(lambda clip: batcher.transcribe(clip, options))
        result = error_rate(references, texts, "wer", language=args.language)
        rows.append({"label": label, "wer": result.value, "seconds": seconds, "clips": len(clips)})
        print(f"window check: {label}: WER {result.value:.1%} in {seconds:.1f} s", flush=True)
    return rows


def window_markdown(rows: list[dict], path: str) -> str:
    lines = [f"Error rate of the batched encoder windows: the {rows[0]['clips']} clips of `{path}` "
             "(Whisper's English normaliser), in this process.", "",
             "| decoding | WER | seconds for all clips |", "|---|---|---|"]
    lines += [f"| {row['label']} | {100 * row['wer']:.1f} % | {row['seconds']:.1f} |" for row in rows]
    return "\n".join(lines) + "\n"


def check_inputs(args: ServerBenchmarkArguments) -> None:
    if not os.path.isfile(os.path.join(args.model_path, "model.bin")):
        raise UserError(f"--model_path {args.model_path}: not a CTranslate2 model folder (no model.bin)")
    if not os.path.isfile(args.audio_path):
        raise UserError(f"--audio_path {args.audio_path}: file not found")
    if args.window_error and not os.path.isfile(args.window_error):
        raise UserError(f"--window_error {args.window_error}: file not found")


def benchmark(args: ServerBenchmarkArguments, command: str) -> None:
    check_inputs(args)
    print_config("benchmark_server.py configuration", args)
    with open(args.audio_path, "rb") as file:
        audio = file.read()
    name = os.path.basename(args.audio_path)
    load_before = os.getloadavg()
    runs = run_rounds(args, audio, name)
    load_after = os.getloadavg()

    rows = summarise(runs)
    header = (f"`infer_server.py --backend={BACKEND} --compute_type={args.compute_type}` on loopback, "
              f"{args.requests} requests of `{name}` from {args.concurrency} concurrent clients, "
              f"median of {args.repeats} interleaved rounds. Machine: {machine_description()}; "
              f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after.")
    table = markdown(rows, header)
    if args.window_error:
        windows = window_errors(args)
        table += "\n" + window_markdown(windows, args.window_error)
    summary = goals(rows)
    print("\n" + table)
    for line in summary:
        print(line)
    if args.output_prefix:
        write_text_atomic(args.output_prefix + ".md", table + "\n" + "".join(f"- {line}\n" for line in summary))
        write_json_atomic(args.output_prefix + ".json", {"header": header, "rows": rows, "goals": summary,
                                                         "runs": {setup_label(k): v for k, v in runs.items()}},
                          indent=1)
        bar_chart(rows, args.output_prefix + ".png", f"infer_server.py, {name}, {args.concurrency} clients")
        print(f"wrote {args.output_prefix}.md, .json and .png")
    if args.readme:
        write_readme_section(args.readme, "speed-server", command, table, summary,
                             args.output_prefix + ".png" if args.output_prefix else None)
    best = max(rows, key=lambda row: row["requests_per_s"])
    print(f"server benchmark: {sum(len(r) for r in runs.values())} measurements of {args.requests} requests; "
          f"best: {best['label']} at {best['requests_per_s']:.2f} requests/s")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(ServerBenchmarkArguments, argv, description=__doc__)
    return guarded(lambda: benchmark(args, command_line("tools/benchmark_server.py", argv)))


if __name__ == "__main__":
    sys.exit(main())
