"""Keeping what the model knew while it is fine-tuned on one language: the retention test sets
(other languages, scored with their own metric and normaliser, plus language identification), the
replay of other-language clips mixed into training, and the label tokens whose loss is left out.

A LoRA run on Mandarin alone trains <|zh|> after <|startoftranscript|> on every clip, so the model learns to
answer "Chinese" whatever it hears; the measurements of tools/accuracy_experiment.py (docs/accuracy.md) show
what each remedy here keeps.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Optional, Sequence

import numpy as np

from utils.core.errors import UsageError
from utils.core.languages import to_language_code
from utils.core.text import CER_LANGUAGES


def metric_for_languages(codes: Sequence[Optional[str]]) -> str:
    """cer for a set mostly in a language written without spaces (zh, ja, ...), else wer."""
    known = [c for c in codes if c]
    if not known:
        return "cer"
    language = Counter(known).most_common(1)[0][0]
    return "cer" if language in CER_LANGUAGES else "wer"


def set_name(path: str) -> str:
    """A retention set's name in logs and reports: its manifest's file name without .jsonl."""
    name = os.path.basename(path)
    return name[:-len(".jsonl")] if name.endswith(".jsonl") else name


def require_languages(dataset, flag: str) -> list[str]:
    """The language code of every row of a SpeechDataset, which a retention or replay set must name itself
    (the run's --language is the in-domain one)."""
    codes = list(dataset.data["language"])
    missing = [i for i, code in enumerate(codes) if not code]
    if missing:
        line = dataset.data.select(missing[:1])["line"][0]
        raise UsageError(f"{flag}: {dataset.manifest_path}:{line} has no 'language'; every line of a "
                         f"retention or replay manifest must say its language")
    return [to_language_code(code) for code in codes]


def eval_languages(dataset, language: Optional[str], tokenizer) -> list[Optional[str]]:
    """Each evaluation clip's language code for its normaliser, chosen as evaluation.py does it: its own,
    else `language`; English for an English-only model."""
    from utils.data.labels import special_ids

    fallback = to_language_code(language) if special_ids(tokenizer).multilingual else "en"
    return [to_language_code(code) if code else fallback for code in dataset.data["language"]]


def normalizer_names(codes: Sequence[Optional[str]]) -> str:
    """The normalisers evaluation.py's --normalizer=auto applies to clips in these languages."""
    from utils.core.text import scoring_normalizer_name

    return "+".join(dict.fromkeys(scoring_normalizer_name(code) for code in codes))


def manifest_languages(path: str, flag: str) -> list[str]:
    """The language code of every line of a retention manifest, which must name it (the run's --language
    is the in-domain one)."""
    import json

    codes = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                language = json.loads(line).get("language")
                code = to_language_code(language) if language else None
            except (ValueError, AttributeError) as exc:
                raise UsageError(f"{flag}: {path}:{number}: {exc}") from None
            if not code:
                raise UsageError(f"{flag}: {path}:{number} has no 'language'; every line of a retention "
                                 f"manifest must say its language")
            codes.append(code)
    return codes


def retention_arguments(args, path: str):
    """evaluation.py's arguments for one --retention_data set: its own metric (by its languages), the
    normaliser chosen by each clip's language, no fallback language and no report file of its own."""
    import dataclasses

    metric = metric_for_languages(manifest_languages(path, "--retention_data"))
    return dataclasses.replace(args, test_data=path, metric=metric, language=None, normalizer="auto",
                               output_file=None)


# --- replay ---------------------------------------------------------------------------------------


def replay_count(train_clips: int, ratio: float) -> int:
    """Replay clips to add so that they are `ratio` of the mixed training set."""
    if not 0 <= ratio < 1:
        raise UsageError(f"--replay_ratio must be in [0, 1), got {ratio}")
    return int(round(train_clips * ratio / (1 - ratio)))


def mix_replay(train_dataset, replay_dataset, ratio: float, seed: int = 0):
    """`train_dataset` followed by replay clips drawn from `replay_dataset` (without repeats until every clip
    was drawn once), so that they are `ratio` of the result; the Trainer's shuffling spreads them over the
    batches. A SpeechDataset again, so the encoder cache and augmentation treat replay clips like the others.
    Returns (mixed dataset, replay clips added)."""
    import copy

    from datasets import concatenate_datasets

    require_languages(replay_dataset, "--replay_data")
    count = replay_count(len(train_dataset), ratio)
    if count == 0:
        return train_dataset, 0
    rng = np.random.default_rng(seed)
    rounds = -(-count // len(replay_dataset))
    order = np.concatenate([rng.permutation(len(replay_dataset)) for _ in range(rounds)])[:count]
    drawn = replay_dataset.data.select(order.tolist())
    mixed = copy.copy(train_dataset)
    mixed.data = concatenate_datasets([train_dataset.data, drawn.cast(train_dataset.data.features)])
    mixed.stats = {**train_dataset.stats, "replay": count, "kept": len(mixed.data)}
    return mixed, count


# --- labels ---------------------------------------------------------------------------------------


def lang_token_masked(choice: str, mask_task: bool, train_dataset, language: Optional[str]) -> tuple[bool, str]:
    """finetune.py's --mask_lang_token_loss on the training clips: (leave its loss out, the sentence the run
    prints). auto leaves it out when every clip is in one language (the token then carries nothing but that
    language) and trains it when the clips, replay included, hold several: measured on the sample corpora,
    Mandarin LoRA + 10 % English replay with the token trained kept English language identification at 20/20
    and taught Mandarin's (50/50), where the token left out gave 19/20 and 34/50 (docs/accuracy.md)."""
    if choice != "auto":
        masked = choice == "true"
        return masked, f"{'no loss' if masked else 'trained'} (--mask_lang_token_loss={choice})"
    if mask_task:
        return True, "no loss, like the task token (--mask_task_token_loss)"
    fallback = to_language_code(language) if language else None
    codes = sorted({to_language_code(c) if c else fallback for c in train_dataset.data.unique("language")}
                   - {None})
    if len(codes) > 1:
        return False, (f"trained: the training clips are in {len(codes)} languages: {', '.join(codes[:8])}"
                       f"{', ...' if len(codes) > 8 else ''} (--mask_lang_token_loss=auto)")
    return True, (f"no loss: every training clip is {codes[0] if codes else 'in one language'} "
                  f"(--mask_lang_token_loss=auto; add other languages with --replay_data to train it)")


def prompt_loss_mask_ids(tokenizer, *, language: bool, task: bool) -> frozenset:
    """Token ids whose loss the collator leaves out where they open a label (utils.data.collator):
    every language token, and <|transcribe|>/<|translate|> with `task`. <|nospeech|> stays trained."""
    from utils.data.labels import special_ids

    ids = special_ids(tokenizer)
    masked = set()
    if language and ids.multilingual:
        vocabulary = tokenizer.get_vocab()
        from utils.core.languages import LANGUAGES

        masked.update(vocabulary[f"<|{code}|>"] for code in LANGUAGES if f"<|{code}|>" in vocabulary)
    if task and ids.multilingual:
        masked.update((ids.transcribe, ids.translate))
    return frozenset(masked)


# --- retention sets during training ------------------------------------------------------------


def score_retention_set(model, processor, dataset, *, batch_size: int, max_new_tokens: int) -> dict:
    """Decode every clip of `dataset` with its own language, score it with its metric and evaluation.py's
    normaliser (auto, by language) and detect its language. {"metric", "value", "normalizer", "lid_acc",
    "lid_p", "clips"}."""
    import torch

    from utils.core.lid import detect_languages, first_step_logits, language_token_ids, lid_accuracy
    from utils.core.metrics import error_rate
    from utils.core.models import tokenizer_languages
    from utils.core.text import english_spelling_map

    codes = require_languages(dataset, "--retention_data")
    metric = metric_for_languages(codes)
    tokenizer = processor.tokenizer
    language_ids = language_token_ids(tokenizer, tokenizer_languages(tokenizer, model.config.vocab_size))
    references, hypotheses, detections = [], [], []
    # The model's own dtype (float16 for an 8-bit model), not its first parameter's.
    device, dtype = model.device, model.dtype
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for begin in range(0, len(dataset), batch_size):
                rows = range(begin, min(begin + batch_size, len(dataset)))
                features = torch.from_numpy(np.stack([dataset.features(i) for i in rows])).to(device, dtype)
                batch_codes = [codes[i] for i in rows]
                encoded = model.get_encoder()(features)
                detections += detect_languages(first_step_logits(model, encoded), language_ids, batch_codes)
                tokens = model.generate(encoder_outputs=encoded, language=batch_codes, task="transcribe",
                                        max_new_tokens=max_new_tokens, return_timestamps=False)
                if not torch.is_tensor(tokens):
                    tokens = tokens["sequences"]
                hypotheses += [t.strip() for t in tokenizer.batch_decode(tokens, skip_special_tokens=True)]
                references += [dataset.data[i]["sentence"] for i in rows]
    finally:
        model.train(was_training)
    result = error_rate(references, hypotheses, metric, language=codes,
                        english_spelling=english_spelling_map(tokenizer))
    lid = lid_accuracy(detections, codes, references)
    return {"metric": metric, "value": result.value, "normalizer": result.normalizer,
            "lid_acc": lid.accuracy, "lid_p": lid.mean_reference_probability, "clips": len(references)}


def load_retention_sets(paths: Sequence[str], processor, *, max_samples: Optional[int], min_audio_len: float,
                        max_audio_len: float) -> dict:
    """{name: SpeechDataset} of the retention manifests, each cut to `max_samples` clips spread over it."""
    from utils.data.dataset import SpeechDataset

    sets = {}
    for path in paths:
        dataset = SpeechDataset(path, processor, language=None, task="transcribe",
                                min_audio_len=min_audio_len, max_audio_len=max_audio_len)
        require_languages(dataset, "--retention_data")
        name = set_name(path)
        if name in sets:
            raise UsageError(f"--retention_data: two manifests are called {name}; rename one")
        sets[name] = dataset if max_samples is None else dataset.spread(max_samples)
    return sets


def make_retention_callback(trainer, processor, sets: dict, *, batch_size: int, max_new_tokens: int):
    """A TrainerCallback that scores every retention set after each evaluation and logs
    eval_retention/<name>/<metric> and .../lid_acc (in tensorboard eval/retention/<name>/..., beside eval/<metric>)."""
    from transformers import TrainerCallback

    class RetentionCallback(TrainerCallback):
        def on_evaluate(self, args, state, control, model=None, **kwargs):
            logs = {}
            for name, dataset in sets.items():
                scored = score_retention_set(trainer.model, processor, dataset, batch_size=batch_size,
                                             max_new_tokens=max_new_tokens)
                logs[f"eval_retention/{name}/{scored['metric']}"] = scored["value"]
                if scored["lid_acc"] is not None:
                    logs[f"eval_retention/{name}/lid_acc"] = scored["lid_acc"]
                    logs[f"eval_retention/{name}/lid_p"] = scored["lid_p"]
            if logs and state.is_world_process_zero:
                trainer.log(logs)
            return control

    return RetentionCallback()
