"""Measure CER or WER of a Whisper model on a jsonlines test set.

    python evaluation.py --model_path=models/whisper-base-finetune --test_data=dataset/zh_test.jsonl --metric=cer
    python evaluation.py --model_path=... --test_data=dataset/zh_test.jsonl --retention_data dataset/en_test.jsonl

Clips are decoded in batches with the model's generate; references and hypotheses get the same
normalisation, chosen by each clip's language (--normalizer=auto): Whisper's English normaliser for English
and Whisper's basic normaliser for other space-delimited languages, as published Whisper WERs are computed;
punctuation removed, traditional -> simplified Chinese and lower case for Chinese, Japanese and the other
languages written without spaces (and clips of unknown language). The report and summary name it.
Every set also gets its language-identification accuracy (the language the model detects at its first
decoding step vs the manifest's `language`); --retention_data sets (other languages, to check that
fine-tuning kept them) are scored each with its own metric (CER for zh/ja/..., WER otherwise).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Optional

from utils.core.cli import guarded, parse_args, print_config
from utils.core.errors import UsageError
from utils.core.files import check_output_path
from utils.core.languages import TASKS, to_language_code
from utils.core.models import default_base_model
from utils.core.text import NORMALIZERS


@dataclass
class EvaluationArguments:
    model_path: str = field(default_factory=default_base_model, metadata={
        "help": "Merged model folder (merge_lora.py) or any Whisper model folder/hub id."})
    test_data: str = field(default="dataset/zh_test.jsonl", metadata={"help": "Test manifest (jsonlines)."})
    retention_data: Optional[list[str]] = field(default=None, metadata={
        "help": "More test manifests, each line with its 'language' (e.g. English after a Mandarin "
                "fine-tuning), scored after --test_data with their own metric (CER for zh/ja/..., else WER), "
                "--normalizer=auto and language-identification accuracy."})
    batch_size: int = field(default=16, metadata={"help": "Clips decoded together."})
    num_workers: int = field(default=min(8, os.cpu_count() or 1),
                             metadata={"help": "DataLoader worker processes (audio decoding, features)."})
    language: Optional[str] = field(default="Chinese",
                                    metadata={"help": "Language of clips without their own 'language'; 'None' lets "
                                                      "the model detect it. Ignored for English-only models."})
    task: str = field(default="transcribe", metadata={"help": "transcribe or translate.", "choices": TASKS})
    timestamps: bool = field(default=False, metadata={"help": "Decode in timestamp mode (as a model trained "
                                                              "with --timestamps expects); timestamps are not scored."})
    remove_pun: bool = field(default=True, metadata={
        "help": "Remove punctuation (ASCII and full-width) before scoring."})
    to_simple: bool = field(default=True, metadata={
        "help": "Convert traditional to simplified Chinese before scoring."})
    metric: str = field(default="cer", metadata={"help": "cer (characters) or wer (words)."})
    normalizer: str = field(default="auto", metadata={
        "help": "Text normalisation before scoring: auto (by each clip's language: whisper-english for English, "
                "whisper-basic for other space-delimited languages, punctuation-simplified for Chinese, "
                "Japanese, ... and unknown languages), or one of them for every clip. --remove_pun/--to_simple "
                "apply to punctuation-simplified; Whisper's normalisers always remove punctuation.",
        "choices": NORMALIZERS})
    max_new_tokens: int = field(default=225, metadata={"help": "Most tokens decoded per clip."})
    no_speech_threshold: float = field(default=0.6, metadata={
        "help": "Whisper's no-speech rule: a clip whose <|nospeech|> probability at the first decoding step "
                "is above this gets an empty transcript (what infer.py, faster-whisper and whisper.cpp do); "
                "0 = off, every clip is decoded with the forced language."})
    stop_loops: bool = field(default=True, metadata={
        "help": "Stop decoding a clip once its last tokens repeat a short unit (a repetition loop), as infer.py "
                "does, instead of running to --max_new_tokens; the repeats decoded so far still count as "
                "errors. False = the model's plain generate."})
    min_audio_len: float = field(default=0.5, metadata={"help": "Leave out clips shorter than this (s)."})
    max_audio_len: float = field(default=30.0, metadata={"help": "Leave out clips longer than this (s, <= 30)."})
    output_file: Optional[str] = field(default=None, metadata={
        "help": "Write a JSON report: metric, counts and every clip's reference and hypothesis. While the run "
                "lasts, each decoded clip is appended at once to <output_file>.parts/rank<R>-of-<N>.jsonl "
                "(one per process; kept when the run is interrupted, removed when the report is written)."})
    local_files_only: bool = field(default=False, metadata={"help": "Never download the model."})

    def __post_init__(self):
        from utils.core.metrics import METRICS  # not at the top: it imports jiwer, which --help does not need

        if self.metric not in METRICS:
            raise UsageError(f"--metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        for name in ("batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise UsageError(f"--num_workers must be 0 or more, got {self.num_workers}")
        try:
            to_language_code(self.language)
        except ValueError as exc:
            raise UsageError(f"--language: {exc}") from None


def check_inputs(args: EvaluationArguments) -> None:
    from utils.training.retention import retention_arguments

    if not os.path.isfile(args.test_data):
        raise UsageError(f"--test_data: {args.test_data} not found")
    for path in args.retention_data or ():
        if not os.path.isfile(path):
            raise UsageError(f"--retention_data: {path} not found")
        retention_arguments(args, path)     # every line names its language, found before any decoding
    if args.output_file and os.path.isdir(args.output_file):
        raise UsageError(f"--output_file: {args.output_file} is a folder; name a .json file")
    if args.output_file:
        check_output_path(args.output_file, "--output_file")


def evaluate(args: EvaluationArguments) -> None:
    """Decode every clip of --test_data and of each --retention_data set, score the transcripts, print the
    summaries (and write the report: --test_data's, with the retention sets' under "retention")."""
    from utils.core.files import write_json_atomic
    from utils.training.retention import retention_arguments

    check_inputs(args)
    print_config("evaluation.py configuration", args)
    from utils.inference.sharded_eval import ShardedEvaluation

    # Under torchrun / accelerate launch each process decodes its share of every set; process 0 scores them.
    with ShardedEvaluation(args.output_file) as shard:
        model, reports = None, []
        for number, test_data in enumerate([args.test_data, *(args.retention_data or ())]):
            set_args = args if number == 0 else retention_arguments(args, test_data)
            processor, dataset, language, multilingual = load_data(set_args)
            model = load_model(args) if model is None else model
            r, n = shard.rank, shard.world_size
            share = f"; process {r} of {n} decodes clips {r}, {r + n}, {r + 2 * n}, ..." if n > 1 else ""
            print(f"{len(dataset)} clips from {set_args.test_data}; decoding on {model.device}{share}", flush=True)
            decoded = decode_all(set_args, processor, model, dataset, language, multilingual, shard, number)
            if shard.is_main:
                reports.append(score(set_args, *decoded, scoring_languages(dataset, language, multilingual),
                                     processor.tokenizer))
        # Inside the context: the part files go only once the report is on disk.
        if shard.is_main and args.output_file:
            write_json_atomic(args.output_file, {**reports[0], "retention": reports[1:]} if args.retention_data
                              else reports[0])


def scoring_languages(dataset, language: Optional[str], multilingual: bool) -> list:
    """Each clip's language code for choosing its normaliser: its own, else --language; English for an
    English-only model; None when unknown."""
    fallback = language if multilingual else "en"
    return [to_language_code(code) if code else fallback for code in dataset.data["language"]]


def load_data(args: EvaluationArguments):
    """(processor, dataset, language code or None, whether the model is multilingual); an English-only
    model gets no language or task tokens."""
    from utils.core.languages import check_model_language
    from utils.core.models import checkpoint_is_multilingual, checkpoint_languages, load_processor
    from utils.data.dataset import SpeechDataset

    processor = load_processor(args.model_path, local_files_only=args.local_files_only)
    multilingual = checkpoint_is_multilingual(args.model_path, local_files_only=args.local_files_only)
    language = to_language_code(args.language) if multilingual else None
    if multilingual:
        languages = checkpoint_languages(args.model_path, processor.tokenizer, local_files_only=args.local_files_only)
        try:
            check_model_language(language, languages, model=args.model_path)
        except ValueError as exc:
            raise UsageError(f"--language={args.language}: {exc}") from None
    dataset = SpeechDataset(args.test_data, processor, language=language,
                            task=args.task if multilingual else "transcribe", timestamps=False,
                            min_audio_len=args.min_audio_len, max_audio_len=args.max_audio_len)
    return processor, dataset, language, multilingual


def load_model(args: EvaluationArguments):
    """The model in eval mode on the GPU (float16) when there is one, else on the CPU (float32)."""
    import torch

    from utils.core.models import load_whisper

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    return load_whisper(args.model_path, local_files_only=args.local_files_only, dtype=dtype).to(device).eval()


class _Indexed:
    """SpeechDataset items with their index, so that hypotheses meet their references after batching."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return i, self.dataset[i]["input_features"]


def _collate(batch):
    import numpy as np
    import torch

    return [i for i, _ in batch], torch.from_numpy(np.stack([f for _, f in batch]))


def decode_all(args: EvaluationArguments, processor, model, dataset, language: Optional[str], multilingual: bool,
               shard, set_number: int = 0):
    """(references, hypotheses, clips judged to hold no speech, each clip's language detection (None for an
    English-only model), expected language) in manifest order, in process 0 (None in the others); `shard`
    (utils.inference.sharded_eval) says which clips this process decodes and streams each one to disk, under
    `set_number` (0: --test_data, then each --retention_data set)."""
    import torch
    from tqdm import tqdm

    from utils.core.lid import language_token_ids
    from utils.core.models import tokenizer_languages
    from utils.data.labels import special_ids

    sentences = dataset.data["sentence"]
    languages = [code or language for code in dataset.data["language"]]
    clips = torch.utils.data.Subset(_Indexed(dataset), shard.indices(len(dataset)))
    loader = torch.utils.data.DataLoader(clips, batch_size=args.batch_size, num_workers=args.num_workers,
                                         collate_fn=_collate)
    language_ids = language_token_ids(processor.tokenizer, tokenizer_languages(
        processor.tokenizer, model.config.vocab_size)) if multilingual else {}
    nospeech = special_ids(processor.tokenizer).nospeech
    kwargs = {"max_new_tokens": args.max_new_tokens, "return_timestamps": args.timestamps,
              "stopping_criteria": _loop_stop() if args.stop_loops else None}
    with torch.inference_mode():
        for indices, features in tqdm(loader, desc="Evaluating", unit="batch", disable=not shard.is_main):
            if multilingual:
                batch_languages = [languages[i] for i in indices]
                # Per-clip language when every clip has one; otherwise the model detects it per clip.
                kwargs.update(language=batch_languages if all(batch_languages) else None, task=args.task)
            texts, silent, found = decode_batch(model, processor, features, kwargs, nospeech,
                                                args.no_speech_threshold, language_ids,
                                                [to_language_code(languages[i]) for i in indices])
            for i, text, quiet, detection in zip(indices, texts, silent, found):
                shard.record(i, sentences[i], "" if quiet else text.strip(), quiet, detection, set_number)
    gathered = shard.gather(len(dataset), set_number)
    if gathered is None:
        return None
    return (*gathered, [to_language_code(code) for code in languages])


def _loop_stop():
    from transformers import StoppingCriteriaList

    from utils.inference.backends.transformers import RepetitionLoopStop

    return StoppingCriteriaList([RepetitionLoopStop()])


def decode_batch(model, processor, features, generate_kwargs: dict, nospeech: int, no_speech_threshold: float,
                 language_ids: Optional[dict] = None, expected: Optional[list] = None):
    """(texts, whether each clip holds no speech, each clip's language detection or None) of one batch of
    spectrograms; `language_ids` ({code: token id}, empty for an English-only model) and `expected` (each
    clip's language code) serve the detection."""
    import torch

    from utils.core.lid import detect_languages, first_step_logits

    # The encoder runs once; generate and the no-speech step share its output.
    encoded = model.get_encoder()(features.to(model.device, model.dtype))
    tokens = model.generate(encoder_outputs=encoded, **generate_kwargs)
    if not torch.is_tensor(tokens):
        tokens = tokens["sequences"]
    texts = processor.tokenizer.batch_decode(tokens, skip_special_tokens=True)
    # The no-speech probability and the language detection both read the step after <|startoftranscript|>.
    logits = first_step_logits(model, encoded) if language_ids or no_speech_threshold > 0 else None
    found = detect_languages(logits, language_ids, expected) if language_ids else [None] * len(texts)
    if no_speech_threshold <= 0:
        return texts, [False] * len(texts), found
    return texts, (torch.softmax(logits, dim=-1)[:, nospeech].cpu() > no_speech_threshold).tolist(), found


def no_speech_probabilities(model, encoded, nospeech: int):
    """P(<|nospeech|>) right after <|startoftranscript|>, where the language token would come: Whisper's
    (and this toolkit's training labels') signal that a clip holds no speech."""
    import torch

    batch = encoded.last_hidden_state.shape[0]
    start = torch.full((batch, 1), model.generation_config.decoder_start_token_id,
                       device=encoded.last_hidden_state.device)
    logits = model(encoder_outputs=encoded, decoder_input_ids=start).logits[:, -1].float()
    return torch.softmax(logits, dim=-1)[:, nospeech].cpu()


def score(args: EvaluationArguments, references: list, hypotheses: list, no_speech_clips: int,
          detections: Optional[list] = None, expected: Optional[list] = None, languages: Optional[list] = None,
          tokenizer=None) -> dict:
    """The report (metric, normaliser, counts, language identification, every clip) and its one-line summary."""
    from utils.core.lid import lid_accuracy
    from utils.core.metrics import error_rate
    from utils.core.text import english_spelling_map

    result = error_rate(references, hypotheses, args.metric, remove_pun=args.remove_pun, to_simple=args.to_simple,
                        language=languages, normalizer=args.normalizer,
                        english_spelling=english_spelling_map(tokenizer) if tokenizer is not None else None)
    report = {"model_path": args.model_path, "test_data": args.test_data, **result.to_dict()}
    report["counts"]["no_speech_references"] = sum(1 for r in references if not r.strip())
    report["counts"]["no_speech_hypotheses"] = no_speech_clips
    lid = lid_accuracy(detections or [None] * len(references), expected or [None] * len(references), references)
    report["language_identification"] = lid.to_dict()
    for utterance, detection in zip(report["utterances"], detections or ()):
        if detection is not None:
            utterance["detected_language"], utterance["detected_probability"] = (detection.language,
                                                                                 detection.probability)
    c = result.counts
    print(f"{args.metric.upper()}: {result.value:.4f} over {len(references)} clips ({c.errors} errors / "
          f"{c.reference_units} reference {'characters' if args.metric == 'cer' else 'words'}: "
          f"{c.substitutions} sub, {c.deletions} del, {c.insertions} ins; "
          f"{no_speech_clips} judged to hold no speech; normalizer {result.normalizer}); {lid.describe()}"
          + (f"; {args.test_data}" if args.retention_data else "")
          + (f"; report {args.output_file}" if args.output_file else ""), flush=True)
    return report


def main(argv=None) -> int:
    args = parse_args(EvaluationArguments, argv, description=__doc__)
    return guarded(lambda: evaluate(args))


if __name__ == "__main__":
    sys.exit(main())
