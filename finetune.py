"""Fine-tune Whisper with LoRA or AdaLoRA on a jsonlines data set.

    python finetune.py --train_data=dataset/zh_train.jsonl --test_data=dataset/zh_test.jsonl
    torchrun --nproc_per_node=2 finetune.py ...        accelerate launch --num_processes 2 finetune.py ...

Adapters land in <output_dir>/<base model name>/checkpoint-best and checkpoint-final;
merge one into a standalone model with merge_lora.py.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Optional

from utils.core.models import default_base_model
from utils.training.lora import DEFAULT_TARGET_MODULES

TASKS = ("transcribe", "translate")
METRIC_CHOICES = ("cer", "wer", "none")


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
    task: str = field(default="transcribe", metadata={"help": "transcribe or translate."})
    timestamps: bool = field(default=False, metadata={"help": "Train with timestamp tokens (needs 'sentences')."})
    use_adalora: bool = field(default=False, metadata={"help": "AdaLoRA (ranks reallocated during training) "
                                                               "instead of LoRA."})
    use_8bit: bool = field(default=False, metadata={"help": "Load the base model in 8 bit (bitsandbytes; CUDA only)."})
    fp16: bool = field(default=False, metadata={"help": "Mixed precision float16 (CUDA only)."})
    bf16: bool = field(default=False, metadata={
        "help": "Mixed precision bfloat16: CUDA GPUs with bf16, or CPUs with AVX512-BF16/AMX (about 2x faster "
                "training steps there, docs/training_benchmark.md)."})
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
    encoder_cache_dtype: str = field(default="float32",
                                     metadata={"help": "float32 (training identical to no cache) or float16 "
                                                       "(half the disk space, tiny rounding differences)."})
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
    max_eval_samples: Optional[int] = field(default=None,
                                            metadata={"help": "Evaluate on the first N test clips only."})
    min_audio_len: float = field(default=0.5, metadata={"help": "Leave out clips shorter than this (s)."})
    max_audio_len: float = field(default=30.0, metadata={"help": "Leave out clips longer than this (s, <= 30)."})
    augment_config_path: Optional[str] = field(default=None,
                                               metadata={"help": "Augmentation JSON, e.g. configs/augmentation.json."})
    skip_bad: bool = field(default=False, metadata={"help": "Skip and count bad manifest lines instead of stopping."})
    resume_from_checkpoint: Optional[str] = field(default=None,
                                                  metadata={"help": "checkpoint-<step> folder to continue from "
                                                                    "(step count, optimizer, scheduler)."})
    local_files_only: bool = field(default=False, metadata={"help": "Never download the base model."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push checkpoints to the Hugging Face Hub."})
    hub_model_id: Optional[str] = field(default=None, metadata={"help": "Hub repository for --push_to_hub."})
    num_workers: int = field(default=min(8, os.cpu_count() or 1),
                             metadata={"help": "DataLoader worker processes (audio decoding, features); on a CPU, "
                                       "training from stored encoder outputs reads them with none."})
    use_compile: bool = field(default=False, metadata={"help": "torch.compile the model."})
    seed: int = field(default=42, metadata={"help": "Random seed (weights of new adapters, shuffling, augmentation)."})


class UsageError(ValueError):
    """A flag combination that cannot work; the message names the flag."""


def check_arguments(args: FinetuneArguments) -> None:
    if args.task not in TASKS:
        raise UsageError(f"--task must be one of {', '.join(TASKS)}, got {args.task!r}")
    if args.metric not in METRIC_CHOICES:
        raise UsageError(f"--metric must be one of {', '.join(METRIC_CHOICES)}, got {args.metric!r}")
    for name in ("train_data", "test_data"):
        if not os.path.isfile(getattr(args, name)):
            raise UsageError(f"--{name}: {getattr(args, name)} not found")
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                 "logging_steps", "eval_steps", "save_steps", "lora_r", "lora_alpha", "generation_max_length"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.save_steps % args.eval_steps:
        raise UsageError(f"--save_steps ({args.save_steps}) must be a multiple of --eval_steps ({args.eval_steps}): "
                         f"the best checkpoint can only be one that was both evaluated and saved")
    if not 0 <= args.lora_dropout < 1:
        raise UsageError(f"--lora_dropout must be in [0, 1), got {args.lora_dropout}")
    if args.push_to_hub and not args.hub_model_id:
        raise UsageError("--push_to_hub needs --hub_model_id=<user>/<name>")
    if args.hub_model_id and not args.push_to_hub:
        raise UsageError("--hub_model_id does nothing without --push_to_hub")
    if args.resume_from_checkpoint and not os.path.isfile(
            os.path.join(args.resume_from_checkpoint, "trainer_state.json")):
        raise UsageError(f"--resume_from_checkpoint: {args.resume_from_checkpoint} is not a checkpoint-<step> "
                         f"folder written by finetune.py (no trainer_state.json)")
    if args.augment_config_path and not os.path.isfile(args.augment_config_path):
        raise UsageError(f"--augment_config_path: {args.augment_config_path} not found")
    from utils.data.labels import language_code

    try:
        language_code(args.language)
    except ValueError as exc:
        raise UsageError(f"--language: {exc}") from None
    if args.cache_encoder_outputs and not args.freeze_encoder:
        raise UsageError("--cache_encoder_outputs=True needs --freeze_encoder=True: a trained encoder gives "
                         "different outputs every step, so there is nothing to reuse")
    if args.cache_encoder_outputs and args.augment_config_path:
        raise UsageError("--cache_encoder_outputs=True cannot be combined with --augment_config_path: augmentation "
                         "changes the audio every epoch, so stored encoder outputs would be stale; drop one of them")
    if args.encoder_cache_dtype not in ("float32", "float16"):
        raise UsageError(f"--encoder_cache_dtype must be float32 or float16, got {args.encoder_cache_dtype!r}")
    if (args.encoder_cache_dir or args.encoder_cache_dtype != "float32") and args.cache_encoder_outputs is False:
        raise UsageError("--encoder_cache_dir/--encoder_cache_dtype do nothing with --cache_encoder_outputs=False")
    if args.max_eval_samples is not None and args.max_eval_samples < 1:
        raise UsageError(f"--max_eval_samples must be at least 1, got {args.max_eval_samples}")


def decide_encoder_cache(args: FinetuneArguments, config) -> bool:
    """Whether this run stores encoder outputs once (--cache_encoder_outputs, default: when it is safe)."""
    from utils.training.callbacks import is_main_process
    from utils.training.encoder_cache import stochastic_encoder_reason

    if not args.freeze_encoder:
        return False
    reason = stochastic_encoder_reason(config)
    if args.cache_encoder_outputs is None:
        reason = reason or ("augmentation changes the audio every epoch" if args.augment_config_path else None)
        if reason and is_main_process():
            print(f"encoder cache off: {reason}; the frozen encoder runs on every batch", flush=True)
        return reason is None
    if args.cache_encoder_outputs and reason:
        raise UsageError(f"--cache_encoder_outputs=True: {reason}, so stored outputs would change training; "
                         f"use --cache_encoder_outputs=False")
    return bool(args.cache_encoder_outputs)


def main(argv=None) -> int:
    from transformers import HfArgumentParser

    parser = HfArgumentParser(FinetuneArguments, description=__doc__.split("\n\n")[0])
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    if args.language is not None and args.language.strip().lower() in ("", "none"):
        args.language = None
    try:
        check_arguments(args)
        return train(args)
    except (UsageError, ValueError) as exc:
        from utils.core.models import ModelLoadError
        from utils.data.manifest import DataError
        from utils.training.encoder_cache import EncoderCacheError

        if not isinstance(exc, (UsageError, DataError, ModelLoadError, EncoderCacheError)):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


def train(args: FinetuneArguments) -> int:
    import torch
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, set_seed

    from utils.core.devices import check_precision
    from utils.core.models import checkpoint_is_multilingual, load_processor, load_whisper, model_name
    from utils.data.collator import SpeechSeq2SeqCollator
    from utils.data.manifest import SpeechDataset
    from utils.training.callbacks import (
        FINAL_DIR,
        AdaLoraCallback,
        CheckpointCallback,
        DropoutSeedCallback,
        keep_large_tensors_in_the_heap,
        make_compute_metrics,
        optimizer_steps,
        print_config,
        save_adapter_atomic,
        write_json_atomic,
    )
    from utils.training.fast_lora import speed_up_lora
    from utils.training.lora import add_adapter, prepare_for_finetuning

    print_config("Configuration", args)
    if not torch.cuda.is_available():
        keep_large_tensors_in_the_heap()
    check_precision(fp16=args.fp16, bf16=args.bf16, use_8bit=args.use_8bit)
    set_seed(args.seed)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))

    processor = load_processor(args.base_model, local_files_only=args.local_files_only)
    language, task = args.language, args.task
    if not checkpoint_is_multilingual(args.base_model, local_files_only=args.local_files_only):
        # English-only checkpoints have no language/task tokens; a request for them is a mistake.
        if language and language.lower() not in ("en", "english"):
            raise UsageError(f"--language={language}: {args.base_model} is English-only; use --language=None")
        if task != "transcribe":
            raise UsageError(f"--task={task}: {args.base_model} is English-only and can only transcribe")
        language = None

    data_kwargs = dict(language=language, task=task, timestamps=args.timestamps, min_audio_len=args.min_audio_len,
                       max_audio_len=args.max_audio_len, skip_bad=args.skip_bad)
    train_dataset = SpeechDataset(args.train_data, processor, augment_config_path=args.augment_config_path,
                                  **data_kwargs)
    test_dataset = SpeechDataset(args.test_data, processor, **data_kwargs)
    eval_dataset = test_dataset if args.max_eval_samples is None else test_dataset.head(args.max_eval_samples)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"train: {len(train_dataset)} clips from {args.train_data} {train_dataset.stats}; "
              f"test: {len(eval_dataset)} clips from {args.test_data}", flush=True)

    dtype = torch.float16 if args.use_8bit else None
    model = load_whisper(args.base_model, local_files_only=args.local_files_only, use_8bit=args.use_8bit, dtype=dtype)
    prepare_for_finetuning(model, language=language, task=task, use_8bit=args.use_8bit,
                           gradient_checkpointing=args.gradient_checkpointing)
    model.generation_config.return_timestamps = args.timestamps
    use_cache = decide_encoder_cache(args, model.config)
    encoder = model.get_encoder()
    total_steps = optimizer_steps(len(train_dataset), batch_size=args.per_device_train_batch_size,
                                  gradient_accumulation_steps=args.gradient_accumulation_steps,
                                  world_size=world_size, num_train_epochs=args.num_train_epochs,
                                  max_steps=args.max_steps)
    model = add_adapter(model, use_adalora=args.use_adalora, r=args.lora_r, alpha=args.lora_alpha,
                        dropout=args.lora_dropout, target_modules=args.target_modules.split(","),
                        freeze_encoder=args.freeze_encoder, total_step=total_steps)
    dropout_generator = speed_up_lora(model, args.seed)
    if int(os.environ.get("RANK", "0")) == 0:
        model.print_trainable_parameters()

    run_dir = os.path.join(args.output_dir, model_name(args.base_model))
    decode = args.metric != "none"
    # Reading stored encoder outputs is a memory copy: on a CPU, workers would only take cores from the
    # training step (10.5 s instead of 12.3 s for the benchmark's cached run with none instead of one).
    # --num_workers still serves the encoder pass that builds the cache.
    num_workers = 0 if use_cache and not torch.cuda.is_available() else args.num_workers
    training_args = Seq2SeqTrainingArguments(
        output_dir=run_dir,
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
        # bf16 without CUDA is CPU autocast, which Trainer only accepts when told to stay on the CPU.
        use_cpu=bool(args.bf16 and not torch.cuda.is_available()),
        activation_checkpointing=args.gradient_checkpointing,
        # Non-reentrant checkpointing also works when the checkpointed block's inputs need no grad
        # (frozen embeddings, frozen encoder), which reentrant checkpointing silently breaks.
        activation_checkpointing_kwargs={"use_reentrant": False} if args.gradient_checkpointing else None,
        torch_compile=args.use_compile,
        dataloader_num_workers=num_workers,
        # Workers kept across epochs: starting them again every epoch cost 4 s of a 24 s cached run
        # (docs/performance.md).
        dataloader_persistent_workers=num_workers > 0,
        dataloader_pin_memory=torch.cuda.is_available(),
        # A PeftModel's forward takes **kwargs, so Trainer cannot see that it accepts labels.
        label_names=["labels"],
        remove_unused_columns=False,
        report_to=["tensorboard"],
        ddp_backend="gloo" if world_size > 1 and not torch.cuda.is_available() else None,
        ddp_find_unused_parameters=False if world_size > 1 else None,
        push_to_hub=args.push_to_hub,
        hub_model_id=args.hub_model_id,
        seed=args.seed,
        disable_tqdm=False,
    )
    cache_seconds = eval_cache_seconds = 0.0
    if use_cache:
        from utils.training.encoder_cache import CachedEncoderDataset, build_encoder_cache, cache_key

        cache_root = args.encoder_cache_dir or os.path.join(args.output_dir, "encoder_cache")
        autocast = "bfloat16" if args.bf16 else "float16" if args.fp16 else None

        def cached(dataset, what):
            key = cache_key(dataset, args.base_model, model.get_base_model().config, processor.feature_extractor,
                            args.encoder_cache_dtype, autocast=autocast)
            # Rank 0 builds the cache while the other processes wait, then they all read the same file.
            with training_args.main_process_first(desc="encoder cache"):
                folder, seconds = build_encoder_cache(
                    encoder, dataset, cache_root, key, dtype=args.encoder_cache_dtype,
                    batch_size=args.per_device_eval_batch_size, num_workers=args.num_workers,
                    show_progress=int(os.environ.get("RANK", "0")) == 0, autocast=autocast)
            if int(os.environ.get("RANK", "0")) == 0:
                print(f"encoder cache ({what}): {folder} "
                      f"({'built in %.1f s' % seconds if seconds else 'reused'})", flush=True)
            return CachedEncoderDataset(dataset, folder), seconds

        train_dataset, cache_seconds = cached(train_dataset, "training")
        # The frozen encoder gives the test clips the same outputs at every evaluation too: stored once,
        # evaluations after the first (and later runs on the same test set) run the decoder only.
        eval_dataset, eval_cache_seconds = cached(eval_dataset, "evaluation")
        if int(os.environ.get("RANK", "0")) == 0:
            print("training and evaluation run the decoder only"
                  + (", reading the stored outputs in the main process" if num_workers != args.num_workers else ""),
                  flush=True)

    callbacks = [CheckpointCallback(run_dir, args.save_total_limit), DropoutSeedCallback(dropout_generator, args.seed)]
    if args.use_adalora:
        callbacks.append(AdaLoraCallback())
    trainer = Seq2SeqTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=SpeechSeq2SeqCollator(processor, model.config.decoder_start_token_id),
        compute_metrics=make_compute_metrics(processor.tokenizer, args.metric) if decode else None,
        processing_class=processor.feature_extractor,
        callbacks=callbacks,
    )
    model.config.use_cache = False
    result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)

    final_dir = os.path.join(run_dir, FINAL_DIR)
    if trainer.is_world_process_zero():
        save_adapter_atomic(model, final_dir)
        # The loss curve and speed of the run, for plots and benchmarks (tools/accuracy_experiment.py).
        trainer.state.save_to_json(os.path.join(final_dir, "trainer_state.json"))
        write_json_atomic(os.path.join(run_dir, "train_results.json"), {
            **result.metrics, "encoder_cache": use_cache, "encoder_cache_seconds": cache_seconds,
            "eval_encoder_cache_seconds": eval_cache_seconds,
            "train_clips": len(train_dataset), "global_step": trainer.state.global_step})
        state = trainer.state
        best = (f"best {training_args.metric_for_best_model}={state.best_metric:.4f} at step "
                f"{state.best_global_step}" if state.best_metric is not None else "no evaluation ran")
        print(f"done: {state.global_step} steps, {best}; adapters in {final_dir} and "
              f"{os.path.join(run_dir, 'checkpoint-best')}", flush=True)
    if world_size > 1:
        print(f"rank {trainer.args.process_index}/{world_size}: finished {trainer.state.global_step} steps "
              f"({trainer.args.ddp_backend or 'nccl'})", flush=True)
    if args.push_to_hub:
        trainer.push_to_hub()
    return 0


if __name__ == "__main__":
    sys.exit(main())
