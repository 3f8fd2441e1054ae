"""Throughput and latency of the real server (infer_server.py) under concurrent clients.

    python tools/benchmark_server.py --workers=1,2 --requests=24 --concurrency=4 --output_prefix=docs/benchmark_server

For each `--workers` value the server is started on a free loopback port, warmed up with one
request, then `--concurrency` client threads send `--requests` uploads of `--audio_path` in total
(bounded load: the run stops by itself). Reported: requests per second, p50/p95 latency. The CPU
threads are shared out so that workers x threads = `--total_threads`, otherwise more workers
would also mean more threads and the comparison would measure oversubscription. Rounds are
interleaved and the table shows medians.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tools.benchmark_inference import machine_description, write_atomic, write_readme_section  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--model_path", default="models/whisper-base-ct2", help="CTranslate2 model folder the server loads")
    add("--audio_path", default="dataset/audio/en_test_0001.flac", help="the upload every request sends")
    add("--language", default="en", help="language the requests ask for (skips detection)")
    add("--compute_type", default="int8", help="CTranslate2 compute type of the server")
    add("--workers", default="1,2", help="comma-separated --num_workers values to compare")
    add("--total_threads", type=int, default=os.cpu_count() or 1,
        help="CPU threads shared by all workers (each worker gets total_threads // workers, at least 1)")
    add("--requests", type=int, default=24, help="requests per measurement")
    add("--concurrency", type=int, default=4, help="client threads sending at the same time")
    add("--repeats", type=int, default=3, help="interleaved rounds; the table shows medians")
    add("--startup_timeout", type=float, default=180.0, help="seconds to wait for the server's /health")
    add("--output_prefix", default=None, help="write <prefix>.md, <prefix>.json and <prefix>.png")
    add("--readme", default=None, help="also put the table, the goal and the chart in this README's "
                                       "'speed-server' section (between its marker comments)")
    return parser


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """infer_server.py in its own process on loopback; stopped (never left running) by `stop`."""

    def __init__(self, args, workers: int, threads: int, log_path: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "w")
        command = [sys.executable, "infer_server.py", f"--port={self.port}", "--log_level=warning",
                   "--backend=ct2", f"--model_path={args.model_path}", f"--compute_type={args.compute_type}",
                   f"--num_workers={workers}", f"--cpu_threads={threads}", f"--language={args.language}",
                   f"--max_queue={args.concurrency}"]
        self.process = subprocess.Popen(command, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"infer_server.py exited with {self.process.returncode}; see {self.log_path}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"infer_server.py did not answer /health within {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def one_request(url: str, audio: bytes, name: str) -> tuple[float, str]:
    import requests

    began = time.perf_counter()
    response = requests.post(url + "/recognition", files={"audio": (name, audio)}, timeout=600)
    latency = time.perf_counter() - began
    if response.status_code != 200:
        raise RuntimeError(f"server answered {response.status_code}: {response.text[:200]}")
    text = " ".join(item["text"] for item in response.json()["results"])
    return latency, text


def measure(server: Server, audio: bytes, name: str, requests_total: int, concurrency: int) -> dict:
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"num_workers={row['workers']}" for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(8, 2.8))
    left.bar(labels, [row["requests_per_s"] for row in rows], color="#1f77b4")
    left.set_ylabel("requests / s (median)")
    width = 0.35
    positions = range(len(rows))
    right.bar([p - width / 2 for p in positions], [row["p50_s"] for row in rows], width, label="p50")
    right.bar([p + width / 2 for p in positions], [row["p95_s"] for row in rows], width, label="p95")
    right.set_xticks(list(positions), labels)
    right.set_ylabel("latency s (median of rounds)")
    right.legend()
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path + ".part.png", dpi=100)
    plt.close(figure)
    os.replace(path + ".part.png", path)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        workers_list = [int(value) for value in args.workers.split(",") if value.strip()]
    except ValueError:
        parser.error(f"--workers: expected comma-separated integers, got {args.workers!r}")
    if not workers_list or min(workers_list) < 1:
        parser.error(f"--workers: every value must be at least 1, got {args.workers!r}")
    for name in ("total_threads", "requests", "concurrency", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not os.path.isfile(os.path.join(args.model_path, "model.bin")):
        parser.error(f"--model_path {args.model_path}: not a CTranslate2 model folder (no model.bin)")
    if not os.path.isfile(args.audio_path):
        parser.error(f"--audio_path {args.audio_path}: file not found")
    print("benchmark_server.py configuration:")
    for name, value in vars(args).items():
        print(f"  {name} = {value!r}")
    with open(args.audio_path, "rb") as file:
        audio = file.read()
    name = os.path.basename(args.audio_path)

    from tqdm import tqdm

    logs = tempfile.mkdtemp(prefix="benchmark-server-")
    load_before = os.getloadavg()
    runs: dict[int, list] = {workers: [] for workers in workers_list}
    with tqdm(total=len(workers_list) * args.repeats, desc="server runs", file=sys.stderr) as bar:
        for round_index in range(args.repeats):
            for workers in workers_list:
                threads = max(1, args.total_threads // workers)
                server = Server(args, workers, threads, os.path.join(logs, f"server-{workers}-{round_index}.log"))
                try:
                    server.wait_ready(args.startup_timeout)
                    result = measure(server, audio, name, args.requests, args.concurrency)
                finally:
                    server.stop()
                result["threads_per_worker"] = threads
                runs[workers].append(result)
                bar.write(f"round {round_index + 1} num_workers={workers} x {threads} threads: "
                          f"{result['requests_per_s']:.2f} req/s, p50 {result['p50_s']:.2f} s, p95 {result['p95_s']:.2f} s")
                bar.update(1)
    load_after = os.getloadavg()

    rows = []
    for workers, results in runs.items():
        rows.append({"workers": workers, "threads_per_worker": results[0]["threads_per_worker"],
                     "requests_per_s": statistics.median(r["requests_per_s"] for r in results),
                     "p50_s": statistics.median(r["p50_s"] for r in results),
                     "p95_s": statistics.median(r["p95_s"] for r in results),
                     "rounds": [round(r["requests_per_s"], 3) for r in results],
                     "text": results[0]["text"]})
    header = (f"`infer_server.py --backend=ct2 --compute_type={args.compute_type}` on loopback, "
              f"{args.requests} requests of `{name}` from {args.concurrency} concurrent clients, "
              f"median of {args.repeats} interleaved rounds. Machine: {machine_description()}; "
              f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after.")
    lines = [header, "", "| --num_workers | threads per worker | requests/s | p50 latency s | p95 latency s | rounds (req/s) |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['workers']} | {row['threads_per_worker']} | {row['requests_per_s']:.2f} | "
                     f"{row['p50_s']:.2f} | {row['p95_s']:.2f} | {', '.join(f'{v:.2f}' for v in row['rounds'])} |")
    table = "\n".join(lines) + "\n"
    summary = []
    if len(rows) > 1:
        first, best = rows[0], max(rows[1:], key=lambda row: row["requests_per_s"])
        summary.append(f"num_workers={best['workers']} gives {best['requests_per_s'] / first['requests_per_s']:.2f}x "
                       f"the throughput of num_workers={first['workers']} (goal 1.5x)")
    print("\n" + table)
    for line in summary:
        print(line)
    if args.output_prefix:
        os.makedirs(os.path.dirname(os.path.abspath(args.output_prefix)), exist_ok=True)
        write_atomic(args.output_prefix + ".md", table + "\n" + "".join(f"- {line}\n" for line in summary))
        write_atomic(args.output_prefix + ".json", json.dumps(
            {"header": header, "rows": rows, "runs": {str(k): v for k, v in runs.items()}, "goals": summary},
            ensure_ascii=False, indent=1))
        bar_chart(rows, args.output_prefix + ".png", f"infer_server.py, {name}, {args.concurrency} clients")
        print(f"wrote {args.output_prefix}.md, .json and .png")
    if args.readme:
        write_readme_section(args.readme, "speed-server", table, summary,
                             args.output_prefix + ".png" if args.output_prefix else None)
    best = max(rows, key=lambda row: row["requests_per_s"])
    print(f"server benchmark: {sum(len(r) for r in runs.values())} measurements of {args.requests} requests; "
          f"best: num_workers={best['workers']} at {best['requests_per_s']:.2f} requests/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
