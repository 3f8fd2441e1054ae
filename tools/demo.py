"""`make demo`: the whole toolkit on the real whisper-base and the shipped Mandarin sample corpus.

    python tools/demo.py                      # run time on a 2-core CPU: docs/performance.md

Stages, each one of the toolkit's own scripts run as a separate process (their progress bars show):
  1. CER of the base model on --test_data (and the error rate
     and language identification on --retention_data)         evaluation.py
  2. LoRA fine-tuning on --train_data, frozen encoder whose
     outputs are computed once and reused every epoch            finetune.py
  3. merge the adapter into a standalone model                  merge_lora.py
  4. the same for the fine-tuned model                          evaluation.py
  5. CTranslate2 conversion + transcription of --audio          tools/hf_to_ct2.py, infer_ct2.py
  6. GGML export + whisper.cpp transcription of --audio         convert-ggml.py, pywhispercpp
It ends with the reference, the base model's text and the fine-tuned model's text of a few test clips,
one under the other, then a table: CER before/after, what the model kept on --retention_data, time per stage
and where every artefact was written.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Literal, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from utils.core.cli import guarded, parse_args, print_config  # noqa: E402
from utils.core.errors import UsageError, UserError  # noqa: E402
from utils.core.files import write_text_atomic  # noqa: E402
from utils.core.models import model_name  # noqa: E402
from utils.inference.registry import default_model  # noqa: E402

VENV_STAMP = os.path.join(REPO, ".venv", ".installed")   # written by the Makefile's setup target


# Stage 6's transcription: whisper.cpp (pywhispercpp) through the toolkit's transcriber interface, the path
# infer_server.py and infer_gui.py take for GGML models (no command-line script transcribes with GGML). In its
# own process like every stage, so that a crash inside the C library is reported as a failed stage.
WHISPER_CPP = ("import sys; from utils.inference.registry import load_transcriber; "
               "from utils.inference.run import transcribe_to_outputs; "
               "from utils.inference.transcriber import TranscribeOptions; "
               "transcribe_to_outputs(load_transcriber('ggml', sys.argv[1]), sys.argv[2], "
               "TranscribeOptions(language=sys.argv[3]), output_format='txt', output_dir=sys.argv[4])")


class DemoError(UserError):
    """A stage failed or an input is missing; the message says which and where its log is."""


@dataclass
class DemoArguments:
    base_model: str = field(default=default_model("transformers"), metadata={
        "help": "Whisper model folder to start from"})
    train_data: str = field(default="dataset/zh_train.jsonl", metadata={"help": "training manifest"})
    test_data: str = field(default="dataset/zh_test.jsonl", metadata={"help": "test manifest (CER before/after)"})
    audio: str = field(default="dataset/sample_en.wav", metadata={
        "help": "file transcribed with CTranslate2 and whisper.cpp at the end, by the fine-tuned model"})
    reference: str = field(default="dataset/sample_en.txt", metadata={
        "help": "its transcript, to score the two engines ('' = do not score)"})
    audio_language: str = field(default="English", metadata={
        "help": "language spoken in --audio (scored by WER, or CER for Chinese, Japanese, Korean, Thai)"})
    language: str = field(default="Chinese", metadata={"help": "language of the data"})
    retention_data: str = field(default="dataset/en_test.jsonl", metadata={
        "help": "a test set in another language, not trained on, scored before and after fine-tuning to show "
                "what the model kept (evaluation.py --retention_data: its own metric and language "
                "identification); '' = none"})
    show_clips: int = field(default=5, metadata={
        "help": "test clips shown at the end with reference, base and fine-tuned text (the first ones "
                "holding speech); 0 = none"})
    output_dir: str = field(default="output/demo", metadata={"help": "everything the demo writes goes here"})
    max_train_clips: int = field(default=0, metadata={
        "help": "train on this many clips of --train_data (spread over the file, no-speech clips kept); 0 = all"})
    epochs: float = field(default=3, metadata={"help": "training epochs"})
    bf16: Literal["auto", "true", "false"] = field(default="auto", metadata={
        "help": "train with bfloat16 autocast; auto = where the CPU has bfloat16 instructions "
                "(AVX512-BF16/AMX) or a CUDA GPU supports it"})
    batch_size: int = field(default=8, metadata={"help": "training clips per optimizer step"})
    learning_rate: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    eval_batch_size: int = field(default=8, metadata={"help": "clips decoded together"})
    max_new_tokens: int = field(default=128, metadata={
        "help": "most tokens decoded per test clip (the test sentences need under 50; the limit bounds the "
                "time a repetition loop of the base model costs)"})
    num_workers: int = field(default=1, metadata={"help": "DataLoader workers of each stage"})
    setup_started_at: Optional[float] = field(default=None, metadata={
        "help": "Unix time at which `make demo` began (the Makefile passes it): the environment and model "
                "are reported as reused when they are older"})

    def __post_init__(self):
        for name in ("epochs", "batch_size", "learning_rate", "eval_batch_size", "max_new_tokens"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.show_clips < 0:
            raise UsageError(f"--show_clips must be 0 (none) or more, got {self.show_clips}")
        if self.max_train_clips < 0:
            raise UsageError(f"--max_train_clips must be 0 (all) or more, got {self.max_train_clips}")
        if self.num_workers < 0:
            raise UsageError(f"--num_workers must be 0 or more, got {self.num_workers}")


def check_inputs(args: DemoArguments) -> None:
    try:
        audio_metric(args.audio_language)
    except UserError as exc:
        raise DemoError(f"--audio_language: {str(exc).split(';')[0]}") from None
    if not os.path.isfile(os.path.join(args.base_model, "config.json")):
        raise DemoError(f"--base_model: {args.base_model} is not a model folder; run `make models` "
                        f"(python tools/download_model.py --model=whisper-base)")
    for name in ("train_data", "test_data", "audio"):
        if not os.path.isfile(getattr(args, name)):
            raise DemoError(f"--{name}: {getattr(args, name)} not found")
    if args.retention_data and not os.path.isfile(args.retention_data):
        raise DemoError(f"--retention_data: {args.retention_data} not found (use --retention_data='' to skip it)")
    if args.reference and not os.path.isfile(args.reference):
        raise DemoError(f"--reference: {args.reference} not found (use --reference='' to skip scoring)")


@dataclass
class Stage:
    name: str
    seconds: float = 0.0
    artefact: str = ""
    note: str = ""
    text: Optional[str] = None       # transcript of --audio, for the engine stages


@dataclass
class Demo:
    args: DemoArguments
    stages: list = field(default_factory=list)

    def path(self, *parts: str) -> str:
        return os.path.join(self.args.output_dir, *parts)

    @property
    def name(self) -> str:
        return model_name(self.args.base_model)

    def begin(self, number: int, title: str, stage: Stage) -> Stage:
        print(f"== {number}/6 {title}", flush=True)
        self.stages.append(stage)
        return stage

    def run(self, stage: Stage, command: list[str]) -> str:
        """Run one script; its progress bars (stderr) go to the terminal, its printout to a log file.
        Returns the last line it printed (every script ends with a one-line summary)."""
        script = "whisper_cpp" if command[1] == "-c" else os.path.basename(command[1])
        log_path = self.path("logs", f"{len(self.stages)}-{script}.log")
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        shown = command if command[1] != "-c" else [command[0], "-c", "<whisper.cpp via utils.inference>",
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


def reuse_report(args: DemoArguments) -> list[str]:
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
    write_text_atomic(path, "".join(chosen + silent))
    return path


def cer_of(report_path: str) -> dict:
    with open(report_path, encoding="utf-8") as handle:
        return json.load(handle)


# Written without spaces between words: scored by characters.
CHARACTER_LANGUAGES = ("zh", "ja", "ko", "th", "yue")


def audio_metric(language: str) -> str:
    from utils.core.languages import to_language_code

    return "cer" if to_language_code(language) in CHARACTER_LANGUAGES else "wer"


def score(reference_path: str, text: str, metric: str = "cer") -> Optional[float]:
    if not reference_path:
        return None
    from utils.core.metrics import error_rate

    with open(reference_path, encoding="utf-8") as handle:
        reference = " ".join(line.strip() for line in handle if line.strip())
    return error_rate([reference], [text], metric).value


def side_by_side(before: dict, after: dict, count: int, audio_paths: Optional[list] = None) -> list[str]:
    """The first `count` test clips holding speech, from evaluation.py's two reports: reference, base
    model's text and fine-tuned model's text one under the other (aligned labels read better than
    columns, which Chinese characters' double width breaks), each with its own error rate."""
    metric = after.get("metric", "cer").upper()
    lines = []
    pairs = [(b, a) for b, a in zip(before["utterances"], after["utterances"]) if b["reference"].strip()]
    for shown, (base, tuned) in enumerate(pairs[:count], start=1):
        where = f" {audio_paths[base['index']]}" if audio_paths and base["index"] < len(audio_paths) else ""
        lines.append(f"clip {shown}{where}")
        lines.append(f"  reference   {base['reference']}")
        for label, item in (("base", base), ("fine-tuned", tuned)):
            rate = item["errors"] / max(item["reference_units"], 1)
            lines.append(f"  {label:<11} {item['hypothesis'] or '(nothing)'}   [{metric} {rate:.2f}]")
    return lines


def manifest_audio(manifest: str) -> list:
    """The audio path of every line of a manifest, in order (None where a line has none)."""
    with open(manifest, encoding="utf-8") as handle:
        return [json.loads(line).get("audio", {}).get("path") for line in handle if line.strip()]


def transcript_of(txt_path: str) -> str:
    with open(txt_path, encoding="utf-8") as handle:
        return " ".join(line.strip() for line in handle if line.strip())


def evaluate(demo: Demo, stage: Stage, model_path: str) -> None:
    """evaluation.py's CER of `model_path` on --test_data, into the stage's artefact."""
    args = demo.args
    demo.run(stage, [sys.executable, "evaluation.py", f"--model_path={model_path}", f"--test_data={args.test_data}",
                     "--metric=cer", f"--batch_size={args.eval_batch_size}", f"--output_file={stage.artefact}",
                     f"--max_new_tokens={args.max_new_tokens}", f"--language={args.language}",
                     f"--num_workers={args.num_workers}", "--local_files_only=True",
                     *(["--retention_data", args.retention_data] if args.retention_data else [])])


def retention_lines(before: dict, after: dict) -> list[str]:
    """One line per retention set of evaluation.py's two reports: its error rate and language identification
    before and after fine-tuning (the check that the model still reads what it was not trained on)."""
    lines = []
    for base, tuned in zip(before.get("retention", ()), after.get("retention", ())):
        metric = base["metric"].upper()
        text = (f"kept on {base['test_data']} (not trained on): {metric} {base['value']:.3f} -> "
                f"{tuned['value']:.3f}")
        lid_before, lid_after = base.get("language_identification"), tuned.get("language_identification")
        if lid_before and lid_after:
            text += (f", language identified {lid_before['correct']}/{lid_before['clips']} -> "
                     f"{lid_after['correct']}/{lid_after['clips']}")
        lines.append(text)
    return lines


def fine_tune(demo: Demo, stage: Stage, bf16: bool) -> None:
    """finetune.py with a frozen encoder whose outputs are computed once; the stage's note says what it did."""
    args = demo.args
    train = training_subset(args.train_data, args.max_train_clips, demo.path())
    demo.run(stage, [sys.executable, "finetune.py", f"--base_model={args.base_model}", f"--train_data={train}",
                     f"--test_data={args.test_data}", f"--output_dir={demo.path('runs')}",
                     "--freeze_encoder=True", "--cache_encoder_outputs=True", f"--bf16={bf16}",
                     f"--num_train_epochs={args.epochs}", f"--per_device_train_batch_size={args.batch_size}",
                     f"--per_device_eval_batch_size={args.eval_batch_size}", f"--learning_rate={args.learning_rate}",
                     "--warmup_steps=10", "--logging_steps=5",
                     # The test set is decoded by stage 4; during training only the eval loss of 8 clips.
                     "--metric=none", "--eval_steps=100000", "--save_steps=100000", "--max_eval_samples=8",
                     f"--language={args.language}", f"--num_workers={args.num_workers}", "--local_files_only=True"])
    with open(demo.path("runs", demo.name, "train_results.json"), encoding="utf-8") as handle:
        trained = json.load(handle)
    stage.note = (f"{trained['global_step']} steps, {trained['train_clips']} clips of {train} x "
                  f"{args.epochs:g} epochs, {'bf16' if bf16 else 'fp32'}, loss {trained['train_loss']:.2f}")


def transcribe_ct2(demo: Demo, stage: Stage, merged: str) -> None:
    args = demo.args
    demo.run(stage, [sys.executable, "tools/hf_to_ct2.py", f"--model_dir={merged}", f"--output_dir={stage.artefact}",
                     "--quantization=int8", "--force=True"])
    demo.run(stage, [sys.executable, "infer_ct2.py", f"--audio_path={args.audio}", f"--model_path={stage.artefact}",
                     f"--language={args.audio_language}", "--compute_type=int8", "--output_format=txt",
                     f"--output_dir={demo.path('ct2')}"])
    stage.text = transcript_of(demo.path("ct2", f"{audio_stem(args)}.txt"))


def transcribe_ggml(demo: Demo, stage: Stage, merged: str) -> None:
    args = demo.args
    demo.run(stage, [sys.executable, "convert-ggml.py", f"--model_dir={merged}", f"--output_path={stage.artefact}"])
    demo.run(stage, [sys.executable, "-c", WHISPER_CPP, stage.artefact, args.audio, args.audio_language,
                     demo.path("ggml")])
    stage.text = transcript_of(demo.path("ggml", f"{audio_stem(args)}.txt"))


def audio_stem(args: DemoArguments) -> str:
    return os.path.splitext(os.path.basename(args.audio))[0]


def run_demo(args: DemoArguments) -> Demo:
    from utils.core.devices import bf16_wanted

    demo = Demo(args)
    merged = demo.path("models", f"{demo.name}-finetune")
    checkpoint = demo.path("runs", demo.name, "checkpoint-final")

    stage = demo.begin(1, "CER of the base model", Stage("CER before (base model)",
                                                         artefact=demo.path("cer_before.json")))
    evaluate(demo, stage, args.base_model)

    stage = demo.begin(2, "LoRA fine-tuning (frozen encoder, its outputs computed once)",
                       Stage("LoRA fine-tuning", artefact=checkpoint))
    fine_tune(demo, stage, bf16_wanted(args.bf16))

    stage = demo.begin(3, "merge the adapter", Stage("merge", artefact=merged))
    demo.run(stage, [sys.executable, "merge_lora.py", f"--lora_model={checkpoint}",
                     f"--output_dir={demo.path('models')}", "--local_files_only=True"])

    stage = demo.begin(4, "CER of the fine-tuned model", Stage("CER after (fine-tuned)",
                                                               artefact=demo.path("cer_after.json")))
    evaluate(demo, stage, merged)

    stage = demo.begin(5, f"CTranslate2 conversion and infer_ct2.py on {args.audio}",
                       Stage("CTranslate2 + infer_ct2.py", artefact=f"{merged}-ct2"))
    transcribe_ct2(demo, stage, merged)

    stage = demo.begin(6, f"GGML export and whisper.cpp on {args.audio}",
                       Stage("GGML + whisper.cpp", artefact=demo.path("models", f"ggml-{demo.name}-finetune.bin")))
    transcribe_ggml(demo, stage, merged)
    return demo


def print_table(demo: Demo, reused: list[str], total: float) -> None:
    args = demo.args
    before, after = cer_of(demo.path("cer_before.json")), cer_of(demo.path("cer_after.json"))
    n = after["counts"]["utterances"]
    print("\n" + "=" * 100)
    print(f"CER on {args.test_data} ({n} clips): base {before['value']:.3f} -> fine-tuned {after['value']:.3f} "
          f"({(after['value'] - before['value']) / max(before['value'], 1e-9) * 100:+.0f}%)")
    for line in retention_lines(before, after):
        print(line)
    metric = audio_metric(args.audio_language)
    for stage in demo.stages:
        if stage.text is not None:
            rate = score(args.reference, stage.text, metric)
            scored = f" ({metric.upper()} {rate:.3f} against {args.reference})" if rate is not None else ""
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
    clips = side_by_side(before, after, args.show_clips, manifest_audio(args.test_data))
    if clips:
        shown = sum(line.startswith("clip ") for line in clips)
        print(f"\nthe first {shown} test clips with speech, reference / base / fine-tuned:")
        for line in clips:
            print(line)
    print(f"demo: CER {before['value']:.3f} -> {after['value']:.3f} in {total / 60:.1f} min; "
          f"fine-tuned model {demo.path('models', demo.name + '-finetune')}",
          flush=True)


def demo_run(args: DemoArguments) -> None:
    check_inputs(args)
    print_config("tools/demo.py configuration", args)
    reused = reuse_report(args)
    for line in reused:
        print(line, flush=True)
    start = time.perf_counter()
    demo = run_demo(args)
    print_table(demo, reused, time.perf_counter() - start)


def main(argv=None) -> int:
    args = parse_args(DemoArguments, argv, description=__doc__)
    return guarded(lambda: demo_run(args))


if __name__ == "__main__":
    sys.exit(main())
