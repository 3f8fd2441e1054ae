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
from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.bench.report import (  # noqa: E402
    command_line,
    machine_description,
    pyplot,
    save_figure,
    write_readme_section,
)
from utils.core.cli import guarded, parse_args, print_config  # noqa: E402
from utils.core.errors import UsageError, UserError  # noqa: E402
from utils.core.files import write_json_atomic, write_text_atomic  # noqa: E402
from utils.inference.registry import BACKEND_NAMES, BACKENDS, default_model  # noqa: E402

# The libraries' own long-form paths, called directly with their defaults; each reads the model of
# the backend named here.
HF_GENERATE, FW_DEFAULT = "hf-generate", "fw-default"
BASELINE_MODEL = {HF_GENERATE: "transformers", FW_DEFAULT: "ct2"}
# Settings of a row that are decoding options (TranscribeOptions), not options of the backend.
DECODING_SETTINGS = ("beam_size", "vad_filter", "fallback")
BATCH = "batch"     # a batch_size setting of BATCH takes --batch_size

# name -> (engine, settings). The engine is a backend of utils/inference/registry.py, used exactly as
# infer.py / infer_ct2.py use it, or one of the two baselines.
CONFIGS = {
    "transformers-generate (baseline)": (HF_GENERATE, {}),
    "transformers sequential": ("transformers", {"batch_size": 1}),
    "transformers batched": ("transformers", {"batch_size": BATCH}),
    # Without Whisper's temperature fallback: what batching alone gains over generate's own loop.
    "transformers sequential no-fallback": ("transformers", {"batch_size": 1, "fallback": False}),
    "transformers batched no-fallback": ("transformers", {"batch_size": BATCH, "fallback": False}),
    # infer.py --use_int8: every linear layer dynamic int8.
    "transformers int8 sequential": ("transformers", {"batch_size": 1, "use_int8": True}),
    "transformers int8 batched": ("transformers", {"batch_size": BATCH, "use_int8": True}),
    "transformers int8 batched no-fallback": ("transformers", {"batch_size": BATCH, "fallback": False,
                                                               "use_int8": True}),
    # infer.py --bf16: bfloat16 weights and activations (CPUs with AVX512-BF16 or AMX).
    "transformers bf16 sequential": ("transformers", {"batch_size": 1, "compute_type": "bfloat16"}),
    "transformers bf16 batched": ("transformers", {"batch_size": BATCH, "compute_type": "bfloat16"}),
    "transformers bf16 batched no-fallback": ("transformers", {"batch_size": BATCH, "fallback": False,
                                                               "compute_type": "bfloat16"}),
    "faster-whisper default (baseline)": (FW_DEFAULT, {}),
    "ct2 float32 sequential": ("ct2", {"compute_type": "float32"}),
    "ct2 int8 sequential": ("ct2", {"compute_type": "int8"}),
    "ct2 int8 sequential beam5": ("ct2", {"compute_type": "int8", "beam_size": 5}),
    "ct2 int8 sequential vad": ("ct2", {"compute_type": "int8", "vad_filter": True}),
    "ct2 float32 batched": ("ct2", {"compute_type": "float32", "batch_size": BATCH}),
    "ct2 int8 batched": ("ct2", {"compute_type": "int8", "batch_size": BATCH}),
    "ct2 int8 batched vad": ("ct2", {"compute_type": "int8", "batch_size": BATCH, "vad_filter": True}),
    "whisper.cpp f16": ("ggml", {}),
}
BASELINE_FW = "faster-whisper default (baseline)"
BASELINE_HF = "transformers-generate (baseline)"


def check_configs() -> None:
    """Every row names a registered backend (or a baseline) and only options that backend takes."""
    for name, (engine, settings) in CONFIGS.items():
        if engine in BASELINE_MODEL:
            continue
        if engine not in BACKENDS:
            raise AssertionError(f"CONFIGS[{name!r}]: {engine!r} is not a backend of the registry")
        unknown = set(settings) - set(DECODING_SETTINGS) - set(BACKENDS[engine].options)
        if unknown:
            raise AssertionError(f"CONFIGS[{name!r}]: the {engine} backend takes no {', '.join(sorted(unknown))}")


check_configs()


@dataclass
class BenchmarkArguments:
    audio_path: str = field(default="dataset/test_long.wav", metadata={"help": "audio file to transcribe"})
    reference_path: Optional[str] = field(default=None, metadata={
        "help": "text file with the reference transcript; unset = no error rate column"})
    model_path: str = field(default=default_model("transformers"), metadata={"help": "transformers model folder"})
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

    def __post_init__(self):
        unknown = [name for name in self.config_names if name not in CONFIGS]
        if unknown or not self.config_names:
            raise UsageError(f"--configs: unknown {', '.join(unknown) or '(none)'}; valid: {', '.join(CONFIGS)}")
        if self.repeats < 1 or self.batch_size < 1 or self.threads < 0:
            raise UsageError("--repeats and --batch_size must be at least 1, --threads at least 0")
        if self.limit_s < 0:
            raise UsageError(f"--limit_s must be 0 (no limit) or more, got {self.limit_s}")

    @property
    def config_names(self) -> list[str]:
        if self.configs.strip() == "all":
            return list(CONFIGS)
        return [name.strip() for name in self.configs.split(",") if name.strip()]


def error_rate_of(reference: str, hypothesis: str, metric: str) -> float:
    from utils.core.metrics import error_rate

    return error_rate([reference], [hypothesis], metric).value


def transcribe_baseline(engine: str, model_path: str, audio, language: Optional[str], threads: int):
    """A library's own long-form path with its defaults; returns (text, seconds)."""
    if engine == HF_GENERATE:
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        from utils.core.audio import CHUNK_LENGTH, SAMPLE_RATE

        if threads:
            torch.set_num_threads(threads)
        processor = WhisperProcessor.from_pretrained(model_path)
        model = WhisperForConditionalGeneration.from_pretrained(model_path).eval()
        began = time.perf_counter()
        # transformers' documented long-form recipe: the whole file's features in one generate call.
        long = len(audio) > CHUNK_LENGTH * SAMPLE_RATE
        inputs = processor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True,
                           **(dict(truncation=False, padding="longest") if long else {}))
        kwargs = dict(language=language, task="transcribe") if language else {}
        with torch.inference_mode():
            tokens = model.generate(inputs.input_features, attention_mask=inputs.attention_mask,
                                    return_timestamps=True, **kwargs)
        return processor.batch_decode(tokens, skip_special_tokens=True)[0], time.perf_counter() - began
    from faster_whisper import WhisperModel

    model = WhisperModel(model_path, device="cpu")
    began = time.perf_counter()
    segments, _ = model.transcribe(audio, language=language)
    text = " ".join(segment.text.strip() for segment in segments)
    return text, time.perf_counter() - began


def transcribe_ours(engine: str, settings: dict, model_path: str, audio, language: Optional[str], threads: int):
    """One row through the registry's backend, as infer.py / infer_ct2.py run it; returns (text, seconds)."""
    from utils.inference.registry import load_transcriber
    from utils.inference.transcriber import TranscribeOptions

    options = {key: value for key, value in settings.items() if key not in DECODING_SETTINGS}
    decoding = TranscribeOptions(language=language, beam_size=settings.get("beam_size", 1),
                                 vad_filter=settings.get("vad_filter", False),
                                 temperature_increment_on_fallback=0.2 if settings.get("fallback", True) else 0.0)
    if threads and "cpu_threads" in BACKENDS[engine].options:
        options["cpu_threads"] = threads
    transcriber = load_transcriber(engine, model_path, **options)
    if hasattr(transcriber, "preload"):
        transcriber.preload(decoding.beam_size)   # whisper.cpp loads lazily; keep loading out of the timing
    began = time.perf_counter()
    segments, _ = transcriber.transcribe(audio, decoding)
    text = " ".join(segment.text for segment in segments)
    return text, time.perf_counter() - began


def transcribe_once(engine: str, settings: dict, paths: dict, audio_path: str, language: Optional[str],
                    threads: int) -> dict:
    """One configuration on one file, in this (fresh) process; returns seconds, text and peak memory."""
    from utils.core.audio import load_audio

    audio = load_audio(audio_path)
    if engine in BASELINE_MODEL:
        text, seconds = transcribe_baseline(engine, paths[BASELINE_MODEL[engine]], audio, language, threads)
    else:
        text, seconds = transcribe_ours(engine, settings, paths[engine], audio, language, threads)
    return {"seconds": seconds, "text": text, "peak_mb": peak_memory_mb()}


def peak_memory_mb() -> float:
    """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: the latter survives
    exec, so a spawned child would report its (larger) parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


class RowFailed(UserError):
    """A configuration failed in its child process; the message names the row and the error."""


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
        raise RowFailed(result["error"])
    return result


def runnable_rows(args: BenchmarkArguments) -> list[str]:
    """The rows asked for; with --configs=all, without the bf16 rows on a CPU that cannot run them."""
    names = args.config_names
    if args.configs.strip() == "all":
        from utils.core.devices import cpu_supports_bf16

        if not cpu_supports_bf16():   # infer.py --bf16 refuses such a CPU, so its rows cannot run
            print("this CPU has no bfloat16 instructions: the bf16 rows are left out", flush=True)
            names = [name for name in names if CONFIGS[name][1].get("compute_type") != "bfloat16"]
    return names


def model_paths(args: BenchmarkArguments, names: list[str], workdir: str) -> dict:
    """backend name -> the model file or folder its rows read; a CTranslate2 folder or GGML file not
    given is made from --model_path in `workdir`."""
    paths = {"transformers": args.model_path, "ct2": args.ct2_model_path, "ggml": args.ggml_model_path}
    assert set(paths) == set(BACKEND_NAMES), "a new backend needs its --<name>_model_path flag here"
    needed = {BASELINE_MODEL.get(CONFIGS[name][0], CONFIGS[name][0]) for name in names}
    if "ct2" in needed and not paths["ct2"]:
        from utils.export.ct2_export import export_ct2

        paths["ct2"] = os.path.join(workdir, "ct2")
        export_ct2(args.model_path, paths["ct2"], "float16", force=False)
    if "ggml" in needed and not paths["ggml"]:
        from utils.export.ggml import export_ggml

        paths["ggml"] = os.path.join(workdir, "model.bin")
        export_ggml(args.model_path, paths["ggml"], progress=False)
    return paths


def run_rounds(args: BenchmarkArguments, names: list[str], paths: dict, language: Optional[str]) -> dict:
    """row name -> its results, rounds interleaved (every row once per round)."""
    from tqdm import tqdm

    runs: dict = {name: [] for name in names}
    with tqdm(total=len(names) * args.repeats, desc="benchmark runs", file=sys.stderr) as bar:
        for round_index in range(args.repeats):
            for name in names:
                engine, settings = CONFIGS[name]
                settings = {k: (args.batch_size if v == BATCH else v) for k, v in settings.items()}
                try:
                    result = run_isolated(engine, settings, paths, args.audio_path, language, args.threads,
                                          limit_s=args.limit_s)
                except RowFailed as exc:
                    raise RowFailed(f"{name}: {exc}") from None
                runs[name].append(result)
                stopped = " (stopped at --limit_s)" if result.get("stopped") else ""
                bar.write(f"round {round_index + 1} {name}: {result['seconds']:.1f} s{stopped}, "
                          f"peak {result['peak_mb']:.0f} MB")
                bar.update(1)
    return runs


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
    hf_ours = [row for row in ours if CONFIGS[row["name"]][0] == BASELINE_MODEL[HF_GENERATE]]
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
    plt = pyplot()
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
    save_figure(figure, path)


def write_outputs(args: BenchmarkArguments, command: str, header: str, table: str, summary: list[str],
                  rows: list[dict], runs: dict, duration: float, metric: str) -> None:
    """--output_prefix's .md, .json and .png, and --readme's section."""
    if args.output_prefix:
        write_text_atomic(args.output_prefix + ".md", table + "\n" + "\n".join(f"- {line}" for line in summary) + "\n")
        write_json_atomic(args.output_prefix + ".json",
                          {"header": header, "metric": metric, "rows": rows, "goals": summary, "runs": runs},
                          indent=1)
        bar_chart(rows, args.output_prefix + ".png", f"{os.path.basename(args.audio_path)} ({duration:.0f} s), "
                                                     f"{os.path.basename(os.path.normpath(args.model_path))}")
        print(f"wrote {args.output_prefix}.md, .json and .png")
    if args.readme:
        write_readme_section(args.readme, "speed-inference", command, table, summary,
                             args.output_prefix + ".png" if args.output_prefix else None)


def read_reference(path: Optional[str]) -> Optional[str]:
    if not path:
        return None
    if not os.path.isfile(path):
        raise UserError(f"--reference_path {path}: file not found")
    with open(path, encoding="utf-8") as file:
        return file.read()


def benchmark(args: BenchmarkArguments, command: str) -> None:
    from utils.core.audio import duration_of, load_audio
    from utils.core.languages import to_language_code
    from utils.core.metrics import CER_LANGUAGES

    names = runnable_rows(args)
    language = to_language_code(args.language)
    metric = "cer" if language in CER_LANGUAGES else "wer"
    reference = read_reference(args.reference_path)
    print_config("benchmark configuration", args)
    duration = duration_of(load_audio(args.audio_path))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="benchmark-") as workdir:
        runs = run_rounds(args, names, model_paths(args, names, workdir), language)
    load_after = os.getloadavg()

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
    write_outputs(args, command, header, table, summary, rows, runs, duration, metric)
    fastest = min(rows, key=lambda row: row["seconds"])
    print(f"benchmarked {len(names)} configurations x {args.repeats} rounds on {duration:.1f} s of audio; "
          f"fastest: {fastest['name']} at real-time factor {fastest['rtf']:.3f}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(BenchmarkArguments, argv, description=__doc__)
    return guarded(lambda: benchmark(args, command_line("tools/benchmark_inference.py", argv)))


if __name__ == "__main__":
    sys.exit(main())
