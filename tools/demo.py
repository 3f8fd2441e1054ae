"""`make demo`: the whole toolkit on the real whisper-base and the shipped Mandarin sample corpus.

    python tools/demo.py                      # about 10-15 minutes on a 2-core CPU

Stages, each one of the toolkit's own scripts run as a separate process (their progress bars show):
  1. CER of the base model on --test_data                       evaluation.py
  2. LoRA fine-tuning on --train_data, frozen encoder whose
     outputs are computed once and reused every epoch            finetune.py
  3. merge the adapter into a standalone model                  merge_lora.py
  4. CER of the fine-tuned model on --test_data                 evaluation.py
  5. CTranslate2 conversion + transcription of --audio          tools/hf_to_ct2.py, infer_ct2.py
  6. GGML export + whisper.cpp transcription of --audio         convert-ggml.py, pywhispercpp
It ends with a table: CER before/after, time per stage and where every artefact was written.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

VENV_STAMP = os.path.join(REPO, ".venv", ".installed")   # written by the Makefile's setup target


# Stage 6's transcription: whisper.cpp (pywhispercpp) through the toolkit's transcriber interface, the path
# infer_server.py and infer_gui.py take for GGML models (no command-line script transcribes with GGML). In its
# own process like every stage, so that a crash inside the C library is reported as a failed stage.
WHISPER_CPP = ("import sys; from utils.inference.transcriber import TranscribeOptions, load_transcriber, transcribe_to_outputs; "
               "transcribe_to_outputs(load_transcriber('ggml', sys.argv[1]), sys.argv[2], "
               "TranscribeOptions(language=sys.argv[3]), output_format='txt', output_dir=sys.argv[4])")


class DemoError(RuntimeError):
    """A stage failed or an input is missing; the message says which and where its log is."""


@dataclass
class Stage:
    name: str
    seconds: float = 0.0
    artefact: str = ""
    note: str = ""
    text: Optional[str] = None       # transcript of --audio, for the engine stages


@dataclass
class Demo:
    args: argparse.Namespace
    stages: list = field(default_factory=list)

    def path(self, *parts: str) -> str:
        return os.path.join(self.args.output_dir, *parts)

    def run(self, stage: Stage, command: list[str]) -> str:
        """Run one script; its progress bars (stderr) go to the terminal, its printout to a log file.
        Returns the last line it printed (every script ends with a one-line summary)."""
        script = "whisper_cpp" if command[1] == "-c" else os.path.basename(command[1])
        log_path = self.path("logs", f"{len(self.stages)}-{script}.log")
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        shown = command if command[1] != "-c" else [command[0], "-c", "<whisper.cpp via utils.inference.transcriber>",
                                                     *command[3:]]
        print(f"$ {shlex.join(shown)}", flush=True)
        env = dict(os.environ, PYTHONPATH=REPO, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
        start = time.perf_counter()
        with open(log_path, "w", encoding="utf-8") as log:
            code = subprocess.call(command, cwd=REPO, env=env, stdout=log)
        stage.seconds += time.perf_counter() - start
        with open(log_path, encoding="utf-8", errors="replace") as log:
            lines = [line.rstrip() for line in log if line.strip()]
        if code != 0:
            raise DemoError(f"stage '{stage.name}' failed (exit status {code}); its output is in {log_path}")
        last = lines[-1] if lines else ""
        print(f"  -> {last}", flush=True)
        return last


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--base_model", default="models/whisper-base", help="Whisper model folder to start from")
    parser.add_argument("--train_data", default="dataset/zh_train.jsonl", help="training manifest")
    parser.add_argument("--test_data", default="dataset/zh_test.jsonl", help="test manifest (CER before/after)")
    parser.add_argument("--audio", default="dataset/test.wav",
                        help="file transcribed with CTranslate2 and whisper.cpp at the end")
    parser.add_argument("--reference", default="dataset/test.txt",
                        help="its transcript, to score the two engines ('' = do not score)")
    parser.add_argument("--language", default="Chinese", help="language of the data")
    parser.add_argument("--output_dir", default="output/demo", help="everything the demo writes goes here")
    parser.add_argument("--max_train_clips", type=int, default=0,
                        help="train on this many clips of --train_data (spread over the file, no-speech clips "
                             "kept); 0 = all")
    parser.add_argument("--epochs", type=float, default=3, help="training epochs")
    parser.add_argument("--bf16", choices=("auto", "true", "false"), default="auto",
                        help="train with bfloat16 autocast; auto = where the CPU has bfloat16 instructions "
                             "(AVX512-BF16/AMX) or a CUDA GPU supports it")
    parser.add_argument("--batch_size", type=int, default=8, help="training clips per optimizer step")
    parser.add_argument("--learning_rate", type=float, default=1e-3, help="peak learning rate")
    parser.add_argument("--eval_batch_size", type=int, default=8, help="clips decoded together")
    parser.add_argument("--max_new_tokens", type=int, default=128,
                        help="most tokens decoded per test clip (the test sentences need under 50; the limit "
                             "bounds the time a repetition loop of the base model costs)")
    parser.add_argument("--num_workers", type=int, default=1, help="DataLoader workers of each stage")
    parser.add_argument("--setup_started_at", type=float, default=None,
                        help="Unix time at which `make demo` began (the Makefile passes it): the environment "
                             "and model are reported as reused when they are older")
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "learning_rate", "eval_batch_size", "max_new_tokens"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}")
    if args.max_train_clips < 0:
        parser.error(f"--max_train_clips must be 0 (all) or more, got {args.max_train_clips}")
    if args.num_workers < 0:
        parser.error(f"--num_workers must be 0 or more, got {args.num_workers}")
    if not os.path.isfile(os.path.join(args.base_model, "config.json")):
        parser.error(f"--base_model: {args.base_model} is not a model folder; run `make models` "
                     f"(python tools/download_model.py --model=whisper-base)")
    for name in ("train_data", "test_data", "audio"):
        if not os.path.isfile(getattr(args, name)):
            parser.error(f"--{name}: {getattr(args, name)} not found")
    if args.reference and not os.path.isfile(args.reference):
        parser.error(f"--reference: {args.reference} not found (use --reference='' to skip scoring)")
    return args


def reuse_report(args) -> list[str]:
    """What `make demo` found already in place (environment, model) and what it made now."""
    started = args.setup_started_at or time.time()
    lines = []
    for what, path in (("environment", VENV_STAMP), ("model", os.path.join(args.base_model, "config.json"))):
        if not os.path.exists(path):
            lines.append(f"{what}: {os.path.dirname(path)} (not set up by make)")
        elif os.path.getmtime(path) < started:
            lines.append(f"{what}: {os.path.dirname(path)} already there, reused "
                         f"(from {time.strftime('%Y-%m-%d %H:%M', time.localtime(os.path.getmtime(path)))})")
        else:
            lines.append(f"{what}: {os.path.dirname(path)} set up by this run")
    return lines


def training_subset(train_data: str, max_clips: int, out_dir: str) -> str:
    """--max_train_clips lines of the manifest: every no-speech clip (so that the model keeps answering
    silence with nothing) and speech clips evenly spread over the file."""
    with open(train_data, encoding="utf-8") as handle:
        lines = [line if line.endswith("\n") else line + "\n" for line in handle if line.strip()]
    if not max_clips or max_clips >= len(lines):
        return train_data
    silent = [line for line in lines if not json.loads(line)["sentence"].strip()][:max_clips // 2]
    speech = [line for line in lines if json.loads(line)["sentence"].strip()]
    wanted = max_clips - len(silent)
    chosen = [speech[i * len(speech) // wanted] for i in range(wanted)]
    # Beside the original manifest's directory tree, relative audio paths resolve from the repository.
    path = os.path.join(out_dir, f"train_{max_clips}.jsonl")
    os.makedirs(out_dir, exist_ok=True)
    with open(f"{path}.part", "w", encoding="utf-8") as handle:
        handle.writelines(chosen + silent)
    os.replace(f"{path}.part", path)
    return path


def cer_of(report_path: str) -> dict:
    with open(report_path, encoding="utf-8") as handle:
        return json.load(handle)


def score(reference_path: str, text: str) -> Optional[float]:
    if not reference_path:
        return None
    from utils.core.metrics import error_rate

    with open(reference_path, encoding="utf-8") as handle:
        reference = handle.read().strip()
    return error_rate([reference], [text], "cer").value


def transcript_of(txt_path: str) -> str:
    with open(txt_path, encoding="utf-8") as handle:
        return " ".join(line.strip() for line in handle if line.strip())


def run_demo(args) -> Demo:
    demo = Demo(args)
    py = sys.executable
    name = os.path.basename(os.path.normpath(args.base_model))
    merged = demo.path("models", f"{name}-finetune")
    ct2_dir = demo.path("models", f"{name}-finetune-ct2")
    ggml_path = demo.path("models", f"ggml-{name}-finetune.bin")
    run_dir = demo.path("runs", name)
    audio_stem = os.path.splitext(os.path.basename(args.audio))[0]
    common = [f"--language={args.language}", f"--num_workers={args.num_workers}", "--local_files_only=True"]
    from utils.core.devices import bf16_wanted

    bf16 = bf16_wanted(args.bf16)

    print("== 1/6 CER of the base model", flush=True)
    stage = Stage("CER before (base model)", artefact=demo.path("cer_before.json"))
    demo.stages.append(stage)
    demo.run(stage, [py, "evaluation.py", f"--model_path={args.base_model}", f"--test_data={args.test_data}",
                     "--metric=cer", f"--batch_size={args.eval_batch_size}", f"--output_file={stage.artefact}",
                     f"--max_new_tokens={args.max_new_tokens}",
                     *common])

    print("== 2/6 LoRA fine-tuning (frozen encoder, its outputs computed once)", flush=True)
    stage = Stage("LoRA fine-tuning", artefact=os.path.join(run_dir, "checkpoint-final"))
    demo.stages.append(stage)
    train = training_subset(args.train_data, args.max_train_clips, demo.path())
    demo.run(stage, [py, "finetune.py", f"--base_model={args.base_model}", f"--train_data={train}",
                     f"--test_data={args.test_data}", f"--output_dir={demo.path('runs')}",
                     "--freeze_encoder=True", "--cache_encoder_outputs=True", f"--bf16={bf16}",
                     f"--num_train_epochs={args.epochs}", f"--per_device_train_batch_size={args.batch_size}",
                     f"--per_device_eval_batch_size={args.eval_batch_size}", f"--learning_rate={args.learning_rate}",
                     "--warmup_steps=10", "--logging_steps=5",
                     # The test set is decoded by stage 4; during training only the eval loss of 8 clips.
                     "--metric=none", "--eval_steps=100000", "--save_steps=100000", "--max_eval_samples=8",
                     *common])
    with open(os.path.join(run_dir, "train_results.json"), encoding="utf-8") as handle:
        trained = json.load(handle)
    stage.note = (f"{trained['global_step']} steps, {trained['train_clips']} clips of {train} x {args.epochs:g} epochs, "
                  f"{'bf16' if bf16 else 'fp32'}, loss {trained['train_loss']:.2f}")

    print("== 3/6 merge the adapter", flush=True)
    stage = Stage("merge", artefact=merged)
    demo.stages.append(stage)
    demo.run(stage, [py, "merge_lora.py", f"--lora_model={os.path.join(run_dir, 'checkpoint-final')}",
                     f"--output_dir={demo.path('models')}", "--local_files_only=True"])

    print("== 4/6 CER of the fine-tuned model", flush=True)
    stage = Stage("CER after (fine-tuned)", artefact=demo.path("cer_after.json"))
    demo.stages.append(stage)
    demo.run(stage, [py, "evaluation.py", f"--model_path={merged}", f"--test_data={args.test_data}",
                     "--metric=cer", f"--batch_size={args.eval_batch_size}", f"--output_file={stage.artefact}",
                     f"--max_new_tokens={args.max_new_tokens}",
                     *common])

    print(f"== 5/6 CTranslate2 conversion and infer_ct2.py on {args.audio}", flush=True)
    stage = Stage("CTranslate2 + infer_ct2.py", artefact=ct2_dir)
    demo.stages.append(stage)
    demo.run(stage, [py, "tools/hf_to_ct2.py", f"--model_dir={merged}", f"--output_dir={ct2_dir}",
                     "--quantization=int8", "--force=True"])
    demo.run(stage, [py, "infer_ct2.py", f"--audio_path={args.audio}", f"--model_path={ct2_dir}",
                     f"--language={args.language}", "--compute_type=int8", "--output_format=txt",
                     f"--output_dir={demo.path('ct2')}"])
    stage.text = transcript_of(demo.path("ct2", f"{audio_stem}.txt"))

    print(f"== 6/6 GGML export and whisper.cpp on {args.audio}", flush=True)
    stage = Stage("GGML + whisper.cpp", artefact=ggml_path)
    demo.stages.append(stage)
    demo.run(stage, [py, "convert-ggml.py", f"--model_dir={merged}", f"--output_path={ggml_path}"])
    demo.run(stage, [py, "-c", WHISPER_CPP, ggml_path, args.audio, args.language, demo.path("ggml")])
    stage.text = transcript_of(demo.path("ggml", f"{audio_stem}.txt"))
    return demo


def print_table(demo: Demo, reused: list[str], total: float) -> None:
    args = demo.args
    before, after = cer_of(demo.path("cer_before.json")), cer_of(demo.path("cer_after.json"))
    n = after["counts"]["utterances"]
    print("\n" + "=" * 100)
    print(f"CER on {args.test_data} ({n} clips): base {before['value']:.3f} -> fine-tuned {after['value']:.3f} "
          f"({(after['value'] - before['value']) / max(before['value'], 1e-9) * 100:+.0f}%)")
    for stage in demo.stages:
        if stage.text is not None:
            cer = score(args.reference, stage.text)
            scored = f" (CER {cer:.3f} against {args.reference})" if cer is not None else ""
            print(f"{stage.name.split(' ')[0]} on {args.audio}: {stage.text}{scored}")
    print()
    print(f"| {'stage':<28} | {'time':>7} | artefact")
    print(f"|{'-' * 30}|{'-' * 9}|{'-' * 60}")
    for stage in demo.stages:
        note = f"  [{stage.note}]" if stage.note else ""
        print(f"| {stage.name:<28} | {stage.seconds:>6.0f}s | {stage.artefact}{note}")
    print(f"| {'total':<28} | {total:>6.0f}s | logs in {demo.path('logs')}")
    for line in reused:
        print(line)
    print(f"demo: CER {before['value']:.3f} -> {after['value']:.3f} in {total / 60:.1f} min; "
          f"fine-tuned model {demo.path('models', os.path.basename(os.path.normpath(args.base_model)) + '-finetune')}",
          flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    print("----------- tools/demo.py configuration -----------")
    for key, value in vars(args).items():
        print(f"{key}: {value}")
    print("---------------------------------------------------", flush=True)
    reused = reuse_report(args)
    for line in reused:
        print(line, flush=True)
    start = time.perf_counter()
    try:
        demo = run_demo(args)
    except DemoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print_table(demo, reused, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
