"""Speed of every inference engine on the same file and model, side by side.

    python tools/benchmark_inference.py --audio_path=dataset/test_long.wav --reference_path=dataset/test_long.txt \\
        --language=zh --ct2_model_path=models/whisper-base-ct2 --repeats=3 --output_prefix=docs/benchmark_inference

Each configuration runs in a fresh process (so its peak memory is its own), configurations are
interleaved round by round (so a change in machine load hits all of them alike), and the table
reports the median of `--repeats` rounds: transcription seconds (model load excluded),
real-time factor, peak resident memory, and CER/WER against the reference text. Two rows are
the libraries' plain baselines the goals compare against: transformers' own sequential
long-form `generate` and faster-whisper's `WhisperModel.transcribe` with default settings.
"""
import json
import multiprocessing
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from transformers import HfArgumentParser  # noqa: E402

from utils.core.audio import (
    duration_of,  # noqa: E402
    load_audio,  # noqa: E402
)
from utils.core.cli import print_config  # noqa: E402
from utils.core.languages import to_language_code  # noqa: E402
from utils.core.metrics import CER_LANGUAGES  # noqa: E402
from utils.inference.transcriber import exit_on_user_error  # noqa: E402

# name -> (engine, settings). "ours" rows go through utils/inference/transcriber.py exactly as infer.py /
# infer_ct2.py do; the two baselines call the libraries directly with their defaults.
CONFIGS = {
    "transformers-generate (baseline)": ("hf-generate", {}),
    "transformers sequential": ("transformers", {"batch_size": 1}),
    "transformers batched": ("transformers", {"batch_size": "batch"}),
    # Without Whisper's temperature fallback: what batching alone gains over generate's own loop.
    "transformers sequential no-fallback": ("transformers", {"batch_size": 1, "fallback": False}),
    "transformers batched no-fallback": ("transformers", {"batch_size": "batch", "fallback": False}),
    # infer.py --use_int8: every linear layer dynamic int8.
    "transformers int8 sequential": ("transformers", {"batch_size": 1, "use_int8": True}),
    "transformers int8 batched": ("transformers", {"batch_size": "batch", "use_int8": True}),
    "transformers int8 batched no-fallback": ("transformers", {"batch_size": "batch", "fallback": False,
                                                               "use_int8": True}),
    # infer.py --bf16: bfloat16 weights and activations (CPUs with AVX512-BF16 or AMX).
    "transformers bf16 sequential": ("transformers", {"batch_size": 1, "dtype": "bfloat16"}),
    "transformers bf16 batched": ("transformers", {"batch_size": "batch", "dtype": "bfloat16"}),
    "transformers bf16 batched no-fallback": ("transformers", {"batch_size": "batch", "fallback": False,
                                                               "dtype": "bfloat16"}),
    "faster-whisper default (baseline)": ("fw-default", {}),
    "ct2 float32 sequential": ("ct2", {"compute_type": "float32"}),
    "ct2 int8 sequential": ("ct2", {"compute_type": "int8"}),
    "ct2 int8 sequential beam5": ("ct2", {"compute_type": "int8", "beam_size": 5}),
    "ct2 int8 sequential vad": ("ct2", {"compute_type": "int8", "vad_filter": True}),
    "ct2 float32 batched": ("ct2", {"compute_type": "float32", "batch_size": "batch"}),
    "ct2 int8 batched": ("ct2", {"compute_type": "int8", "batch_size": "batch"}),
    "ct2 int8 batched vad": ("ct2", {"compute_type": "int8", "batch_size": "batch", "vad_filter": True}),
    "whisper.cpp f16": ("ggml", {}),
}
BASELINE_FW = "faster-whisper default (baseline)"
BASELINE_HF = "transformers-generate (baseline)"


@dataclass
class BenchmarkArguments:
    audio_path: str = field(default="dataset/test_long.wav", metadata={"help": "audio file to transcribe"})
    reference_path: Optional[str] = field(default=None, metadata={
        "help": "text file with the reference transcript; unset = no error rate column"})
    model_path: str = field(default="models/whisper-base", metadata={"help": "transformers model folder"})
    ct2_model_path: Optional[str] = field(default=None, metadata={
        "help": "CTranslate2 folder of the same model; unset = convert model_path into a temp folder"})
    ggml_model_path: Optional[str] = field(default=None, metadata={
        "help": "GGML file of the same model; unset = export model_path into a temp file"})
    configs: str = field(default="all", metadata={
        "help": "comma-separated row names to run (see the table), or 'all': " + ", ".join(CONFIGS)})
    language: Optional[str] = field(default=None, metadata={"help": "language name or code; unset = detect"})
    batch_size: int = field(default=8, metadata={"help": "batch size of the 'batched' rows"})
    threads: int = field(default=2, metadata={
        "help": "CPU threads of our rows and of the transformers baseline (faster-whisper's baseline "
                "keeps its default of 4); 0 = each library's default"})
    repeats: int = field(default=3, metadata={"help": "rounds; the table shows each row's median"})
    limit_s: float = field(default=0, metadata={
        "help": "stop a run after this many seconds and report the row as '> limit' (0 = no limit)"})
    readme: Optional[str] = field(default=None, metadata={
        "help": "also put the table, the goals, the chart and this command in this README's "
                "'speed-inference' section (between its marker comments)"})
    output_prefix: Optional[str] = field(default=None, metadata={
        "help": "write <prefix>.md (table), <prefix>.json (every run) and <prefix>.png (bar chart)"})


def machine_description() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or model
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"


def error_rate_of(reference: str, hypothesis: str, metric: str) -> float:
    from utils.core.metrics import error_rate

    return error_rate([reference], [hypothesis], metric).value


def transcribe_once(engine: str, settings: dict, paths: dict, audio_path: str, language: Optional[str],
                    threads: int) -> dict:
    """One configuration on one file, in this (fresh) process; returns seconds, text and peak memory."""
    audio = load_audio(audio_path)
    if engine == "hf-generate":
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        if threads:
            torch.set_num_threads(threads)
        processor = WhisperProcessor.from_pretrained(paths["transformers"])
        model = WhisperForConditionalGeneration.from_pretrained(paths["transformers"]).eval()
        began = time.perf_counter()
        # transformers' documented long-form recipe: the whole file's features in one generate call.
        long = len(audio) > 30 * 16000
        inputs = processor(audio, sampling_rate=16000, return_tensors="pt", return_attention_mask=True,
                           **(dict(truncation=False, padding="longest") if long else {}))
        kwargs = dict(language=language, task="transcribe") if language else {}
        with torch.inference_mode():
            tokens = model.generate(inputs.input_features, attention_mask=inputs.attention_mask,
                                    return_timestamps=True, **kwargs)
        text = processor.batch_decode(tokens, skip_special_tokens=True)[0]
    elif engine == "fw-default":
        from faster_whisper import WhisperModel

        model = WhisperModel(paths["ct2"], device="cpu")
        began = time.perf_counter()
        segments, _ = model.transcribe(audio, language=language)
        text = " ".join(segment.text.strip() for segment in segments)
    else:
        from utils.inference.registry import load_transcriber
        from utils.inference.transcriber import TranscribeOptions

        settings = dict(settings)
        options = TranscribeOptions(language=language, beam_size=settings.pop("beam_size", 1),
                                    vad_filter=settings.pop("vad_filter", False),
                                    temperature_increment_on_fallback=0.2 if settings.pop("fallback", True) else 0.0)
        if threads:
            settings["cpu_threads"] = threads
        transcriber = load_transcriber(engine, paths[engine], **settings)
        if engine == "ggml":
            transcriber.preload(options.beam_size)   # whisper.cpp loads lazily; keep loading out of the timing
        began = time.perf_counter()
        segments, _ = transcriber.transcribe(audio, options)
        text = " ".join(segment.text for segment in segments)
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "text": text, "peak_mb": peak_memory_mb()}


def peak_memory_mb() -> float:
    """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: the latter survives
    exec, so a spawned child would report its (larger) parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _child(queue, *args):
    try:
        queue.put(transcribe_once(*args))
    except BaseException as exc:  # reported by the parent with the row's name
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def run_isolated(*args, limit_s: float = 0) -> dict:
    """transcribe_once in a fresh process; a run past `limit_s` (0 = none) is stopped and
    recorded as taking at least that long, so one pathological row cannot stall the table."""
    import queue as queue_module

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, *args))
    process.start()
    try:
        result = queue.get(timeout=limit_s or None)
    except queue_module.Empty:
        process.terminate()
        process.join()
        return {"seconds": float(limit_s), "text": "", "peak_mb": float("nan"), "stopped": True}
    process.join()
    if "error" in result:
        raise RuntimeError(result["error"])
    return result


def summarise(runs: dict, duration: float, reference: Optional[str], metric: str) -> list[dict]:
    rows = []
    for name, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        finished = [r for r in results if not r.get("stopped")]
        row = {"name": name, "seconds": seconds, "rtf": seconds / duration,
               "peak_mb": max((r["peak_mb"] for r in finished), default=float("nan")), "runs": len(results),
               "stopped": len(results) - len(finished),
               "spread": (min(r["seconds"] for r in results), max(r["seconds"] for r in results))}
        if reference is not None and finished:
            row["error_rate"] = statistics.median(error_rate_of(reference, r["text"], metric) for r in finished)
        rows.append(row)
    return rows


def goals(rows: list[dict]) -> list[str]:
    """The issue's two inference goals as sentences with their measured ratios."""
    by_name = {row["name"]: row for row in rows}
    lines = []
    ours = [row for row in rows if "baseline" not in row["name"]]
    if BASELINE_FW in by_name and ours:
        base = by_name[BASELINE_FW]
        # A stopped baseline has no transcript to score: every row counts as at least as good.
        base_error = base.get("error_rate", float("inf"))
        at_least_as_good = [row for row in ours if row.get("error_rate", 0) <= base_error + 1e-9]
        if at_least_as_good:
            best = min(at_least_as_good, key=lambda row: row["seconds"])
            at_least = "at least " if base.get("stopped") else ""
            quality = ("at equal or better error rate" if "error_rate" in base
                       else "(the baseline was stopped, so its error rate is unknown)")
            lines.append(f"fastest of our rows {quality}: {best['name']}, {at_least}"
                         f"{base['seconds'] / best['seconds']:.2f}x faster than {BASELINE_FW} (goal 1.2x)")
        else:
            lines.append(f"none of our rows matched the error rate of {BASELINE_FW}")
    hf_ours = [row for row in ours if row["name"].startswith("transformers")]
    if BASELINE_HF in by_name and hf_ours:
        best = min(hf_ours, key=lambda row: row["seconds"])
        base = by_name[BASELINE_HF]
        errors = (f"; error rate {best['error_rate']:.1%} vs {base['error_rate']:.1%}"
                  if "error_rate" in best and "error_rate" in base else "")
        lines.append(f"fastest infer.py row: {best['name']}, {base['seconds'] / best['seconds']:.2f}x "
                     f"faster than {BASELINE_HF} (goal 2x){errors}")
    return lines


def markdown(rows: list[dict], header: str, metric: str) -> str:
    has_error = any("error_rate" in row for row in rows)
    lines = [header, "",
             "| configuration | seconds (median) | min-max | real-time factor | peak memory MB"
             + (f" | {metric.upper()} |" if has_error else " |"),
             "|---|---|---|---|---" + ("|---|" if has_error else "|")]
    for row in rows:
        # A median over stopped runs is only a lower bound.
        at_least = "> " if row.get("stopped", 0) * 2 >= row["runs"] else ""
        cells = [row["name"], f"{at_least}{row['seconds']:.1f}", f"{row['spread'][0]:.1f}-{row['spread'][1]:.1f}",
                 f"{at_least}{row['rtf']:.3f}", "n/a" if row["peak_mb"] != row["peak_mb"] else f"{row['peak_mb']:.0f}"]
        if has_error:
            cells.append(f"{100 * row['error_rate']:.1f} %" if "error_rate" in row else "n/a (stopped)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(rows: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["name"] for row in rows]
    seconds = [row["seconds"] for row in rows]
    colours = ["#999999" if "baseline" in name else "#1f77b4" for name in names]
    figure, axes = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    axes.barh(names[::-1], seconds[::-1], color=colours[::-1])
    for y, row in enumerate(rows[::-1]):
        stopped = row.get("stopped", 0) * 2 >= row["runs"]
        axes.text(row["seconds"], y, f" {'> ' if stopped else ''}{row['seconds']:.1f} s"
                  f"{' (stopped)' if stopped else ''}", va="center", fontsize=8)
    axes.set_xlabel("seconds to transcribe (median; grey = library baseline)")
    axes.set_title(title, fontsize=9)
    axes.set_xlim(0, max(seconds) * 1.3)
    figure.tight_layout()
    figure.savefig(path + ".part.png", dpi=100)
    plt.close(figure)
    os.replace(path + ".part.png", path)


def write_readme_section(readme: str, name: str, table: str, summary: list[str], chart: Optional[str]) -> None:
    """The benchmark's table, goal lines, chart and exact command in README.md's generated section."""
    from utils.bench.readme_section import replace_section

    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    body = ["```bash", command, "```", "", table.rstrip("\n"), "", *(f"- {line}" for line in summary), ""]
    if chart:
        body.append(f"![{name}]({os.path.relpath(chart, os.path.dirname(os.path.abspath(readme)))})")
    replace_section(readme, name, "\n".join(body))


def write_atomic(path: str, text: str) -> None:
    with open(path + ".part", "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(path + ".part", path)


def main():
    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses()
    names = list(CONFIGS) if args.configs.strip() == "all" else [n.strip() for n in args.configs.split(",") if n.strip()]
    if args.configs.strip() == "all":
        from utils.core.devices import cpu_supports_bf16

        if not cpu_supports_bf16():   # infer.py --bf16 refuses such a CPU, so its rows cannot run
            print("this CPU has no bfloat16 instructions: the bf16 rows are left out", flush=True)
            names = [name for name in names if CONFIGS[name][1].get("dtype") != "bfloat16"]
    unknown = [name for name in names if name not in CONFIGS]
    if unknown or not names:
        raise ValueError(f"--configs: unknown {', '.join(unknown) or '(none)'}; valid: {', '.join(CONFIGS)}")
    if args.repeats < 1 or args.batch_size < 1 or args.threads < 0:
        raise ValueError("--repeats and --batch_size must be at least 1, --threads at least 0")
    language = to_language_code(args.language)
    metric = "cer" if language in CER_LANGUAGES else "wer"
    reference = None
    if args.reference_path:
        if not os.path.isfile(args.reference_path):
            raise FileNotFoundError(f"--reference_path {args.reference_path}: file not found")
        with open(args.reference_path, encoding="utf-8") as file:
            reference = file.read()
    print_config("benchmark configuration", args)
    duration = duration_of(load_audio(args.audio_path))
    workdir = tempfile.TemporaryDirectory(prefix="benchmark-")

    engines = {CONFIGS[name][0] for name in names}
    paths = {"transformers": args.model_path, "hf-generate": args.model_path,
             "ct2": args.ct2_model_path, "fw-default": args.ct2_model_path, "ggml": args.ggml_model_path}
    if engines & {"ct2", "fw-default"} and not paths["ct2"]:
        from tools.hf_to_ct2 import convert

        paths["ct2"] = paths["fw-default"] = os.path.join(workdir.name, "ct2")
        convert(args.model_path, paths["ct2"], "float16", force=False)
    if "ggml" in engines and not paths["ggml"]:
        from utils.export.ggml import export_ggml

        paths["ggml"] = os.path.join(workdir.name, "model.bin")
        export_ggml(args.model_path, paths["ggml"], use_f16=True, progress=False)

    from tqdm import tqdm

    load_before = os.getloadavg()
    runs: dict = {name: [] for name in names}
    with tqdm(total=len(names) * args.repeats, desc="benchmark runs", file=sys.stderr) as bar:
        for round_index in range(args.repeats):
            for name in names:
                engine, settings = CONFIGS[name]
                settings = {k: (args.batch_size if v == "batch" else v) for k, v in settings.items()}
                try:
                    result = run_isolated(engine, settings, paths, args.audio_path, language, args.threads,
                                          limit_s=args.limit_s)
                except RuntimeError as exc:
                    raise RuntimeError(f"{name}: {exc}") from None
                runs[name].append(result)
                stopped = " (stopped at --limit_s)" if result.get("stopped") else ""
                bar.write(f"round {round_index + 1} {name}: {result['seconds']:.1f} s{stopped}, "
                          f"peak {result['peak_mb']:.0f} MB")
                bar.update(1)
    load_after = os.getloadavg()
    workdir.cleanup()

    rows = summarise(runs, duration, reference, metric)
    header = (f"`{os.path.basename(args.audio_path)}` ({duration:.1f} s), model `{args.model_path}`, "
              f"language {language or 'detected'}, {args.threads or 'default'} threads, batch {args.batch_size}, "
              f"median of {args.repeats} interleaved rounds. Machine: {machine_description()}; "
              f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after.")
    table = markdown(rows, header, metric)
    summary = goals(rows)
    print("\n" + table)
    for line in summary:
        print(line)
    if args.output_prefix:
        os.makedirs(os.path.dirname(os.path.abspath(args.output_prefix)), exist_ok=True)
        write_atomic(args.output_prefix + ".md", table + "\n" + "\n".join(f"- {line}" for line in summary) + "\n")
        write_atomic(args.output_prefix + ".json", json.dumps(
            {"header": header, "metric": metric, "rows": rows, "goals": summary,
             "runs": {name: [{k: v for k, v in r.items()} for r in results] for name, results in runs.items()}},
            ensure_ascii=False, indent=1))
        bar_chart(rows, args.output_prefix + ".png", f"{os.path.basename(args.audio_path)} ({duration:.0f} s), "
                                                     f"{os.path.basename(os.path.normpath(args.model_path))}")
        print(f"wrote {args.output_prefix}.md, .json and .png")
    if args.readme:
        write_readme_section(args.readme, "speed-inference", table, summary,
                             args.output_prefix + ".png" if args.output_prefix else None)
    fastest = min(rows, key=lambda row: row["seconds"])
    print(f"benchmarked {len(names)} configurations x {args.repeats} rounds on {duration:.1f} s of audio; "
          f"fastest: {fastest['name']} at real-time factor {fastest['rtf']:.3f}")


if __name__ == "__main__":
    exit_on_user_error(main)
