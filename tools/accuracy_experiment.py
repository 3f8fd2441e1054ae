"""The project's own accuracy table: whisper-base zero-shot vs LoRA vs AdaLoRA on synthetic Mandarin and English.

    python tools/accuracy_experiment.py            # writes docs/accuracy.md; run time: docs/performance.md

Every number comes from the toolkit's own scripts run as separate processes (finetune.py, merge_lora.py,
evaluation.py, so CER/WER use evaluation.py's normalisation, named in the table); this script only orders
them, measures each one's wall time and peak memory, checks that the fine-tuned models still give an empty
transcript for clips without speech and timestamps when asked, and writes the table and a training-curve PNG.
Finished steps are remembered in <output_dir>/results.json, so an interrupted run continues where it stopped.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Literal, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from utils.bench.measured_run import StageFailed, run_measured  # noqa: E402
from utils.bench.report import command_line, pyplot, save_figure  # noqa: E402
from utils.core.cli import guarded, parse_args, print_config  # noqa: E402
from utils.core.errors import UsageError, UserError  # noqa: E402
from utils.core.files import write_json_atomic, write_text_atomic  # noqa: E402
from utils.core.models import model_name  # noqa: E402
from utils.core.text import PUNCTUATION_SIMPLIFIED, WHISPER_ENGLISH  # noqa: E402
from utils.inference.registry import default_model  # noqa: E402

# "zh+": the Mandarin rows' data plus --more_readings extra readings of every training sentence.
DATA_SETS = ("zh", "zh+", "en")
METHODS = ("zero-shot", "lora", "adalora", "lora-timestamps")
# Retention options a fine-tuning method takes after "+" (zh-lora+nolangloss+replay): finetune.py's flags.
OPTIONS = {"nolangloss": "no loss on the language token (--mask_lang_token_loss)",
           "notaskloss": "no loss on the language and task tokens (--mask_lang_token_loss --mask_task_token_loss)",
           "replay": "replay of the other language's training clips (--replay_data, --replay_ratio)",
           "r8": "LoRA rank 8 instead of --lora_r (--lora_r=8 --lora_alpha=16)",
           "encoder": "adapters in the encoder too (--freeze_encoder=False)"}
EN_TRAIN_SETTINGS = dict(variants="m1,m7,f1,f3", rates="140,160", pitches="40,55")  # en_test uses none of these


@dataclass
class Experiment:
    language: str          # one of DATA_SETS
    method: str            # one of METHODS
    options: tuple = ()    # of OPTIONS, in the order given

    @property
    def name(self) -> str:
        return f"{self.language}-{'+'.join((self.method, *self.options))}"


def parse_experiments(text: str) -> list[Experiment]:
    experiments = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        language, _, method = item.partition("-")
        method, *options = method.split("+")
        if language not in DATA_SETS or method not in METHODS:
            raise UsageError(f"--experiments: {item!r} is not <language>-<method> with language in "
                             f"{', '.join(DATA_SETS)} and method in {', '.join(METHODS)}")
        unknown = [o for o in options if o not in OPTIONS]
        if unknown or (options and method == "zero-shot"):
            raise UsageError(f"--experiments: {item!r}: options after '+' are for fine-tuning methods, one of "
                             f"{', '.join(OPTIONS)}")
        experiments.append(Experiment(language, method, tuple(options)))
    if not experiments:
        raise UsageError("--experiments is empty")
    return experiments


@dataclass
class AccuracyArguments:
    base_model: str = field(default=default_model("transformers"), metadata={
        "help": "Whisper model folder to fine-tune"})
    zh_train: str = field(default="dataset/zh_train.jsonl", metadata={"help": "Mandarin training manifest"})
    zh_test: str = field(default="dataset/zh_test.jsonl", metadata={
        "help": "Mandarin test manifest (sentences and voices not in --zh_train)"})
    en_train: Optional[str] = field(default=None, metadata={
        "help": "English training manifest; default: synthesised into <output_dir>/en_train.jsonl "
                "from tools/accuracy_sentences_en.txt with voices en_test does not use"})
    en_test: str = field(default="dataset/en_test.jsonl", metadata={"help": "English test manifest"})
    # zh+-lora, the longest run (three times the clips), last: an interrupted run has every other row.
    experiments: str = field(default="zh-zero-shot,zh-lora,zh-lora+nolangloss,zh-lora+replay,"
                                     "zh-lora+nolangloss+replay,zh-adalora,zh-lora-timestamps,"
                                     "en-zero-shot,en-lora,en-lora+nolangloss,en-lora+replay,en-adalora,zh+-lora",
                             metadata={
        "help": "comma-separated <language>-<method>[+option...], languages: zh, zh+ (zh with more training "
                "readings), en; methods: " + ", ".join(METHODS) + "; options: "
                + "; ".join(f"{k}: {v}" for k, v in OPTIONS.items())})
    train_every: int = field(default=1, metadata={
        "help": "train on every N-th line of the Mandarin training manifest (1 = all of it): a shorter run "
                "for a busy machine; the table says how many clips each row trained on"})
    replay_ratio: float = field(default=0.1, metadata={
        "help": "+replay rows: share of the training clips that are the other language's training clips"})
    more_readings: int = field(default=2, metadata={
        "help": "zh+ rows: extra readings of every Mandarin training sentence, each in a voice setting of "
                "the training split (tools/synthesize_speech.py more-train)"})
    epochs: float = field(default=3, metadata={"help": "training epochs per fine-tuning run"})
    batch_size: int = field(default=8, metadata={"help": "training clips per step"})
    learning_rate: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    lora_r: int = field(default=32, metadata={"help": "adapter rank (AdaLoRA: target average rank)"})
    freeze_encoder: bool = field(default=True, metadata={
        "help": "adapters only in the decoder (encoder outputs computed once and reused); False puts them "
                "in the encoder too, slower per step (docs/performance.md)"})
    bf16: Literal["auto", "true", "false"] = field(default="auto", metadata={
        "help": "train with bfloat16 autocast; auto = where the CPU has bfloat16 instructions "
                "(AVX512-BF16/AMX) or a CUDA GPU supports it"})
    eval_batch_size: int = field(default=8, metadata={"help": "clips decoded together in evaluation"})
    num_workers: int = field(default=1, metadata={"help": "DataLoader workers of each stage"})
    output_dir: str = field(default="output/accuracy", metadata={"help": "runs, merged models, reports"})
    table: str = field(default="docs/accuracy.md", metadata={"help": "markdown file to write"})
    plot: str = field(default="docs/accuracy_curves.png", metadata={"help": "training-curve PNG to write"})
    readme: str = field(default="README.md", metadata={
        "help": "README whose 'accuracy' section (between its marker comments) gets the table; '' = none"})
    rerun: bool = field(default=False, metadata={"help": "ignore results.json and run every step again"})
    # --bf16 resolved on this machine (auto -> true/false) when the run starts; not a flag.
    use_bf16: bool = field(default=False, init=False)

    def __post_init__(self):
        parse_experiments(self.experiments)
        for name in ("epochs", "batch_size", "learning_rate", "lora_r", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.more_readings < 1:
            raise UsageError(f"--more_readings must be at least 1, got {self.more_readings}")
        if self.num_workers < 0:
            raise UsageError(f"--num_workers must be 0 or more, got {self.num_workers}")
        if self.train_every < 1:
            raise UsageError(f"--train_every must be at least 1, got {self.train_every}")
        if not 0 < self.replay_ratio < 1:
            raise UsageError(f"--replay_ratio must be in (0, 1), got {self.replay_ratio}")

    @property
    def experiment_list(self) -> list[Experiment]:
        return parse_experiments(self.experiments)


def check_inputs(args: AccuracyArguments) -> None:
    if not os.path.isfile(os.path.join(args.base_model, "config.json")):
        raise UserError(f"--base_model: {args.base_model} is not a model folder; run "
                        f"`python tools/download_model.py --model=whisper-base`")
    for name in ("zh_train", "zh_test", "en_test", "en_train"):
        path = getattr(args, name)
        if path is not None and not os.path.isfile(path):
            raise UserError(f"--{name}: {path} not found")


def english_train(args: AccuracyArguments) -> str:
    if args.en_train:
        return args.en_train
    manifest = os.path.join(args.output_dir, "en_train.jsonl")
    if not os.path.isfile(manifest):
        run_measured([sys.executable, "tools/synthesize_speech.py", "clips",
                      "--text_file=tools/accuracy_sentences_en.txt", "--language=English",
                      f"--variants={EN_TRAIN_SETTINGS['variants']}", f"--rates={EN_TRAIN_SETTINGS['rates']}",
                      f"--pitches={EN_TRAIN_SETTINGS['pitches']}", "--seed=7",
                      f"--output_dir={os.path.join(args.output_dir, 'en_train_audio')}",
                      f"--manifest={manifest}", "--prefix=en_train", "--no_speech=4"],
                     os.path.join(args.output_dir, "logs", "synthesize_en_train.log"))
    return manifest


def mandarin_train(args: AccuracyArguments) -> str:
    """--zh_train, or every --train_every-th line of it."""
    if args.train_every == 1:
        return args.zh_train
    manifest = os.path.join(args.output_dir, f"zh_train_every{args.train_every}.jsonl")
    with open(args.zh_train, encoding="utf-8") as handle:
        lines = [line if line.endswith("\n") else line + "\n" for line in handle if line.strip()]
    write_text_atomic(manifest, "".join(lines[::args.train_every]))
    return manifest


def mandarin_plus(args: AccuracyArguments) -> str:
    """--zh_train followed by --more_readings new readings of its sentences in training voices."""
    manifest = os.path.join(args.output_dir, f"zh_train_plus{args.more_readings}.jsonl")
    if os.path.isfile(manifest):
        return manifest
    more = os.path.join(args.output_dir, f"zh_train_more{args.more_readings}.jsonl")
    run_measured([sys.executable, "tools/synthesize_speech.py", "more-train", f"--readings={args.more_readings}",
                  f"--output_dir={os.path.join(args.output_dir, 'zh_train_more_audio')}", f"--manifest={more}"],
                 os.path.join(args.output_dir, "logs", "synthesize_zh_train_more.log"))
    with open(args.zh_train, encoding="utf-8") as first, open(more, encoding="utf-8") as second:
        lines = [line if line.endswith("\n") else line + "\n" for line in (*first, *second) if line.strip()]
    write_text_atomic(manifest, "".join(lines))
    return manifest


def retention_of(args: AccuracyArguments, language: str) -> tuple[str, str]:
    """(the other language's test manifest, its training manifest for replay)."""
    if language == "en":
        return args.zh_test, args.zh_train
    return args.en_test, english_train(args)


def data_of(args: AccuracyArguments, language: str) -> tuple[str, str, str, str]:
    """(train, test, language name, metric)."""
    if language == "zh":
        return mandarin_train(args), args.zh_test, "Chinese", "cer"
    if language == "zh+":
        return mandarin_plus(args), args.zh_test, "Chinese", "cer"
    return english_train(args), args.en_test, "English", "wer"


def fine_tune(args: AccuracyArguments, exp: Experiment, train: str, test: str, language: str,
              result: dict) -> str:
    """finetune.py then merge_lora.py for one row; their measurements and the loss curve go into
    `result`. Returns the merged model's folder."""
    out = os.path.join(args.output_dir, exp.name)
    logs = os.path.join(args.output_dir, "logs")
    rank = 8 if "r8" in exp.options else args.lora_r
    freeze_encoder = args.freeze_encoder and "encoder" not in exp.options
    # Every retention flag is given, so a row means the same whatever finetune.py's defaults are.
    command = [sys.executable, "finetune.py", f"--base_model={args.base_model}", f"--train_data={train}",
               f"--test_data={test}", f"--output_dir={out}", f"--language={language}",
               f"--freeze_encoder={freeze_encoder}", f"--use_adalora={exp.method == 'adalora'}",
               f"--timestamps={exp.method == 'lora-timestamps'}", f"--num_train_epochs={args.epochs}",
               f"--per_device_train_batch_size={args.batch_size}",
               f"--per_device_eval_batch_size={args.eval_batch_size}", f"--learning_rate={args.learning_rate}",
               "--warmup_steps=20", f"--lora_r={rank}", f"--lora_alpha={2 * rank}",
               f"--mask_lang_token_loss={'nolangloss' in exp.options or 'notaskloss' in exp.options}",
               f"--mask_task_token_loss={'notaskloss' in exp.options}",
               "--logging_steps=5",
               # Evaluated once, on eval loss, at the end: decoding is measured afterwards by evaluation.py.
               "--metric=none", "--eval_steps=100000", "--save_steps=100000", "--max_eval_samples=16",
               f"--num_workers={args.num_workers}", "--local_files_only=True", f"--bf16={args.use_bf16}"]
    if "replay" in exp.options:
        command += [f"--replay_data={retention_of(args, exp.language)[1]}", f"--replay_ratio={args.replay_ratio}"]
    if freeze_encoder:
        command.append(f"--encoder_cache_dir={os.path.join(args.output_dir, 'encoder_cache')}")
    result["train"] = run_measured(command, os.path.join(logs, f"{exp.name}.finetune.log"))
    name = model_name(args.base_model)
    with open(os.path.join(out, name, "train_results.json"), encoding="utf-8") as handle:
        train_results = json.load(handle)
    result["train"].update(steps=train_results["global_step"], clips=train_results["train_clips"],
                           epochs=args.epochs, encoder_cache_seconds=train_results["encoder_cache_seconds"])
    with open(os.path.join(out, name, "checkpoint-final", "trainer_state.json"), encoding="utf-8") as handle:
        history = json.load(handle)["log_history"]
    result["curve"] = [[row["step"], row["loss"]] for row in history if "loss" in row]
    result["merge"] = run_measured([sys.executable, "merge_lora.py",
                                    f"--lora_model={os.path.join(out, name, 'checkpoint-final')}",
                                    f"--output_dir={os.path.join(out, 'merged')}", "--local_files_only=True"],
                                   os.path.join(logs, f"{exp.name}.merge.log"))
    return os.path.join(out, "merged", f"{name}-finetune")


def run_experiment(args: AccuracyArguments, exp: Experiment) -> dict:
    """One row: fine-tune (unless zero-shot), evaluation.py's CER/WER, then the ability checks."""
    train, test, language, metric = data_of(args, exp.language)
    retention_test = retention_of(args, exp.language)[0]
    result: dict = {"language": exp.language, "method": exp.method, "options": list(exp.options),
                    "metric": metric, "test_data": test}
    try:
        model_path = (args.base_model if exp.method == "zero-shot"
                      else fine_tune(args, exp, train, test, language, result))
        report = os.path.join(args.output_dir, exp.name, "evaluation.json")
        result["evaluate"] = run_measured(
            [sys.executable, "evaluation.py", f"--model_path={model_path}", f"--test_data={test}",
             f"--metric={metric}", f"--language={language}", f"--timestamps={exp.method == 'lora-timestamps'}",
             f"--batch_size={args.eval_batch_size}", f"--num_workers={args.num_workers}",
             f"--output_file={report}", "--local_files_only=True", "--retention_data", retention_test],
            os.path.join(args.output_dir, "logs", f"{exp.name}.evaluate.log"))
    except StageFailed as exc:
        raise StageFailed(f"{exp.name}: {exc}") from None
    with open(report, encoding="utf-8") as handle:
        evaluation = json.load(handle)
    result["value"] = evaluation["value"]
    result["normalizer"] = evaluation["normalizer"]
    result["counts"] = evaluation["counts"]
    result["lid"] = evaluation["language_identification"]
    kept = evaluation["retention"][0]
    result["retention"] = {"test_data": kept["test_data"], "metric": kept["metric"], "value": kept["value"],
                           "normalizer": kept["normalizer"], "counts": kept["counts"],
                           "lid": kept["language_identification"]}
    result["model_path"] = model_path
    result["checks"] = check_abilities(model_path, test, language)
    return result


def manifest_rows(test: str) -> list[dict]:
    """The rows of `test`, each audio path resolved from the repository or from the manifest's folder."""
    with open(test, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    base = os.path.dirname(os.path.abspath(test))
    for row in rows:
        path = row["audio"]["path"]
        row["audio"]["path"] = path if os.path.exists(path) else os.path.join(base, path)
    return rows


def clip_audio(row: dict):
    from utils.core.audio import load_audio

    return load_audio(row["audio"]["path"], row["audio"].get("start_time"), row["audio"].get("end_time"))


def no_speech_check(transcriber, silent: list, language: str) -> dict:
    """The clips without speech through the toolkit's own transcription path, exactly as `infer.py`
    decodes them (timestamps on, so Whisper's no-speech rule applies), and the model's no-speech
    probability at the first decoding step of each."""
    import torch

    from evaluation import no_speech_probabilities
    from utils.core.audio import SAMPLE_RATE
    from utils.data.labels import special_ids
    from utils.inference.transcriber import TranscribeOptions

    model, processor = transcriber.model, transcriber.processor
    options = TranscribeOptions(language=language, timestamps=True)
    texts = [" ".join(seg.text for seg in transcriber.transcribe(audio, options)[0]).strip() for audio in silent]
    nospeech = special_ids(processor.tokenizer).nospeech
    probabilities = []
    for audio in silent:
        features = processor.feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        with torch.inference_mode():
            encoded = model.get_encoder()(features)
            probabilities.append(round(float(no_speech_probabilities(model, encoded, nospeech)[0]), 3))
    return {"no_speech_empty": sum(1 for t in texts if not t), "no_speech_clips": len(silent),
            "no_speech_texts": texts, "no_speech_probabilities": probabilities}


def timestamp_check(transcriber, clips: list[dict], language: str) -> dict:
    """The manifest rows `clips` decoded with return_timestamps=True: every segment must lie within its clip."""
    import torch

    from utils.core.audio import SAMPLE_RATE

    model, processor = transcriber.model, transcriber.processor
    stamped = []
    for row in clips:
        audio = clip_audio(row)
        features = processor.feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        with torch.inference_mode():
            tokens = model.generate(features, language=language, task="transcribe", return_timestamps=True,
                                    max_new_tokens=128)[0]
        offsets = processor.tokenizer.decode(tokens, output_offsets=True)["offsets"]
        duration = row.get("duration") or 30.0
        good = bool(offsets) and all(o["timestamp"][1] is not None and 0 <= o["timestamp"][0] < o["timestamp"][1]
                                     <= duration + 1.0 for o in offsets)
        stamped.append({"ok": good, "segments": [[o["timestamp"][0], o["timestamp"][1], o["text"]]
                                                 for o in offsets]})
    return {"timestamps_ok": sum(1 for s in stamped if s["ok"]), "timestamp_clips": len(stamped),
            "timestamp_example": stamped[0]["segments"] if stamped else []}


def check_abilities(model_path: str, test: str, language: str, n_timestamp_clips: int = 4) -> dict:
    """No speech -> empty transcript, and timestamp tokens when asked.

    The clips without speech are the test split's no-speech clips and 5 s of noise at about -50 dBFS,
    loud enough that the silence guard does not skip it. The timestamp check decodes the first speech
    clips. One model load serves both checks: the transcriber's own model and processor."""
    import numpy as np

    from utils.core.audio import SAMPLE_RATE
    from utils.inference.registry import load_transcriber

    transcriber = load_transcriber("transformers", model_path)
    rows = manifest_rows(test)
    silent = [clip_audio(row) for row in rows if not row["sentence"].strip()]
    silent.append((np.random.default_rng(0).standard_normal(5 * SAMPLE_RATE) * 3e-3).astype(np.float32))
    speech = [row for row in rows if row["sentence"].strip()][:n_timestamp_clips]
    return {**no_speech_check(transcriber, silent, language), **timestamp_check(transcriber, speech, language)}


def experiment_seconds(result: dict) -> float:
    """Wall time of one experiment row (older results: the sum of its measured stages)."""
    if "seconds" in result:
        return result["seconds"]
    return sum(result[stage]["seconds"] for stage in ("train", "merge", "evaluate") if stage in result)


def header_of(args: AccuracyArguments, ordered: list[dict]) -> str:
    total_seconds = sum(experiment_seconds(r) for r in ordered)
    return (f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared), "
            f"{platform.system()} {platform.release()}; CPU only, training in "
            f"{'bf16 autocast' if args.use_bf16 else 'fp32'}, evaluation in fp32. "
            f"Total time {total_seconds / 60:.0f} min.")


def table_row(args: AccuracyArguments, r: dict, zero_shot: dict, zero_shot_rows: Optional[dict] = None) -> str:
    """One experiment as a markdown table row; `zero_shot` maps a language to its zero-shot value
    (`zero_shot_rows` to its zero-shot row, for the retention change)."""
    zero_shot_rows = zero_shot_rows or {}
    data = {"zh": "Mandarin (zh_test)", "en": "English (en_test)"}.get(
        r["language"], f"Mandarin (zh_test), {args.more_readings + 1} readings per training sentence")
    change = ""
    base = zero_shot.get(r["language"].rstrip("+"))
    if r["method"] != "zero-shot" and base:
        change = f" ({(r['value'] - base) / base * 100:+.0f}%)"
    train = r.get("train")
    clips = f", {train['clips']} clips" if train and train.get("clips") and args.train_every > 1 else ""
    train_time = (f"{train['seconds'] / 60:.1f} min ({train['steps']} steps, {train['epochs']:g} ep{clips})"
                  if train else "-")
    rss = f"{train['peak_rss_gib']:.1f} GiB" if train else "-"
    c = r["checks"]
    probabilities = c.get("no_speech_probabilities")
    no_speech = f"{c['no_speech_empty']}/{c['no_speech_clips']}"
    if probabilities:
        low, high = f"{min(probabilities):.2f}", f"{max(probabilities):.2f}"
        no_speech += f" (P {low})" if low == high else f" (P {low}-{high})"
    return (f"| {data} | {row_method(r)} | {r['metric'].upper()} {r['value']:.3f}{change} | "
            f"{r['counts']['errors']} / {r['counts']['reference_units']} | {train_time} | {rss} | "
            f"{no_speech} | {c['timestamps_ok']}/{c['timestamp_clips']} | "
            # Rows measured before evaluation.py named its normaliser all used punctuation-simplified.
            f"{r.get('normalizer', PUNCTUATION_SIMPLIFIED)} | {lid_cell(r.get('lid'))} | "
            f"{retention_cell(r, zero_shot_rows)} | {lid_cell((r.get('retention') or {}).get('lid'))} |")


def row_method(r: dict) -> str:
    return "+".join((r["method"], *r.get("options", ())))


def lid_cell(lid) -> str:
    """LID accuracy and the mean probability of the expected language ("-": not measured)."""
    if not lid or lid.get("accuracy") is None:
        return "-"
    return f"{lid['correct']}/{lid['clips']} (p {lid['mean_reference_probability']:.2f})"


def retention_cell(r: dict, zero_shot_rows: dict) -> str:
    """The other language's test set: its metric, and the change against the zero-shot model on it."""
    kept = r.get("retention")
    if not kept:
        return "-"
    base = (zero_shot_rows.get(r["language"].rstrip("+")) or {}).get("retention")
    change = ""
    if r["method"] != "zero-shot" and base and base["value"]:
        change = f" ({(kept['value'] - base['value']) / base['value'] * 100:+.0f}%)"
    return f"{kept['metric'].upper()} {kept['value']:.3f}{change}"


def table_lines(args: AccuracyArguments, ordered: list[dict]) -> list[str]:
    zero_shot = {r["language"]: r["value"] for r in ordered if r["method"] == "zero-shot"}
    zero_shot_rows = {r["language"]: r for r in ordered if r["method"] == "zero-shot"}
    return ["| data | model | CER/WER | errors / ref units | train time | train peak RSS | no speech -> empty "
            "| timestamps when asked | normaliser | LID | other language | other language LID |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *(table_row(args, r, zero_shot, zero_shot_rows) for r in ordered)]


def method_notes(args: AccuracyArguments) -> list[str]:
    """How every column of the table is measured."""
    return [
        "- CER/WER: `evaluation.py` (greedy decoding, at most 225 new tokens, Whisper's no-speech rule (a clip "
        "whose no-speech probability is above 0.6 gets an empty text), a clip caught in a repetition loop "
        "stops decoding (its repeats so far still count)), corpus-level over all test clips; in brackets the "
        "change against zero-shot. Normaliser (`evaluation.py --normalizer=auto`): English with Whisper's "
        f"English normaliser (`{WHISPER_ENGLISH}`: transformers' EnglishTextNormalizer with the tokenizer's "
        "normalizer.json, so \"twenty\" and \"20\" are one word), as published Whisper WERs are computed; "
        f"Mandarin with `{PUNCTUATION_SIMPLIFIED}` (NFKC, traditional -> simplified, punctuation removed, "
        "lower case).",
        f"- Fine-tuning: {args.epochs:g} epochs, batch {args.batch_size}, learning rate {args.learning_rate:g}, "
        + (f"the Mandarin rows on every {args.train_every}th line of `{args.zh_train}` (`--train_every`, a "
           f"shorter run for a busy machine; clip counts in the train time column), " if args.train_every > 1
           else "")
        + f"rank {args.lora_r}, adapters on q/k/v/out/fc1/fc2 of "
        + ("the decoder only (`--freeze_encoder`, encoder outputs computed once and reused)"
           if args.freeze_encoder else "encoder and decoder")
        + "; `lora-timestamps` trains on timestamp labels and is evaluated in timestamp mode.",
        "- LID: language identification by `evaluation.py` (the language token the model ranks first right "
        "after <|startoftranscript|>, as Whisper's detect_language) against each clip's manifest `language`, "
        "over the clips with speech; in brackets the mean probability of the right language. Other language: "
        "the other corpus's test split (English `en_test` for the Mandarin rows, Mandarin `zh_test` for the "
        "English rows) through `evaluation.py --retention_data`, decoded with its own language token and "
        "scored with its own metric and normaliser; in brackets the change against the zero-shot model. "
        "Options after `+`: " + "; ".join(f"`{k}` {v}" for k, v in OPTIONS.items())
        + f"; replay ratio {args.replay_ratio:g} (English replay: the English training clips below; "
        "Mandarin replay: `dataset/zh_train.jsonl`). Rows without `nolangloss` train the language token. "
        "finetune.py's default (`--mask_lang_token_loss=auto`) is the `nolangloss` row for a one-language run "
        "and the `replay` row (language token trained) when `--replay_data` is given.",
        "- Train time: the whole `finetune.py` process (model loading, the encoder pass, training); peak RSS "
        "of that process and its DataLoader workers.",
        "- No speech -> empty: the test split's no-speech clips plus 5 s of noise at about -50 dBFS, "
        "transcribed the way `infer.py` does it (timestamps on, so Whisper's no-speech rule applies), give "
        "an empty text; in brackets the range of the model's no-speech probability at the first decoding "
        "step over those clips (Whisper's threshold is 0.6). Timestamps: the first speech clips decoded "
        "with `return_timestamps=True` give segments with "
        "0 <= start < end <= clip length.",
        "- Mandarin: espeak-ng reading pinyin (see `docs/data-tools.md`); the test split's sentences and "
        "voice settings never occur in training. The `zh+` rows train on `dataset/zh_train.jsonl` plus "
        f"{args.more_readings} more readings of each of its sentences, each in a voice setting of the training "
        "split (`tools/synthesize_speech.py more-train`), so the test split stays unseen. "
        "English: `dataset/en_test.jsonl`; training clips from "
        "`tools/accuracy_sentences_en.txt` with other espeak-ng voices "
        f"({EN_TRAIN_SETTINGS['variants']}, rates {EN_TRAIN_SETTINGS['rates']}).",
        ""]


def plot_curves(curves: list[dict], path: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in curves:
        steps, losses = zip(*r["curve"])
        ax.plot(steps, losses, label=f"{r['language']}-{row_method(r)}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title("whisper-base fine-tuning on the synthetic corpora")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def write_outputs(args: AccuracyArguments, results: dict, command: str) -> None:
    """--table (every row and how it is measured), the README's accuracy section and --plot."""
    ordered = [results[e.name] for e in args.experiment_list if e.name in results]
    header = header_of(args, ordered)
    missing = [e.name for e in args.experiment_list if e.name not in results]
    partial = ([f"**Partial table**: not finished yet: {', '.join(missing)}. Running the command again keeps "
                f"the finished rows (`<output_dir>/results.json`) and runs the rest.", ""] if missing else [])
    table = table_lines(args, ordered)
    curves = [r for r in ordered if r.get("curve")]
    lines = ["# Accuracy: whisper-base fine-tuned on the synthetic corpora", "",
             "Generated by `tools/accuracy_experiment.py`; do not edit by hand. Command:", "",
             "```bash", command, "```", "", header, "", *partial, *table, "", *method_notes(args)]
    if curves:
        lines += [f"![training loss]({os.path.relpath(args.plot, os.path.dirname(args.table))})", ""]
    examples = [r for r in ordered if r["checks"].get("timestamp_example")]
    if examples:
        r = examples[-1]
        lines += [f"Timestamps from `{r['language']}-{r['method']}` on the first test clip: "
                  + ", ".join(f"{s:.2f}-{e:.2f} s \"{t.strip()}\"" for s, e, t in r["checks"]["timestamp_example"]),
                  ""]
    write_text_atomic(args.table, "\n".join(lines))
    if args.readme:
        from utils.bench.readme_section import replace_section

        def rel(path):
            return os.path.relpath(path, os.path.dirname(os.path.abspath(args.readme)))

        body = ["```bash", command, "```", "", header, "", *partial, *table, ""]
        if curves:
            body += [f"![training loss]({rel(args.plot)})", ""]
        body.append(f"How each column is measured: [{rel(args.table)}]({rel(args.table)}).")
        replace_section(args.readme, "accuracy", "\n".join(body))
    if curves:
        plot_curves(curves, args.plot)


def load_results(args: AccuracyArguments) -> tuple[str, dict]:
    """results.json's path and the rows finished before (none with --rerun)."""
    os.makedirs(args.output_dir, exist_ok=True)
    results_path = os.path.join(args.output_dir, "results.json")
    if os.path.isfile(results_path) and not args.rerun:
        with open(results_path, encoding="utf-8") as handle:
            return results_path, json.load(handle)
    return results_path, {}


def run(args: AccuracyArguments, command: str) -> None:
    from tqdm import tqdm

    from utils.core.devices import bf16_wanted

    check_inputs(args)
    args.use_bf16 = bf16_wanted(args.bf16)
    print_config("accuracy_experiment.py configuration", args)
    results_path, results = load_results(args)
    start = time.perf_counter()
    for exp in tqdm(args.experiment_list, desc="Experiments", unit="run"):
        if exp.name in results:
            print(f"{exp.name}: done before ({results[exp.name]['metric'].upper()} "
                  f"{results[exp.name]['value']:.3f}), reused", flush=True)
            continue
        began = time.perf_counter()
        results[exp.name] = run_experiment(args, exp)
        results[exp.name]["seconds"] = round(time.perf_counter() - began, 1)
        write_json_atomic(results_path, results)
        write_outputs(args, results, command)
        r = results[exp.name]
        print(f"{exp.name}: {r['metric'].upper()} {r['value']:.3f}; no speech empty "
              f"{r['checks']['no_speech_empty']}/{r['checks']['no_speech_clips']}, timestamps "
              f"{r['checks']['timestamps_ok']}/{r['checks']['timestamp_clips']}", flush=True)
    write_outputs(args, results, command)
    summary = ", ".join(f"{e.name} {results[e.name]['value']:.3f}" for e in args.experiment_list)
    print(f"accuracy: {summary}; table {args.table}, curves {args.plot} "
          f"({(time.perf_counter() - start) / 60:.0f} min)", flush=True)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(AccuracyArguments, argv, description=__doc__)
    return guarded(lambda: run(args, command_line("tools/accuracy_experiment.py", argv)))


if __name__ == "__main__":
    sys.exit(main())
