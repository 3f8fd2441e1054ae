"""The project's own accuracy table: whisper-base zero-shot vs LoRA vs AdaLoRA on synthetic Mandarin and English.

    python tools/accuracy_experiment.py            # about an hour on a 2-core CPU; writes docs/accuracy.md

Every number comes from the toolkit's own scripts run as separate processes (finetune.py, merge_lora.py,
evaluation.py, so CER/WER use evaluation.py's normalisation); this script only orders them, measures each
one's wall time and peak memory, checks that the fine-tuned models still give an empty transcript for
clips without speech and timestamps when asked, and writes the table and a training-curve PNG.
Finished steps are remembered in <output_dir>/results.json, so an interrupted run continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from transformers.hf_argparser import string_to_bool

from utils.bench.measured_run import StageFailed, run_measured  # noqa: E402
from utils.training.callbacks import write_json_atomic  # noqa: E402

# "zh+": the Mandarin rows' data plus --more_readings extra readings of every training sentence.
LANGUAGES = ("zh", "zh+", "en")
METHODS = ("zero-shot", "lora", "adalora", "lora-timestamps")
EN_TRAIN_SETTINGS = dict(variants="m1,m7,f1,f3", rates="140,160", pitches="40,55")  # en_test uses none of these


@dataclass
class Experiment:
    language: str          # zh / en
    method: str            # one of METHODS

    @property
    def name(self) -> str:
        return f"{self.language}-{self.method}"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--base_model", default="models/whisper-base", help="Whisper model folder to fine-tune")
    parser.add_argument("--zh_train", default="dataset/zh_train.jsonl", help="Mandarin training manifest")
    parser.add_argument("--zh_test", default="dataset/zh_test.jsonl",
                        help="Mandarin test manifest (sentences and voices not in --zh_train)")
    parser.add_argument("--en_train", default=None,
                        help="English training manifest; default: synthesised into <output_dir>/en_train.jsonl "
                             "from tools/accuracy_sentences_en.txt with voices en_test does not use")
    parser.add_argument("--en_test", default="dataset/en_test.jsonl", help="English test manifest")
    parser.add_argument("--experiments", default="zh-zero-shot,zh-lora,zh-adalora,zh-lora-timestamps,zh+-lora,"
                                                 "en-zero-shot,en-lora,en-adalora",
                        help="comma-separated <language>-<method>, languages: zh, zh+ (zh with more training "
                             "readings), en; methods: " + ", ".join(METHODS))
    parser.add_argument("--more_readings", type=int, default=2,
                        help="zh+ rows: extra readings of every Mandarin training sentence, each in a voice "
                             "setting of the training split (tools/synthesize_speech.py more-train)")
    parser.add_argument("--epochs", type=float, default=3, help="training epochs per fine-tuning run")
    parser.add_argument("--batch_size", type=int, default=8, help="training clips per step")
    parser.add_argument("--learning_rate", type=float, default=1e-3, help="peak learning rate")
    parser.add_argument("--lora_r", type=int, default=32, help="adapter rank (AdaLoRA: target average rank)")
    parser.add_argument("--freeze_encoder", type=string_to_bool, default=True,
                        help="adapters only in the decoder (encoder outputs computed once and reused); False "
                             "puts them in the encoder too, about 2.5x slower per step on CPU")
    parser.add_argument("--bf16", choices=("auto", "true", "false"), default="auto",
                        help="train with bfloat16 autocast; auto = where the CPU has bfloat16 instructions "
                             "(AVX512-BF16/AMX) or a CUDA GPU supports it")
    parser.add_argument("--eval_batch_size", type=int, default=8, help="clips decoded together in evaluation")
    parser.add_argument("--num_workers", type=int, default=1, help="DataLoader workers of each stage")
    parser.add_argument("--output_dir", default="output/accuracy", help="runs, merged models, reports")
    parser.add_argument("--table", default="docs/accuracy.md", help="markdown file to write")
    parser.add_argument("--plot", default="docs/accuracy_curves.png", help="training-curve PNG to write")
    parser.add_argument("--readme", default="README.md",
                        help="README whose 'accuracy' section (between its marker comments) gets the table; '' = none")
    parser.add_argument("--rerun", type=string_to_bool, default=False,
                        help="ignore results.json and run every step again")
    args = parser.parse_args(argv)
    experiments = []
    for item in filter(None, (x.strip() for x in args.experiments.split(","))):
        language, _, method = item.partition("-")
        if language not in LANGUAGES or method not in METHODS:
            parser.error(f"--experiments: {item!r} is not <language>-<method> with language in "
                         f"{', '.join(LANGUAGES)} and method in {', '.join(METHODS)}")
        experiments.append(Experiment(language, method))
    if not experiments:
        parser.error("--experiments is empty")
    args.experiment_list = experiments
    from utils.core.devices import bf16_wanted

    args.use_bf16 = bf16_wanted(args.bf16)
    for name in ("epochs", "batch_size", "learning_rate", "lora_r", "eval_batch_size"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}")
    if not os.path.isfile(os.path.join(args.base_model, "config.json")):
        parser.error(f"--base_model: {args.base_model} is not a model folder; run "
                     f"`python tools/download_model.py --model=whisper-base`")
    for name in ("zh_train", "zh_test", "en_test", "en_train"):
        path = getattr(args, name)
        if path is not None and not os.path.isfile(path):
            parser.error(f"--{name}: {path} not found")
    return args


def english_train(args) -> str:
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


def mandarin_plus(args) -> str:
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


def data_of(args, language: str) -> tuple[str, str, str, str]:
    """(train, test, language name, metric)."""
    if language == "zh":
        return args.zh_train, args.zh_test, "Chinese", "cer"
    if language == "zh+":
        return mandarin_plus(args), args.zh_test, "Chinese", "cer"
    return english_train(args), args.en_test, "English", "wer"


def run_experiment(args, exp: Experiment) -> dict:
    train, test, language, metric = data_of(args, exp.language)
    out = os.path.join(args.output_dir, exp.name)
    logs = os.path.join(args.output_dir, "logs")
    result: dict = {"language": exp.language, "method": exp.method, "metric": metric, "test_data": test}
    model_path = args.base_model
    timestamps = exp.method == "lora-timestamps"
    if exp.method != "zero-shot":
        cache_dir = os.path.join(args.output_dir, "encoder_cache")
        command = [sys.executable, "finetune.py", f"--base_model={args.base_model}", f"--train_data={train}",
                   f"--test_data={test}", f"--output_dir={out}", f"--language={language}",
                   f"--freeze_encoder={args.freeze_encoder}", f"--use_adalora={exp.method == 'adalora'}",
                   f"--timestamps={timestamps}", f"--num_train_epochs={args.epochs}",
                   f"--per_device_train_batch_size={args.batch_size}",
                   f"--per_device_eval_batch_size={args.eval_batch_size}", f"--learning_rate={args.learning_rate}",
                   "--warmup_steps=20", f"--lora_r={args.lora_r}", f"--lora_alpha={2 * args.lora_r}",
                   "--logging_steps=5",
                   # Evaluated once, on eval loss, at the end: decoding is measured below by evaluation.py.
                   "--metric=none", "--eval_steps=100000", "--save_steps=100000", "--max_eval_samples=16",
                   f"--num_workers={args.num_workers}", "--local_files_only=True", f"--bf16={args.use_bf16}"]
        if args.freeze_encoder:
            command.append(f"--encoder_cache_dir={cache_dir}")
        result["train"] = run_measured(command, os.path.join(logs, f"{exp.name}.finetune.log"))
        name = os.path.basename(os.path.normpath(args.base_model))
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
        model_path = os.path.join(out, "merged", f"{name}-finetune")
    report = os.path.join(out, "evaluation.json")
    result["evaluate"] = run_measured(
        [sys.executable, "evaluation.py", f"--model_path={model_path}", f"--test_data={test}",
         f"--metric={metric}", f"--language={language}", f"--timestamps={timestamps}",
         f"--batch_size={args.eval_batch_size}", f"--num_workers={args.num_workers}",
         f"--output_file={report}", "--local_files_only=True"],
        os.path.join(logs, f"{exp.name}.evaluate.log"))
    with open(report, encoding="utf-8") as handle:
        evaluation = json.load(handle)
    result["value"] = evaluation["value"]
    result["counts"] = evaluation["counts"]
    result["model_path"] = model_path
    result["checks"] = check_abilities(model_path, test, language)
    return result


def check_abilities(model_path: str, test: str, language: str, n_timestamp_clips: int = 4) -> dict:
    """No speech -> empty transcript, and timestamp tokens when asked.

    The clips without speech (the test split's no-speech clips and 5 s of noise at about -50 dBFS, loud
    enough that the silence guard does not skip it) go through the toolkit's own transcription path,
    exactly as `infer.py` decodes them (timestamps on, so Whisper's no-speech rule applies); their
    no-speech probability at the first decoding step is reported as well. The timestamp check decodes the
    first speech clips with return_timestamps=True."""
    import numpy as np
    import torch

    from evaluation import no_speech_probabilities
    from utils.core.audio import SAMPLE_RATE, load_audio
    from utils.data.labels import special_ids
    from utils.inference.registry import load_transcriber
    from utils.inference.transcriber import TranscribeOptions

    # One model load serves both checks: the transcriber's own model and processor.
    transcriber = load_transcriber("transformers", model_path)
    model, processor = transcriber.model, transcriber.processor
    with open(test, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    base = os.path.dirname(os.path.abspath(test))

    def audio_of(row):
        path = row["audio"]["path"]
        path = path if os.path.exists(path) else os.path.join(base, path)
        return load_audio(path, row["audio"].get("start_time"), row["audio"].get("end_time"))

    def features_of(audio):
        return processor.feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features

    def generate(audio, timestamps):
        with torch.inference_mode():
            return model.generate(features_of(audio), language=language, task="transcribe",
                                  return_timestamps=timestamps, max_new_tokens=128)[0]

    def no_speech_probability(audio):
        with torch.inference_mode():
            encoded = model.get_encoder()(features_of(audio))
            return float(no_speech_probabilities(model, encoded, special_ids(processor.tokenizer).nospeech)[0])

    silent = [audio_of(r) for r in rows if not r["sentence"].strip()]
    silent.append((np.random.default_rng(0).standard_normal(5 * SAMPLE_RATE) * 3e-3).astype(np.float32))
    options = TranscribeOptions(language=language, timestamps=True)
    silent_texts = [" ".join(seg.text for seg in transcriber.transcribe(a, options)[0]).strip() for a in silent]
    silent_probabilities = [round(no_speech_probability(a), 3) for a in silent]
    stamped = []
    for row in [r for r in rows if r["sentence"].strip()][:n_timestamp_clips]:
        tokens = generate(audio_of(row), True)
        offsets = processor.tokenizer.decode(tokens, output_offsets=True)["offsets"]
        duration = row.get("duration") or 30.0
        good = bool(offsets) and all(o["timestamp"][1] is not None and 0 <= o["timestamp"][0] < o["timestamp"][1]
                                     <= duration + 1.0 for o in offsets)
        stamped.append({"ok": good, "segments": [[o["timestamp"][0], o["timestamp"][1], o["text"]]
                                                 for o in offsets]})
    return {"no_speech_empty": sum(1 for t in silent_texts if not t), "no_speech_clips": len(silent),
            "no_speech_texts": silent_texts, "no_speech_probabilities": silent_probabilities,
            "timestamps_ok": sum(1 for s in stamped if s["ok"]), "timestamp_clips": len(stamped),
            "timestamp_example": stamped[0]["segments"] if stamped else []}


def experiment_seconds(result: dict) -> float:
    """Wall time of one experiment row (older results: the sum of its measured stages)."""
    if "seconds" in result:
        return result["seconds"]
    return sum(result[stage]["seconds"] for stage in ("train", "merge", "evaluate") if stage in result)


def write_outputs(args, results: dict, command: str) -> None:
    ordered = [results[e.name] for e in args.experiment_list if e.name in results]
    total_seconds = sum(experiment_seconds(r) for r in ordered)
    header = (f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared), "
              f"{platform.system()} {platform.release()}; CPU only, training in "
              f"{'bf16 autocast' if args.use_bf16 else 'fp32'}, evaluation in fp32. "
              f"Total time {total_seconds / 60:.0f} min.")
    lines = ["# Accuracy: whisper-base fine-tuned on the synthetic corpora", "",
             "Generated by `tools/accuracy_experiment.py`; do not edit by hand. Command:", "",
             "```bash", command, "```", "", header, ""]
    missing = [e.name for e in args.experiment_list if e.name not in results]
    partial = (f"**Partial table**: not finished yet: {', '.join(missing)}. Running the command again keeps "
               f"the finished rows (`<output_dir>/results.json`) and runs the rest.")
    if missing:
        lines += [partial, ""]
    lines += ["| data | model | CER/WER | errors / ref units | train time | train peak RSS | no speech -> empty "
              "| timestamps when asked |",
              "|---|---|---|---|---|---|---|---|"]
    zero = {r["language"]: r["value"] for r in ordered if r["method"] == "zero-shot"}
    for r in ordered:
        data = {"zh": "Mandarin (zh_test)", "en": "English (en_test)"}.get(
            r["language"], f"Mandarin (zh_test), {args.more_readings + 1} readings per training sentence")
        change = ""
        base = zero.get(r["language"].rstrip("+"))
        if r["method"] != "zero-shot" and base:
            change = f" ({(r['value'] - base) / base * 100:+.0f}%)"
        train = r.get("train")
        train_time = (f"{train['seconds'] / 60:.1f} min ({train['steps']} steps, {train['epochs']:g} ep)"
                      if train else "-")
        rss = f"{train['peak_rss_gib']:.1f} GiB" if train else "-"
        c = r["checks"]
        probabilities = c.get("no_speech_probabilities")
        no_speech = f"{c['no_speech_empty']}/{c['no_speech_clips']}"
        if probabilities:
            low, high = f"{min(probabilities):.2f}", f"{max(probabilities):.2f}"
            no_speech += f" (P {low})" if low == high else f" (P {low}-{high})"
        lines.append(f"| {data} | {r['method']} | {r['metric'].upper()} {r['value']:.3f}{change} | "
                     f"{r['counts']['errors']} / {r['counts']['reference_units']} | {train_time} | {rss} | "
                     f"{no_speech} | {c['timestamps_ok']}/{c['timestamp_clips']} |")
    lines += ["",
              "- CER/WER: `evaluation.py` (greedy decoding, at most 225 new tokens, Whisper's no-speech rule (a clip "
              "whose no-speech probability is above 0.6 gets an empty text), a clip caught in a repetition loop "
              "stops decoding (its repeats so far still count), NFKC, traditional -> simplified, "
              "punctuation removed, lower case), corpus-level over all test clips; in brackets the change "
              "against zero-shot.",
              f"- Fine-tuning: {args.epochs:g} epochs, batch {args.batch_size}, learning rate {args.learning_rate:g}, "
              f"rank {args.lora_r}, adapters on q/k/v/out/fc1/fc2 of "
              + ("the decoder only (`--freeze_encoder`, encoder outputs computed once and reused)"
                 if args.freeze_encoder else "encoder and decoder")
              + "; `lora-timestamps` trains on timestamp labels and is evaluated in timestamp mode.",
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
    curves = [r for r in ordered if r.get("curve")]
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

        body = ["```bash", command, "```", "", header, ""]
        if missing:
            body += [partial, ""]
        body += [line for line in lines if line.startswith("|")] + [""]
        if curves:
            body += [f"![training loss]({rel(args.plot)})", ""]
        body.append(f"How each column is measured: [{rel(args.table)}]({rel(args.table)}).")
        replace_section(args.readme, "accuracy", "\n".join(body))
    if curves:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for r in curves:
            steps, losses = zip(*r["curve"])
            ax.plot(steps, losses, label=f"{r['language']}-{r['method']}")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
        ax.set_title("whisper-base fine-tuning on the synthetic corpora")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        tmp = f"{args.plot}.part.png"
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, args.plot)


def write_text_atomic(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.part"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    command = "python tools/accuracy_experiment.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    print("----------- Configuration -----------")
    for key, value in vars(args).items():
        if key != "experiment_list":
            print(f"{key}: {value}")
    print("-------------------------------------", flush=True)
    os.makedirs(args.output_dir, exist_ok=True)
    results_path = os.path.join(args.output_dir, "results.json")
    results = {}
    if os.path.isfile(results_path) and not args.rerun:
        with open(results_path, encoding="utf-8") as handle:
            results = json.load(handle)
    start = time.perf_counter()
    from tqdm import tqdm

    for exp in tqdm(args.experiment_list, desc="Experiments", unit="run"):
        if exp.name in results:
            print(f"{exp.name}: done before ({results[exp.name]['metric'].upper()} "
                  f"{results[exp.name]['value']:.3f}), reused", flush=True)
            continue
        began = time.perf_counter()
        try:
            results[exp.name] = run_experiment(args, exp)
            results[exp.name]["seconds"] = round(time.perf_counter() - began, 1)
        except StageFailed as exc:
            print(f"error: {exp.name}: {exc}", file=sys.stderr)
            return 1
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
