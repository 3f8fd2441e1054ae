"""Time and memory against corpus size, on stand-in corpora generated here (the layouts of real ones, next to no
audio, so that the toolkit's own overhead shows), written into docs/scale.md's generated section.

    python tools/benchmark_scale.py                                  # 1k ... 1M lines; a 1-hour source
    python tools/benchmark_scale.py --sizes=1000,10000 --source_minutes=10 --eval_clips=8     # a quick look

Stages, each a child process measured on its own (wall time; peak RSS of the process and the workers it waited
for, the largest of them):
  finetune      finetune.py with a tiny random Whisper on a manifest of N lines, one optimizer step: time to the
                first logged step and peak RSS; cold (no Arrow cache of the manifest), then warm, then warm with
                --freeze_encoder and the encoder cache (its key hashes every row, its store is made for N clips)
  wenetspeech   tools/create_wenetspeech_data.py on one long Opus source (1 worker), against what its worker did
                before (decode the whole file, cut the windows out of it), and the imports alone
  evaluation    evaluation.py on M clips, one process and torchrun with two (gloo), which must write the same report
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from utils.bench import stand_ins  # noqa: E402
from utils.bench.measured_run import StageFailed  # noqa: E402
from utils.bench.report import command_line, machine_description, write_readme_section  # noqa: E402
from utils.core.cli import guarded, parse_args, print_config  # noqa: E402
from utils.core.errors import UsageError  # noqa: E402
from utils.core.files import write_json_atomic  # noqa: E402

STEP_MARK = b"'loss':"      # the Trainer's log line of the first optimizer step (--logging_steps=1)


@dataclass
class Arguments:
    sizes: str = field(default="1000,10000,100000,1000000",
                       metadata={"help": "Manifest lengths for the finetune stage."})
    source_minutes: int = field(default=60, metadata={"help": "Length of the long WenetSpeech source (0: skip)."})
    eval_clips: int = field(default=32, metadata={"help": "Clips for the evaluation stage (0: skip)."})
    stages: str = field(default="finetune,wenetspeech,evaluation", metadata={"help": "Stages to run."})
    work_dir: str = field(default="output/benchmark_scale", metadata={
        "help": "Stand-ins and runs (kept: a rerun reuses the generated audio and manifests)."})
    source_model: str = field(default="models/whisper-base", metadata={
        "help": "Model whose tokenizer the tiny random Whisper takes."})
    report: str = field(default="docs/scale.md", metadata={"help": "Document whose 'scale' section is rewritten; "
                                                                   "'none' only prints."})

    def __post_init__(self):
        try:
            self.size_list = [int(s) for s in self.sizes.split(",") if s.strip()]
        except ValueError:
            raise UsageError(f"--sizes={self.sizes}: comma-separated line counts, e.g. 1000,10000") from None
        unknown = set(self.stages.split(",")) - {"finetune", "wenetspeech", "evaluation"}
        if unknown:
            raise UsageError(f"--stages: unknown {', '.join(sorted(unknown))}; "
                             f"choose among finetune, wenetspeech, evaluation")


def measure(command: list, log_path: str, env: dict | None = None) -> dict:
    """{"seconds", "first_step_s" (None when no step was logged), "peak_rss_mib"} of `command` run in the
    repository, its output in `log_path`."""
    env = dict(os.environ, PYTHONPATH=REPO, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS="1", **(env or {}))
    print(f"$ {' '.join(command)}", flush=True)
    start, first_step, seen = time.perf_counter(), None, b""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        while chunk := os.read(process.stdout.fileno(), 1 << 16):
            log.write(chunk)
            if first_step is None:
                seen = seen[-len(STEP_MARK):] + chunk
                if STEP_MARK in seen:
                    first_step = time.perf_counter() - start
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise StageFailed(f"exit status {os.waitstatus_to_exitcode(status)}: {' '.join(command)}; log {log_path}")
    return {"seconds": round(seconds, 1), "first_step_s": None if first_step is None else round(first_step, 1),
            "peak_rss_mib": round(usage.ru_maxrss / 1024)}


def in_child(call: str, log_path: str) -> None:
    """Run `call` (a utils.bench.stand_ins call) in a child process: this process must stay small, because a child
    starts with its parent's peak RSS (Linux keeps the high-water mark across fork and exec) and would report it."""
    measure([sys.executable, "-c", f"from utils.bench import stand_ins; stand_ins.{call}"], log_path)


def finetune_stage(args: Arguments, work: str, model: str) -> list:
    os.makedirs(work, exist_ok=True)
    clips = stand_ins.tiny_clips(os.path.join(work, "clips"))
    test = stand_ins.write_manifest(os.path.join(work, "test.jsonl"), 2, clips)
    rows = []
    for size in args.size_list:
        train = stand_ins.write_manifest(os.path.join(work, f"train-{size}.jsonl"), size, clips)
        arrow = os.path.join(work, f"arrow-{size}")
        shutil.rmtree(arrow, ignore_errors=True)
        common = [sys.executable, "finetune.py", f"--base_model={model}", f"--train_data={train}",
                  f"--test_data={test}", "--max_steps=1", "--eval_steps=1", "--save_steps=1", "--logging_steps=1",
                  "--per_device_train_batch_size=2", "--per_device_eval_batch_size=2", "--num_workers=0",
                  "--lora_r=4", "--lora_alpha=8", "--metric=none", "--warmup_steps=0", "--report_to=none",
                  "--local_files_only=True"]
        cache = os.path.join(work, f"encoder-cache-{size}")
        shutil.rmtree(cache, ignore_errors=True)
        runs = {"cold": [], "warm": [],
                "warm, encoder cache": ["--freeze_encoder=True", "--cache_encoder_outputs=True",
                                        "--encoder_cache_dtype=float16", f"--encoder_cache_dir={cache}"]}
        # The store is sparse, but finetune.py asks for room for every row before it starts.
        store_bytes = size * 1500 * 64 * 2        # the tiny model: 1500 frames x 64 wide, float16
        if store_bytes > shutil.disk_usage(work).free:
            del runs["warm, encoder cache"]
            rows_skipped = {"stage": "finetune.py", "size": f"{size:,} lines",
                            "run": f"encoder cache: not run, its {store_bytes / 2**30:.0f} GiB exceed the free disk",
                            "seconds": None, "first_step_s": None, "peak_rss_mib": None}
        else:
            rows_skipped = None
        for name, extra in runs.items():
            out = os.path.join(work, f"run-{size}-{name.replace(', ', '-').replace(' ', '-')}")
            shutil.rmtree(out, ignore_errors=True)
            result = measure([*common, f"--output_dir={out}", *extra], out + ".log", {"HF_DATASETS_CACHE": arrow})
            rows.append({"stage": "finetune.py", "size": f"{size:,} lines", "run": name, **result})
            print(rows[-1], flush=True)
        if rows_skipped:
            rows.append(rows_skipped)
        shutil.rmtree(cache, ignore_errors=True)
    return rows


_WHOLE_FILE_CUT = """
import sys
from collections import Counter
from utils.core.audio import load_audio
from utils.data.builders import wenetspeech
from utils.data.builders.common import write_audio
audio = next(wenetspeech.iter_audios(sys.argv[1]))
windows = wenetspeech.plan_windows(audio["segments"], "L", 0.95, 30.0, False, Counter())
whole = load_audio(audio["path"])
for i, window in enumerate(windows):
    write_audio(f"{sys.argv[2]}/{i:04d}.flac", wenetspeech.cut_window(whole, window, False))
"""
_IMPORTS = "import soundfile, av, soxr, utils.data.builders.wenetspeech, utils.core.audio"


def wenetspeech_stage(args: Arguments, work: str) -> list:
    os.makedirs(work, exist_ok=True)
    seconds = args.source_minutes * 60
    print(f"generating a {args.source_minutes}-minute Opus source (once; kept in {work})", flush=True)
    source = os.path.join(work, f"source-{args.source_minutes}min.opus")
    in_child(f"long_source({source!r}, {seconds})", os.path.join(work, "source.log"))
    manifest = stand_ins.wenetspeech_json(os.path.join(work, "WenetSpeech.json"), source, seconds)
    size = f"1 source of {args.source_minutes} min"
    rows = []
    result = measure([sys.executable, "-c", _IMPORTS], os.path.join(work, "imports.log"))
    rows.append({"stage": "wenetspeech builder", "size": size, "run": "imports only", **result})
    cut = os.path.join(work, "whole-file-cut")
    shutil.rmtree(cut, ignore_errors=True)
    os.makedirs(cut)
    result = measure([sys.executable, "-c", _WHOLE_FILE_CUT, manifest, cut], os.path.join(work, "whole.log"))
    rows.append({"stage": "wenetspeech builder", "size": size, "run": "whole file decoded, then cut (before)",
                 **result})
    out = os.path.join(work, "wenetspeech")
    shutil.rmtree(out, ignore_errors=True)
    result = measure([sys.executable, "tools/create_wenetspeech_data.py", f"--wenetspeech_json={manifest}",
                      f"--output_dir={out}", "--num_workers=1"], os.path.join(work, "builder.log"))
    clips = sum(1 for _ in open(os.path.join(out, "train.jsonl"), encoding="utf-8"))
    if clips != len(os.listdir(cut)):
        raise StageFailed(f"the builder wrote {clips} clips, the whole-file cut {len(os.listdir(cut))}")
    rows.append({"stage": "wenetspeech builder", "size": size, "run": f"cut while decoding (now), {clips} clips",
                 **result})
    for row in rows:
        print(row, flush=True)
    return rows


def evaluation_stage(args: Arguments, work: str, model: str) -> list:
    os.makedirs(work, exist_ok=True)
    clips = stand_ins.tiny_clips(os.path.join(work, "clips"))
    test = stand_ins.write_manifest(os.path.join(work, f"eval-{args.eval_clips}.jsonl"), args.eval_clips, clips)
    flags = [f"--model_path={model}", f"--test_data={test}", "--batch_size=8", "--num_workers=0",
             "--max_new_tokens=3", "--local_files_only=True"]
    rows, reports = [], {}
    launchers = {"1 process": [sys.executable],
                 "torchrun, 2 processes": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                           "--nproc_per_node=2"]}
    for name, launcher in launchers.items():
        report = os.path.join(work, f"eval-{name.split(',')[0].replace(' ', '-')}.json")
        result = measure([*launcher, "evaluation.py", *flags, f"--output_file={report}"], report + ".log")
        with open(report, encoding="utf-8") as f:
            reports[name] = {k: v for k, v in json.load(f).items() if k != "test_data"}
        rows.append({"stage": "evaluation.py", "size": f"{args.eval_clips:,} clips", "run": name, **result})
        print(rows[-1], flush=True)
    same = reports["1 process"] == reports["torchrun, 2 processes"]
    rows[-1]["run"] += ", same report" if same else ", REPORT DIFFERS"
    if not same:
        raise StageFailed("two processes wrote another report than one")
    return rows


def table(rows: list) -> str:
    lines = ["| stage | corpus | run | wall s | first step s | peak RSS MiB |", "|---|---|---|---:|---:|---:|"]
    for r in rows:
        first = "" if r["first_step_s"] is None else f"{r['first_step_s']:.1f}"
        seconds = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        rss = "" if r["peak_rss_mib"] is None else f"{r['peak_rss_mib']:,}"
        lines.append(f"| {r['stage']} | {r['size']} | {r['run']} | {seconds} | {first} | {rss} |")
    return "\n".join(lines) + "\n"


def benchmark(args: Arguments) -> None:
    print_config("benchmark_scale.py configuration", args)
    work = os.path.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    stages = args.stages.split(",")
    model = None
    if "finetune" in stages or "evaluation" in stages:
        if not os.path.isfile(os.path.join(args.source_model, "config.json")):
            raise UsageError(f"--source_model: {args.source_model} is not a model folder (make models)")
        model = os.path.join(work, "tiny-whisper")
        in_child(f"tiny_random_whisper({model!r}, {os.path.abspath(args.source_model)!r})", model + ".log")
    started = time.perf_counter()
    rows = []
    if "finetune" in stages:
        rows += finetune_stage(args, os.path.join(work, "finetune"), model)
    if "wenetspeech" in stages and args.source_minutes > 0:
        rows += wenetspeech_stage(args, os.path.join(work, "wenetspeech"))
    if "evaluation" in stages and args.eval_clips > 0:
        rows += evaluation_stage(args, os.path.join(work, "evaluation"), model)
    text = table(rows)
    print(text)
    write_json_atomic(os.path.join(work, "results.json"), {"machine": machine_description(), "rows": rows})
    if args.report != "none":
        write_readme_section(args.report, "scale", command_line("tools/benchmark_scale.py", sys.argv[1:]), text,
                             [f"Machine: {machine_description()}; {time.perf_counter() - started:.0f} s for the "
                              f"whole benchmark."], None)
    print(f"done: {len(rows)} runs in {time.perf_counter() - started:.0f} s; table in "
          f"{args.report if args.report != 'none' else 'the output above'}", flush=True)


def main(argv=None) -> int:
    args = parse_args(Arguments, argv, description=__doc__)
    return guarded(lambda: benchmark(args))


if __name__ == "__main__":
    sys.exit(main())
