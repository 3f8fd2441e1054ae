"""Fine-tune Whisper with LoRA or AdaLoRA on a jsonlines data set.

    python finetune.py --train_data=dataset/zh_train.jsonl --test_data=dataset/zh_test.jsonl
    torchrun --nproc_per_node=2 finetune.py ...        accelerate launch --num_processes 2 finetune.py ...

Adapters land in <output_dir>/<base model name>/checkpoint-best and checkpoint-final;
merge one into a standalone model with merge_lora.py.

The run reads top to bottom (`train`): configure, tokenizer_and_language, load_data, build_model,
decide_encoder_cache, trainer_arguments, use_encoder_cache, build_trainer, trainer.train, save_results.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Literal, Optional

from utils.core.cli import guarded, parse_args, print_config
from utils.core.errors import UsageError
from utils.core.files import check_output_path
from utils.core.languages import TASKS, to_language_code
from utils.core.models import default_base_model, model_name
from utils.training.lora import DEFAULT_TARGET_MODULES


@dataclass
class FinetuneArguments:
    train_data: str = field(default="dataset/zh_train.jsonl", metadata={"help": "Training manifest (jsonlines)."})
    test_data: str = field(default="dataset/zh_test.jsonl",
                           metadata={"help": "Evaluation manifest (jsonlines), decoded every --eval_steps."})
    base_model: str = field(default_factory=default_base_model,
                            metadata={"help": "Whisper model folder or Hugging Face Hub id "
                                              "(default: models/whisper-base when fetched, else openai/whisper-base)."})
    output_dir: str = field(default="output/",
                            metadata={"help": "Checkpoints go to <output_dir>/<base model name>/."})
    language: Optional[str] = field(default="Chinese",
                                    metadata={"help": "Language name or code for samples without their own "
                                                      "'language'; 'None' trains without a language token. "
                                                      "Ignored (must be English or None) for *.en models."})
    task: str = field(default="transcribe", metadata={"help": "transcribe or translate.", "choices": TASKS})
    timestamps: bool = field(default=False, metadata={"help": "Train with timestamp tokens (needs 'sentences')."})
    use_adalora: bool = field(default=False, metadata={"help": "AdaLoRA (ranks reallocated during training) "
                                                               "instead of LoRA."})
    use_8bit: bool = field(default=False, metadata={"help": "Load the base model in 8 bit (bitsandbytes; CUDA only)."})
    fp16: bool = field(default=False, metadata={"help": "Mixed precision float16 (CUDA only)."})
    bf16: bool = field(default=False, metadata={
        "help": "Mixed precision bfloat16: CUDA GPUs with bf16, or CPUs with AVX512-BF16/AMX (faster training "
                "steps there, see docs/performance.md)."})
    freeze_encoder: bool = field(default=False, metadata={"help": "Put adapters only in the decoder; the encoder "
                                                                  "stays as it is and gets no backward pass."})
    cache_encoder_outputs: Optional[bool] = field(
        default=None, metadata={"help": "With --freeze_encoder: run the encoder once per clip (training and test "
                                        "clips), store its outputs and run only the decoder on them in every "
                                        "epoch and evaluation. Default: on when the encoder is frozen and "
                                        "deterministic and no augmentation is used."})
    encoder_cache_dir: Optional[str] = field(default=None,
                                             metadata={"help": "Where encoder outputs are stored (default "
                                                               "<output_dir>/encoder_cache); runs on the same data "
                                                               "and model share them."})
    encoder_cache_max_gb: float = field(default=64.0, metadata={
        "help": "Largest encoder cache the automatic setting builds (GiB; whisper-base stores 1.5 MB per clip in "
                "float16, large-v3 3.8 MB); beyond it the cache stays off unless --cache_encoder_outputs=True."})
    encoder_cache_dtype: Literal["float32", "float16"] = field(
        default="float16", metadata={"help": "float16 (half the disk space of float32; losses within rounding of "
                                             "no cache, docs/training.md) or float32 (training identical to no "
                                             "cache)."})
    gradient_checkpointing: bool = field(default=False,
                                         metadata={"help": "Recompute activations in backward to save memory."})
    lora_r: int = field(default=32, metadata={"help": "LoRA rank (AdaLoRA: target average rank)."})
    lora_alpha: int = field(default=64, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    target_modules: str = field(default=",".join(DEFAULT_TARGET_MODULES),
                                metadata={"help": "Comma-separated linear layers that get adapters."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Training batch size per process."})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "Evaluation batch size per process."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate (linear decay)."})
    warmup_steps: int = field(default=50, metadata={"help": "Linear warm-up optimizer steps."})
    num_train_epochs: float = field(default=3, metadata={"help": "Epochs over --train_data."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many optimizer steps (overrides "
                                                         "--num_train_epochs when > 0)."})
    logging_steps: int = field(default=100, metadata={"help": "Log loss/learning rate every N steps "
                                                              "(console and tensorboard)."})
    eval_steps: int = field(default=1000, metadata={"help": "Evaluate on --test_data every N steps."})
    save_steps: int = field(default=1000, metadata={"help": "Save a checkpoint every N steps (a multiple of "
                                                            "--eval_steps, so that the best one is known)."})
    save_total_limit: int = field(default=10, metadata={"help": "Keep at most N checkpoint-<step> folders "
                                                                "(the best is always kept)."})
    metric: str = field(default="cer", metadata={"help": "Evaluation decodes and scores 'cer' or 'wer' and the "
                                                         "best checkpoint has the lowest; 'none' uses eval loss."})
    generation_max_length: int = field(default=225, metadata={"help": "Most tokens decoded per clip in evaluation."})
    max_eval_samples: Optional[int] = field(default=1000, metadata={
        "help": "Evaluations during training use this many test clips, evenly spread over --test_data (the "
                "same ones every time; the best checkpoint is chosen on them); None = all. evaluation.py "
                "scores the whole test set."})
    retention_data: Optional[list[str]] = field(default=None, metadata={
        "help": "Manifests of other languages (each line with its 'language') scored at every evaluation "
                "with their own metric (CER for zh/ja/..., else WER) and language-identification accuracy, "
                "logged as eval/retention/<name>/<metric> and .../lid_acc; each cut to --max_eval_samples."})
    mask_lang_token_loss: Literal["auto", "true", "false"] = field(default="auto", metadata={
        "help": "No loss on the language token that opens each label, so that training on one language does "
                "not teach the model to detect that language in everything. auto: no loss when every training "
                "clip is in one language; trained when the clips (with --replay_data) hold several, which "
                "is what keeps language identification best (docs/accuracy.md)."})
    mask_task_token_loss: bool = field(default=False, metadata={
        "help": "No loss on the task token (<|transcribe|>/<|translate|>) after the language token either "
                "(the language token then gets none too)."})
    replay_data: Optional[str] = field(default=None, metadata={
        "help": "Manifest of other-language clips (each line with its 'language'), a share of which "
                "(--replay_ratio) is mixed into training to keep those languages."})
    replay_ratio: float = field(default=0.1, metadata={
        "help": "Share of the training clips drawn from --replay_data (0.1: one in ten), in [0, 1)."})
    min_audio_len: float = field(default=0.5, metadata={"help": "Leave out clips shorter than this (s)."})
    max_audio_len: float = field(default=30.0, metadata={"help": "Leave out clips longer than this (s, <= 30)."})
    augment_config_path: Optional[str] = field(default=None,
                                               metadata={"help": "Augmentation JSON, e.g. configs/augmentation.json."})
    skip_bad: bool = field(default=False, metadata={"help": "Skip and count bad manifest lines instead of stopping."})
    resume_from_checkpoint: Optional[str] = field(default=None,
                                                  metadata={"help": "checkpoint-<step> folder to continue from "
                                                                    "(step count, optimizer, scheduler)."})
    local_files_only: bool = field(default=False, metadata={"help": "Never download the base model."})
    report_to: str = field(default="tensorboard", metadata={
        "help": "Where losses and metrics are logged, as TrainingArguments.report_to: tensorboard (in "
                "<output_dir>/<base model name>/runs), wandb, mlflow, ... comma-separated, all (every one "
                "installed) or none; a reporter whose package is not installed is refused before training."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push checkpoints to the Hugging Face Hub."})
    hub_model_id: Optional[str] = field(default=None, metadata={"help": "Hub repository for --push_to_hub."})
    ddp_timeout: int = field(default=1800, metadata={
        "help": "Seconds a process of a multi-process run waits for the others (torch.distributed's timeout)."})
    num_workers: int = field(default=min(8, os.cpu_count() or 1),
                             metadata={"help": "DataLoader worker processes (audio decoding, features); on a CPU, "
                                       "training from stored encoder outputs reads them with none."})
    use_compile: bool = field(default=False, metadata={"help": "torch.compile the model."})
    seed: int = field(default=42, metadata={"help": "Random seed (weights of new adapters, shuffling, augmentation)."})

    def __post_init__(self):
        """Flag values and combinations that cannot work (files are checked when the run starts)."""
        from utils.core.metrics import METRICS  # not at the top: it imports jiwer, which --help does not need

        # --metric=none: the best checkpoint is the one with the lowest evaluation loss, and nothing is decoded.
        if self.metric not in (*METRICS, "none"):
            raise UsageError(f"--metric must be one of {', '.join(METRICS)}, none, got {self.metric!r}")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                     "logging_steps", "eval_steps", "save_steps", "lora_r", "lora_alpha", "generation_max_length"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.save_steps % self.eval_steps:
            raise UsageError(f"--save_steps ({self.save_steps}) must be a multiple of --eval_steps "
                             f"({self.eval_steps}): the best checkpoint can only be one that was both evaluated "
                             f"and saved")
        if not 0 <= self.lora_dropout < 1:
            raise UsageError(f"--lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.max_eval_samples is not None and self.max_eval_samples < 1:
            raise UsageError(f"--max_eval_samples must be at least 1, got {self.max_eval_samples}")
        if self.push_to_hub and not self.hub_model_id:
            raise UsageError("--push_to_hub needs --hub_model_id=<user>/<name>")
        if self.hub_model_id and not self.push_to_hub:
            raise UsageError("--hub_model_id does nothing without --push_to_hub")
        try:
            to_language_code(self.language)
        except ValueError as exc:
            raise UsageError(f"--language: {exc}") from None
        if self.cache_encoder_outputs and not self.freeze_encoder:
            raise UsageError("--cache_encoder_outputs=True needs --freeze_encoder=True: a trained encoder gives "
                             "different outputs every step, so there is nothing to reuse")
        if self.cache_encoder_outputs and self.augment_config_path:
            raise UsageError("--cache_encoder_outputs=True cannot be combined with --augment_config_path: "
                             "augmentation changes the audio every epoch, so stored encoder outputs would be "
                             "stale; drop one of them")
        if not 0 <= self.replay_ratio < 1:
            raise UsageError(f"--replay_ratio must be in [0, 1), got {self.replay_ratio}")
        if self.ddp_timeout < 1:
            raise UsageError(f"--ddp_timeout must be at least 1 second, got {self.ddp_timeout}")
        if (self.encoder_cache_dir or self.encoder_cache_dtype != "float16") and self.cache_encoder_outputs is False:
            raise UsageError("--encoder_cache_dir/--encoder_cache_dtype do nothing with --cache_encoder_outputs=False")


def check_inputs(args: FinetuneArguments) -> None:
    """The files the flags name exist, before anything slow is loaded."""
    for name in ("train_data", "test_data", "replay_data"):
        if getattr(args, name) is not None and not os.path.isfile(getattr(args, name)):
            raise UsageError(f"--{name}: {getattr(args, name)} not found")
    for path in args.retention_data or ():
        if not os.path.isfile(path):
            raise UsageError(f"--retention_data: {path} not found")
    if args.resume_from_checkpoint and not os.path.isfile(
            os.path.join(args.resume_from_checkpoint, "trainer_state.json")):
        raise UsageError(f"--resume_from_checkpoint: {args.resume_from_checkpoint} is not a checkpoint-<step> "
                         f"folder written by finetune.py (no trainer_state.json)")
    if args.augment_config_path and not os.path.isfile(args.augment_config_path):
        raise UsageError(f"--augment_config_path: {args.augment_config_path} not found")
    from utils.training.reporting import reporters

    reporters(args.report_to)
    if args.push_to_hub:
        from utils.training.lora import check_hub_push

        check_hub_push(args.hub_model_id)
    check_output_path(args.output_dir, "--output_dir", kind="dir")
    if args.encoder_cache_dir:
        check_output_path(args.encoder_cache_dir, "--encoder_cache_dir", kind="dir")


def remove_leftovers_of_killed_runs(args: FinetuneArguments) -> None:
    """A run killed while it wrote a checkpoint leaves temporary folders (and, before this toolkit wrote
    checkpoints beside and renamed them, partial checkpoint-<step> folders): removed, and said so."""
    from utils.training.callbacks import is_main_process, remove_leftovers

    if is_main_process():
        removed = remove_leftovers(_run_dir(args))
        if removed:
            print(f"removed what an interrupted run left in {_run_dir(args)}: {', '.join(removed)}", flush=True)


def train(args: FinetuneArguments) -> int:
    check_inputs(args)
    remove_leftovers_of_killed_runs(args)
    configure(args)
    processor, language = tokenizer_and_language(args)
    train_dataset, eval_dataset = load_data(args, processor, language)
    model, dropout_generator = build_model(args, language, len(train_dataset))
    use_cache = decide_encoder_cache(args, model.config, len(train_dataset) + len(eval_dataset))
    training_args = trainer_arguments(args, reads_stored_outputs=use_cache)
    stores = None
    if use_cache:
        train_dataset, eval_dataset, stores = use_encoder_cache(
            args, model, processor, training_args, train_dataset, eval_dataset)
    trainer = build_trainer(args, model, processor, training_args, train_dataset, eval_dataset, dropout_generator,
                            stores)
    model.config.use_cache = False
    result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    save_results(args, trainer, model, {**result.metrics, "encoder_cache": use_cache,
                                        **cache_counts(trainer, stores), "train_clips": len(train_dataset)})
    return 0


# --- the steps of a run, in order ------------------------------------------------------------------


def configure(args: FinetuneArguments) -> None:
    """Print the configuration and set up the process: allocator, precision, seed."""
    import torch
    from transformers import set_seed

    from utils.core.devices import check_precision
    from utils.training.callbacks import keep_large_tensors_in_the_heap
    from utils.training.sharding import check_sharding_device

    print_config("finetune.py configuration", args)
    if not torch.cuda.is_available():
        keep_large_tensors_in_the_heap()
    check_precision(fp16=args.fp16, bf16=args.bf16, use_8bit=args.use_8bit)
    check_sharding_device(torch.cuda.is_available())
    set_seed(args.seed)


def tokenizer_and_language(args: FinetuneArguments):
    """(processor, language of samples without their own): --language, or None for an English-only model."""
    from utils.core.languages import check_model_language
    from utils.core.models import checkpoint_is_multilingual, checkpoint_languages, load_processor

    processor = load_processor(args.base_model, local_files_only=args.local_files_only)
    if checkpoint_is_multilingual(args.base_model, local_files_only=args.local_files_only):
        languages = checkpoint_languages(args.base_model, processor.tokenizer, local_files_only=args.local_files_only)
        try:
            check_model_language(to_language_code(args.language), languages, model=args.base_model)
        except ValueError as exc:
            raise UsageError(f"--language={args.language}: {exc}") from None
        return processor, args.language
    # English-only checkpoints have no language/task tokens; a request for them is a mistake.
    if to_language_code(args.language) not in (None, "en"):
        raise UsageError(f"--language={args.language}: {args.base_model} is English-only; use --language=None")
    if args.task != "transcribe":
        raise UsageError(f"--task={args.task}: {args.base_model} is English-only and can only transcribe")
    if args.mask_task_token_loss:
        raise UsageError(f"--mask_task_token_loss: {args.base_model} is English-only; its labels have no task token")
    return processor, None


def load_data(args: FinetuneArguments, processor, language: Optional[str]):
    """(training dataset, evaluation dataset), every manifest line validated."""
    from utils.data.dataset import SpeechDataset
    from utils.training.callbacks import is_main_process

    data_kwargs = dict(language=language, task=args.task, timestamps=args.timestamps,
                       min_audio_len=args.min_audio_len, max_audio_len=args.max_audio_len, skip_bad=args.skip_bad)
    train_dataset = SpeechDataset(args.train_data, processor, augment_config_path=args.augment_config_path,
                                  **data_kwargs)
    if args.replay_data:
        from utils.training.retention import mix_replay

        replay = SpeechDataset(args.replay_data, processor, **{**data_kwargs, "language": None})
        train_dataset, count = mix_replay(train_dataset, replay, args.replay_ratio, seed=args.seed)
        if is_main_process():
            print(f"replay: {count} clips from {args.replay_data} mixed into training "
                  f"({args.replay_ratio:g} of it)", flush=True)
    test_dataset = SpeechDataset(args.test_data, processor, **data_kwargs)
    eval_dataset = test_dataset if args.max_eval_samples is None else test_dataset.spread(args.max_eval_samples)
    if is_main_process():
        print(f"train: {len(train_dataset)} clips from {args.train_data} {train_dataset.stats}; "
              f"test: {len(eval_dataset)} clips from {args.test_data}", flush=True)
    return train_dataset, eval_dataset


def build_model(args: FinetuneArguments, language: Optional[str], train_clips: int):
    """The base model with LoRA/AdaLoRA adapters. Returns (peft model, the adapters' dropout generator)."""
    import torch

    from utils.core.models import load_whisper
    from utils.training.callbacks import is_main_process, optimizer_steps
    from utils.training.fast_lora import speed_up_lora
    from utils.training.lora import add_adapter, prepare_for_finetuning

    model = load_whisper(args.base_model, local_files_only=args.local_files_only, use_8bit=args.use_8bit,
                         dtype=torch.float16 if args.use_8bit else None)
    prepare_for_finetuning(model, language=language, task=args.task, use_8bit=args.use_8bit,
                           gradient_checkpointing=args.gradient_checkpointing)
    model.generation_config.return_timestamps = args.timestamps
    # AdaLoRA's rank schedule is laid out over the run's optimizer steps.
    total_steps = optimizer_steps(train_clips, batch_size=args.per_device_train_batch_size,
                                  gradient_accumulation_steps=args.gradient_accumulation_steps,
                                  world_size=_world_size(), num_train_epochs=args.num_train_epochs,
                                  max_steps=args.max_steps)
    model = add_adapter(model, use_adalora=args.use_adalora, r=args.lora_r, alpha=args.lora_alpha,
                        dropout=args.lora_dropout, target_modules=args.target_modules.split(","),
                        freeze_encoder=args.freeze_encoder, total_step=total_steps)
    dropout_generator = speed_up_lora(model, args.seed)
    if is_main_process():
        model.print_trainable_parameters()
    return model, dropout_generator


def decide_encoder_cache(args: FinetuneArguments, config, clips: int) -> bool:
    """Whether this run stores encoder outputs (--cache_encoder_outputs, default: when it is safe and fits)."""
    from utils.training.callbacks import is_main_process
    from utils.training.encoder_cache import cache_bytes, stochastic_encoder_reason

    if not args.freeze_encoder:
        return False
    reason = stochastic_encoder_reason(config)
    if args.cache_encoder_outputs is None:
        reason = reason or ("augmentation changes the audio every epoch" if args.augment_config_path else None)
        size = cache_bytes(clips, config, args.encoder_cache_dtype)
        if reason is None and size > args.encoder_cache_max_gb * 2**30:
            shown = f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"
            reason = (f"{clips} clips would need {shown}, more than --encoder_cache_max_gb="
                      f"{args.encoder_cache_max_gb:g} (--cache_encoder_outputs=True stores them anyway)")
        if reason and is_main_process():
            print(f"encoder cache off: {reason}; the frozen encoder runs on every batch", flush=True)
        return reason is None
    if args.cache_encoder_outputs and reason:
        raise UsageError(f"--cache_encoder_outputs=True: {reason}, so stored outputs would change training; "
                         f"use --cache_encoder_outputs=False")
    return bool(args.cache_encoder_outputs)


def trainer_arguments(args: FinetuneArguments, *, reads_stored_outputs: bool):
    """Seq2SeqTrainingArguments from our flags, and the settings Trainer cannot guess for this model."""
    import torch
    from transformers import Seq2SeqTrainingArguments

    from utils.training.reporting import reporters

    cuda, world_size = torch.cuda.is_available(), _world_size()
    # Reading stored encoder outputs is a memory copy: on a CPU, workers would only take cores from the
    # training step (docs/performance.md). --num_workers still serves the encoder pass that builds the cache.
    num_workers = 0 if reads_stored_outputs and not cuda else args.num_workers
    decode = args.metric != "none"
    return Seq2SeqTrainingArguments(
        output_dir=_run_dir(args),
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        num_train_epochs=args.num_train_epochs,
        max_steps=args.max_steps,
        logging_steps=args.logging_steps,
        eval_strategy="steps",
        eval_steps=args.eval_steps,
        save_strategy="steps",
        save_steps=args.save_steps,
        # CheckpointCallback rotates instead: Trainer's rotation would delete checkpoint-best/-final.
        save_total_limit=None,
        metric_for_best_model=f"eval_{args.metric}" if decode else "eval_loss",
        greater_is_better=False,
        predict_with_generate=decode,
        generation_max_length=args.generation_max_length,
        fp16=args.fp16,
        bf16=args.bf16,
        # bf16 without CUDA is CPU autocast, which Trainer only accepts when told to stay on the CPU. Several CPU
        # processes need it too: without it accelerate sees no distributed run (DistributedType.NO), so the
        # model is not wrapped in DDP and each process trains its own adapter on its own share of the data.
        use_cpu=not cuda and (args.bf16 or world_size > 1),
        activation_checkpointing=args.gradient_checkpointing,
        # Non-reentrant checkpointing also works when the checkpointed block's inputs need no grad
        # (frozen embeddings, frozen encoder), which reentrant checkpointing silently breaks.
        activation_checkpointing_kwargs={"use_reentrant": False} if args.gradient_checkpointing else None,
        torch_compile=args.use_compile,
        dataloader_num_workers=num_workers,
        # Workers kept across epochs: starting them again every epoch is a large share of a short run.
        dataloader_persistent_workers=num_workers > 0,
        dataloader_pin_memory=cuda,
        # A PeftModel's forward takes **kwargs, so Trainer cannot see that it accepts labels.
        label_names=["labels"],
        remove_unused_columns=False,
        report_to=reporters(args.report_to),
        ddp_backend="gloo" if world_size > 1 and not cuda else None,
        ddp_find_unused_parameters=False if world_size > 1 else None,
        push_to_hub=args.push_to_hub,
        hub_model_id=args.hub_model_id,
        seed=args.seed,
        ddp_timeout=args.ddp_timeout,
        disable_tqdm=False,
    )


def use_encoder_cache(args: FinetuneArguments, model, processor, training_args, train_dataset, eval_dataset):
    """Both datasets reading stored encoder outputs where a clip has them (the steps store the rest as they
    meet them). Returns (train dataset, eval dataset, {"train": store, "eval": store})."""
    from utils.training.callbacks import is_main_process
    from utils.training.encoder_cache import CachedEncoderDataset, EncoderOutputStore, cache_key, check_disk_space

    cache_root = args.encoder_cache_dir or os.path.join(args.output_dir, "encoder_cache")
    autocast = "bfloat16" if args.bf16 else "float16" if args.fp16 else None
    base = model.get_base_model()
    frames, width = base.config.max_source_positions, base.config.d_model

    def cached(dataset, what):
        key = cache_key(dataset, args.base_model, base.config, processor.feature_extractor,
                        args.encoder_cache_dtype, autocast=autocast)
        # Creating the store is instant (a sparse file); the first process on each machine makes it and a
        # second machine sharing the disk finds it made.
        with training_args.main_process_first(desc="encoder cache"):
            store = EncoderOutputStore.open_or_create(cache_root, key, len(dataset), frames, width,
                                                      args.encoder_cache_dtype)
        check_disk_space(store)
        if is_main_process():
            stored = store.filled_count()
            state = "complete" if stored == store.rows else f"{stored} of {store.rows} clips stored, the rest as met"
            print(f"encoder cache ({what}): {store.folder} ({state})", flush=True)
        return CachedEncoderDataset(dataset, store), store

    train_dataset, train_store = cached(train_dataset, "training")
    # The frozen encoder gives the test clips the same outputs at every evaluation too: stored the first time,
    # evaluations after the first (and later runs on the same test set) run the decoder only.
    eval_dataset, eval_store = cached(eval_dataset, "evaluation")
    if train_store.filled_count() < train_store.rows and training_args.dataloader_num_workers != args.num_workers:
        # Clips still to be encoded need their audio decoded: workers do that beside the step, as without the cache.
        training_args.dataloader_num_workers = args.num_workers
        training_args.dataloader_persistent_workers = args.num_workers > 0
    if is_main_process():
        in_main = training_args.dataloader_num_workers != args.num_workers
        print("training and evaluation run the decoder only on stored clips"
              + (", reading the stored outputs in the main process" if in_main else ""), flush=True)
    return train_dataset, eval_dataset, {"train": train_store, "eval": eval_store}


def cache_counts(trainer, stores: Optional[dict]) -> dict:
    """For train_results.json: clips whose encoder outputs are stored, and the seconds this run's steps spent
    encoding and storing them (inside train_runtime)."""
    if not stores:
        return {"encoder_cache_seconds": 0.0, "eval_encoder_cache_seconds": 0.0}
    return {"encoder_cache_clips": stores["train"].filled_count(),
            "eval_encoder_cache_clips": stores["eval"].filled_count(),
            "encoder_cache_seconds": round(trainer.cache_seconds["train"], 3),
            "eval_encoder_cache_seconds": round(trainer.cache_seconds["eval"], 3)}


def build_trainer(args: FinetuneArguments, model, processor, training_args, train_dataset, eval_dataset,
                  dropout_generator, stores: Optional[dict] = None):
    from utils.data.collator import SpeechSeq2SeqCollator
    from utils.training import callbacks as cb
    from utils.training.encoder_cache import EncoderCacheFiller

    callbacks = [cb.CheckpointCallback(_run_dir(args), args.save_total_limit),
                 cb.DropoutSeedCallback(dropout_generator, args.seed)]
    if args.use_adalora:
        callbacks.append(cb.AdaLoraCallback())
    from utils.training.retention import eval_languages, lang_token_masked, normalizer_names, prompt_loss_mask_ids

    # --mask_lang_token_loss on the training clips as loaded (replay included): auto -> leave out or train.
    masked, why = lang_token_masked(args.mask_lang_token_loss, args.mask_task_token_loss,
                                    getattr(train_dataset, "dataset", train_dataset), args.language)
    if cb.is_main_process():
        print(f"language token: {why}", flush=True)

    decode = args.metric != "none"
    languages = eval_languages(getattr(eval_dataset, "dataset", eval_dataset), args.language, processor.tokenizer)
    if decode and cb.is_main_process():
        print(f"evaluation during training: {args.metric.upper()} with evaluation.py's normaliser "
              f"{normalizer_names(languages)}", flush=True)
    trainer_class = type("CachingTrainer", (EncoderCacheFiller, cb.WhisperTrainer), {}) if stores else cb.WhisperTrainer
    trainer = trainer_class(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=SpeechSeq2SeqCollator(processor, model.config.decoder_start_token_id, prompt_loss_mask_ids(
            processor.tokenizer, language=masked, task=args.mask_task_token_loss)),
        compute_metrics=cb.make_compute_metrics(processor.tokenizer, args.metric, languages) if decode else None,
        processing_class=processor.feature_extractor,
        callbacks=callbacks,
    )
    # Whisper's forward takes **kwargs, so the Trainer believes it divides its loss by num_items_in_batch
    # itself: it then multiplies the loss by the process count (average_tokens_across_devices) and skips the
    # division by gradient_accumulation_steps. Whisper computes a plain mean, so with N processes or N
    # accumulation steps the gradients and the logged loss came out N times too large.
    trainer.model_accepts_loss_kwargs = False
    if _world_size() > 1:
        from utils.training.sharding import ShardingReport

        trainer.add_callback(ShardingReport(trainer))   # each rank's share of the weights: is it sharded?
    if args.retention_data:
        add_retention_sets(args, trainer, processor)
    if stores:
        trainer.cache_encoder = model.get_base_model().get_encoder()
        trainer.train_store, trainer.eval_store = stores["train"], stores["eval"]
        trainer.cache_autocast = "bfloat16" if args.bf16 else "float16" if args.fp16 else None
    return trainer


def add_retention_sets(args: FinetuneArguments, trainer, processor) -> None:
    """Every evaluation also scores the --retention_data sets (utils.training.retention)."""
    from utils.training.callbacks import is_main_process
    from utils.training.retention import load_retention_sets, make_retention_callback

    sets = load_retention_sets(args.retention_data, processor, max_samples=args.max_eval_samples,
                               min_audio_len=args.min_audio_len, max_audio_len=args.max_audio_len)
    trainer.add_callback(make_retention_callback(trainer, processor, sets, batch_size=args.per_device_eval_batch_size,
                                                 max_new_tokens=args.generation_max_length))
    if is_main_process():
        print("retention sets scored at every evaluation: " + ", ".join(
            f"{name} ({len(dataset)} clips)" for name, dataset in sets.items()), flush=True)


def save_results(args: FinetuneArguments, trainer, model, results: dict) -> None:
    """checkpoint-final (adapter and the run's trainer state) and train_results.json, then the summary."""
    from utils.core.files import atomic_dir, write_json_atomic
    from utils.training.callbacks import BEST_DIR, FINAL_DIR

    run_dir = _run_dir(args)
    final_dir = os.path.join(run_dir, FINAL_DIR)
    from utils.training.sharding import gathered_adapter_state

    state = trainer.state
    adapter = gathered_adapter_state(model)          # FSDP: every process takes part in the gather
    if trainer.is_world_process_zero():
        with atomic_dir(final_dir) as tmp:
            model.save_pretrained(tmp, safe_serialization=True, state_dict=adapter)
            # The loss curve and speed of the run, for plots and benchmarks (tools/accuracy_experiment.py).
            state.save_to_json(os.path.join(tmp, "trainer_state.json"))
        write_json_atomic(os.path.join(run_dir, "train_results.json"),
                          {**results, "global_step": state.global_step})
        best = (f"best {trainer.args.metric_for_best_model}={state.best_metric:.4f} at step "
                f"{state.best_global_step}" if state.best_metric is not None else "no evaluation ran")
        skipped = (f"; {len(trainer.skipped_clips)} damaged clip(s) skipped while training (--skip_bad, "
                   f"first: {sorted(trainer.skipped_clips)[0]})" if trainer.skipped_clips else "")
        print(f"done: {state.global_step} steps, {best}; adapters in {final_dir} and "
              f"{os.path.join(run_dir, BEST_DIR)}{skipped}", flush=True)
    if _world_size() > 1:
        print(f"rank {trainer.args.process_index}/{_world_size()}: finished {state.global_step} steps "
              f"({trainer.args.ddp_backend or 'nccl'})", flush=True)
    if args.push_to_hub:
        trainer.push_to_hub()


def _run_dir(args: FinetuneArguments) -> str:
    return os.path.join(args.output_dir, model_name(args.base_model))


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def main(argv=None) -> int:
    args = parse_args(FinetuneArguments, argv, description=__doc__)
    return guarded(lambda: train(args))


if __name__ == "__main__":
    sys.exit(main())
