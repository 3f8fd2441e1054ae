"""Training speed: samples per second and peak memory of finetune.py runs side by side on the same clips.

    python tools/benchmark_training.py                            # CPU: whisper-base, 24 clips, 3 epochs
    python tools/benchmark_training.py --fp16=True                # CUDA: the same runs in mixed precision

Configurations (--configs):
  all-modules     LoRA on q/k/v/out/fc1/fc2 of encoder and decoder
  frozen          adapters in the decoder only; the frozen encoder runs on every batch (--cache_encoder_outputs=False)
  frozen-cached   the same, with encoder outputs computed once and reused every epoch (finetune.py's default:
                  stored in float16, so its loss curve against `frozen` is the cache's precision check)
  frozen-cached-fp32   the same, stored in float32 (identical losses to `frozen`)
  frozen-bf16, frozen-cached-bf16   the same two in bfloat16 autocast (CPUs with AVX512-BF16/AMX, CUDA)
  frozen-nodrop, frozen-cached-nodrop   the same two with --lora_dropout=0
  frozen-seed2    `frozen` with another seed: the run-to-run noise the float16 cache is judged against
Samples per second count every clip of every epoch over the training time plus the encoder passes (when
cached: over the training clips and over the test clips the final evaluation reads), so the cache's
one-off cost is charged to it. Each run starts from an empty cache. With
--repeats=N every configuration runs N times, round by round (a change in the machine's load hits every
configuration alike), and the table shows each one's median.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from utils.bench.measured_run import StageFailed, run_measured  # noqa: E402
from utils.bench.report import command_line, machine_description  # noqa: E402
from utils.core.cli import guarded, parse_args, print_config  # noqa: E402
from utils.core.errors import UsageError, UserError  # noqa: E402
from utils.core.files import write_json_atomic, write_text_atomic  # noqa: E402
from utils.core.models import model_name  # noqa: E402
from utils.inference.registry import default_model  # noqa: E402

CONFIGS = {
    "all-modules": ["--freeze_encoder=False"],
    "frozen": ["--freeze_encoder=True", "--cache_encoder_outputs=False"],
    "frozen-cached": ["--freeze_encoder=True", "--cache_encoder_outputs=True"],
    # Stored in float32: the same numbers as recomputing them (the default stores float16, half the disk).
    "frozen-cached-fp32": ["--freeze_encoder=True", "--cache_encoder_outputs=True", "--encoder_cache_dtype=float32"],
    # The same two with bfloat16 autocast (a CPU with AVX512-BF16/AMX, or a CUDA GPU with bf16).
    "frozen-bf16": ["--freeze_encoder=True", "--cache_encoder_outputs=False", "--bf16=True"],
    "frozen-cached-bf16": ["--freeze_encoder=True", "--cache_encoder_outputs=True", "--bf16=True"],
    # Without LoRA dropout: its masks over the 1500 stored encoder frames that feed every cross-attention
    # k/v adapter are a large part of a decoder step on a CPU (torch profiler: bernoulli_ + mul; the
    # share is in docs/performance.md).
    "frozen-nodrop": ["--freeze_encoder=True", "--cache_encoder_outputs=False", "--lora_dropout=0"],
    "frozen-cached-nodrop": ["--freeze_encoder=True", "--cache_encoder_outputs=True", "--lora_dropout=0"],
    # `frozen` with another seed (adapter initialisation, shuffling, dropout): its loss curve against `frozen`
    # is the run-to-run noise that the float16 cache's difference is judged against.
    "frozen-seed2": ["--freeze_encoder=True", "--cache_encoder_outputs=False", "--seed=2"],
}


def reference_of(config: str) -> str:
    """The run a configuration's speed-up is measured against: the same settings recomputing the encoder
    (frozen-cached-bf16 -> frozen-bf16); all-modules against frozen."""
    if config in ("all-modules", "frozen-seed2"):
        return "frozen"
    return config.replace("-cached", "").replace("-fp32", "")


@dataclass
class TrainingBenchmarkArguments:
    base_model: str = field(default=default_model("transformers"), metadata={"help": "Whisper model folder"})
    train_data: str = field(default="dataset/zh_train.jsonl", metadata={"help": "manifest the clips come from"})
    num_clips: int = field(default=24, metadata={"help": "first N clips of --train_data"})
    epochs: float = field(default=3, metadata={"help": "epochs per run"})
    batch_size: int = field(default=4, metadata={"help": "clips per step"})
    configs: str = field(default="frozen,frozen-cached", metadata={
        "help": "comma-separated, from: " + ", ".join(CONFIGS)})
    language: str = field(default="Chinese", metadata={"help": "language of the clips"})
    fp16: bool = field(default=False, metadata={"help": "mixed precision float16 (CUDA only)"})
    bf16: bool = field(default=False, metadata={
        "help": "mixed precision bfloat16 (CUDA with bf16, or a CPU with AVX512-BF16/AMX)"})
    use_8bit: bool = field(default=False, metadata={"help": "8-bit base weights (CUDA + bitsandbytes)"})
    num_workers: int = field(default=1, metadata={"help": "DataLoader workers"})
    repeats: int = field(default=1, metadata={"help": "interleaved rounds; the table shows medians"})
    output_dir: str = field(default="output/benchmark_training", metadata={"help": "runs, logs, results.json"})
    table: str = field(default="docs/training_benchmark.md", metadata={"help": "markdown table to write"})
    readme: Optional[str] = field(default=None, metadata={
        "help": "also put the table in this README's 'speed-training' section (between its markers)"})

    def __post_init__(self):
        unknown = [c for c in self.config_list if c not in CONFIGS]
        if unknown or not self.config_list:
            raise UsageError(f"--configs: unknown {', '.join(unknown) or '(none given)'}; "
                             f"choose from {', '.join(CONFIGS)}")
        for name in ("num_clips", "epochs", "batch_size", "repeats"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise UsageError(f"--num_workers must be 0 or more, got {self.num_workers}")

    @property
    def config_list(self) -> list[str]:
        return [c.strip() for c in self.configs.split(",") if c.strip()]


def check_inputs(args: TrainingBenchmarkArguments) -> None:
    if not os.path.isfile(os.path.join(args.base_model, "config.json")):
        raise UserError(f"--base_model: {args.base_model} is not a model folder; run "
                        f"`python tools/download_model.py --model=whisper-base`")
    if not os.path.isfile(args.train_data):
        raise UserError(f"--train_data: {args.train_data} not found")


def subset(args: TrainingBenchmarkArguments) -> str:
    """The first --num_clips speech clips of --train_data, as a manifest of its own."""
    kept = []
    with open(args.train_data, encoding="utf-8") as handle:
        for line in handle:
            if line.strip() and json.loads(line)["sentence"].strip():
                kept.append(line if line.endswith("\n") else line + "\n")
            if len(kept) == args.num_clips:
                break
    path = os.path.join(args.output_dir, f"train_{len(kept)}.jsonl")
    write_text_atomic(path, "".join(kept))
    return path


def run_config(args: TrainingBenchmarkArguments, name: str, train: str) -> dict:
    out = os.path.join(args.output_dir, name)
    cache = os.path.join(out, "encoder_cache")
    shutil.rmtree(cache, ignore_errors=True)        # every run pays for its own encoder pass
    command = [sys.executable, "finetune.py", f"--base_model={args.base_model}", f"--train_data={train}",
               f"--test_data={train}", f"--output_dir={out}", f"--language={args.language}",
               f"--num_train_epochs={args.epochs}", f"--per_device_train_batch_size={args.batch_size}",
               "--max_eval_samples=1", "--metric=none",
               "--eval_steps=100000", "--save_steps=100000", "--logging_steps=1", "--warmup_steps=0",
               f"--num_workers={args.num_workers}", f"--fp16={args.fp16}", f"--bf16={args.bf16}",
               f"--use_8bit={args.use_8bit}", "--local_files_only=True", *CONFIGS[name]]
    if "--cache_encoder_outputs=True" in command:
        command.append(f"--encoder_cache_dir={cache}")
    try:
        measured = run_measured(command, os.path.join(args.output_dir, "logs", f"{name}.log"))
    except StageFailed as exc:
        raise StageFailed(f"{name}: {exc}") from None
    model = model_name(args.base_model)
    with open(os.path.join(out, model, "train_results.json"), encoding="utf-8") as handle:
        results = json.load(handle)
    with open(os.path.join(out, model, "checkpoint-final", "trainer_state.json"), encoding="utf-8") as handle:
        losses = [row["loss"] for row in json.load(handle)["log_history"] if "loss" in row]
    samples = results["train_clips"] * args.epochs
    # The encoder cache is filled inside the first epoch's steps, so train_runtime includes its encoder work;
    # the share it took is reported beside it.
    encoder_pass = results["encoder_cache_seconds"] + results.get("eval_encoder_cache_seconds", 0.0)
    seconds = results["train_runtime"]
    return {"config": name, "samples": samples, "train_seconds": round(seconds, 1),
            "encoder_pass_seconds": round(encoder_pass, 1),
            "samples_per_second": round(samples / seconds, 3), "process_seconds": measured["seconds"],
            "peak_rss_gib": measured["peak_rss_gib"], "steps": results["global_step"], "losses": losses}


def median_row(runs: list[dict]) -> dict:
    """One configuration's rounds -> its row: medians of the timings, the largest peak memory, the range of
    samples/s, and the first round's losses (a seed makes every round's curve the same)."""
    row = dict(runs[0])
    for key in ("train_seconds", "encoder_pass_seconds", "samples_per_second", "process_seconds"):
        row[key] = statistics.median(r[key] for r in runs)
    row["peak_rss_gib"] = max(r["peak_rss_gib"] for r in runs)
    row["samples_per_second_range"] = [min(r["samples_per_second"] for r in runs),
                                       max(r["samples_per_second"] for r in runs)]
    row["rounds"] = len(runs)
    return row


def table_lines(rows: list[dict]) -> list[str]:
    by_name = {r["config"]: r for r in rows}
    table = ["| configuration | samples/s | min-max | training time | of which encoder pass | peak RSS | speed-up |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        reference = by_name.get(reference_of(r["config"]), r)
        low, high = r["samples_per_second_range"]
        table.append(f"| {r['config']} | {r['samples_per_second']:.2f} | {low:.2f}-{high:.2f} | "
                     f"{r['train_seconds']:.0f} s | {r['encoder_pass_seconds']:.0f} s | {r['peak_rss_gib']:.1f} GiB | "
                     f"{r['samples_per_second'] / reference['samples_per_second']:.2f}x vs {reference['config']} |")
    return table


def loss_notes(rows: list[dict]) -> list[str]:
    """Whether reading stored encoder outputs changed the training: each cached run's loss curve against
    the run that recomputes the encoder."""
    by_name = {r["config"]: r for r in rows}
    notes = []
    for cached in (name for name in by_name if "-cached" in name):
        plain = reference_of(cached)
        if plain in by_name:
            a, b = by_name[cached]["losses"], by_name[plain]["losses"]
            diff = max(abs(x - y) for x, y in zip(a, b))
            notes.append(f"Loss curves of `{plain}` and `{cached}`: {len(a)} logged steps, largest difference "
                         f"{diff:.2e} (same seed, same batches; first loss {b[0]:.3f}, last {b[-1]:.3f}).")
    if "frozen-seed2" in by_name and "frozen" in by_name:
        a, b = by_name["frozen-seed2"]["losses"], by_name["frozen"]["losses"]
        notes.append(f"Run-to-run noise, `frozen` against `frozen-seed2` (another seed: adapter initialisation, "
                     f"shuffling, dropout): largest difference {max(abs(x - y) for x, y in zip(a, b)):.2e} over "
                     f"{len(a)} logged steps.")
    return notes


def write_table(args: TrainingBenchmarkArguments, rows: list[dict], command: str) -> None:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU: {machine_description()}"
    table, notes = table_lines(rows), loss_notes(rows)
    header = (f"Device: {device}; torch {torch.__version__}; {rows[0]['samples']:g} samples per run "
              f"({args.num_clips} clips x {args.epochs:g} epochs), batch {args.batch_size}; median of "
              f"{args.repeats} interleaved round{'s' if args.repeats > 1 else ''}.")
    lines = ["# Training speed", "", "Generated by `tools/benchmark_training.py`. Command:", "", "```bash", command,
             "```", "", header, "", *table, "", *notes,
             "", "Speed-up: samples per second against the run that recomputes the encoder at the same precision. "
                 "Training time is Trainer's train_runtime plus the one-off encoder passes (training and test clips); "
                 "peak RSS covers the finetune.py process and its DataLoader workers.", ""]
    write_text_atomic(args.table, "\n".join(lines))
    if args.readme:
        from utils.bench.readme_section import replace_section

        replace_section(args.readme, "speed-training",
                        "\n".join(["```bash", command, "```", "", header, "", *table, "", *notes]))


def benchmark(args: TrainingBenchmarkArguments, command: str) -> None:
    from tqdm import tqdm

    check_inputs(args)
    print_config("benchmark_training.py configuration", args)
    train = subset(args)
    runs = {name: [] for name in args.config_list}
    start = time.perf_counter()
    with tqdm(total=len(runs) * args.repeats, desc="Runs", unit="run") as bar:
        for _ in range(args.repeats):
            for name in args.config_list:
                runs[name].append(run_config(args, name, train))
                r = runs[name][-1]
                print(f"{name}: {r['samples_per_second']:.2f} samples/s, peak RSS {r['peak_rss_gib']:.1f} GiB",
                      flush=True)
                bar.update()
    rows = [median_row(runs[name]) for name in args.config_list]
    write_json_atomic(os.path.join(args.output_dir, "results.json"),
                      {"command": command, "rows": rows, "runs": runs})
    write_table(args, rows, command)
    print("training benchmark: " + ", ".join(f"{r['config']} {r['samples_per_second']:.2f} samples/s" for r in rows)
          + f" (medians of {args.repeats}); table {args.table} ({(time.perf_counter() - start) / 60:.1f} min)",
          flush=True)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(TrainingBenchmarkArguments, argv, description=__doc__)
    return guarded(lambda: benchmark(args, command_line("tools/benchmark_training.py", argv)))


if __name__ == "__main__":
    sys.exit(main())
