"""Pieces of a fine-tuning run that Seq2SeqTrainer does not provide: checkpoints that are never half-written
(and a write the machine refuses ends in one sentence), AdaLoRA's rank reallocation, decoding metrics and
glibc's allocator settings for CPU steps."""
from __future__ import annotations

import ctypes
import math
import os
import re
import shutil
import sys
from typing import Callable, Optional, Sequence

import numpy as np
from transformers import Seq2SeqTrainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from utils.core.errors import UserError
from utils.core.files import atomic_dir, replace_dir, write_failure
from utils.core.metrics import error_rate
from utils.data.collator import SKIPPED_KEY

BEST_DIR = "checkpoint-best"
FINAL_DIR = "checkpoint-final"
# What an adapter checkpoint needs to be loaded (merge_lora.py) or inspected; optimizer state stays behind.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "README.md",
                 "trainer_state.json")


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def keep_large_tensors_in_the_heap() -> bool:
    """Have glibc serve every allocation from its heap and keep freed memory there (Linux; False elsewhere).

    By default glibc gives each allocation over 32 MB fresh pages from mmap and unmaps them on free, so
    every large activation of a CPU training step (the encoder's 8 x 1500 x 2048 feed-forward tensors
    are 98 MB each) is page-faulted and zeroed anew by the kernel, step after step; reusing heap memory
    instead shortens CPU training steps (docs/performance.md has the figures). The same effect as
    starting the process with MALLOC_MMAP_MAX_=0; no library sets it for us (jemalloc/tcmalloc would
    need LD_PRELOAD before the process starts)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:     # not glibc (musl): its allocator has no such switches
        return False
    m_trim_threshold, m_mmap_max = -1, -4     # glibc's malloc.h
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def copy_adapter_atomic(src: str, dst: str) -> None:
    """Copy the files of an adapter checkpoint (ADAPTER_FILES) to `dst`, which appears complete or not at all."""
    with atomic_dir(dst) as tmp:
        for name in ADAPTER_FILES:
            if os.path.isfile(os.path.join(src, name)):
                shutil.copy2(os.path.join(src, name), os.path.join(tmp, name))


_STEP_DIR = re.compile(r"^checkpoint-(\d+)$")
# Where the Trainer writes a checkpoint-<step> before it is renamed into the run folder.
SAVING_DIR = ".checkpoint-saving"


class CheckpointWriteError(UserError):
    """The machine refused a checkpoint (full disk, folder removed, no permission); says which one survives."""


def last_complete_checkpoint(run_dir: str) -> Optional[str]:
    """The newest checkpoint-<step> folder of `run_dir` that a resume can use (it has trainer_state.json)."""
    if not os.path.isdir(run_dir):
        return None
    steps = sorted((int(m.group(1)), name) for name in os.listdir(run_dir) if (m := _STEP_DIR.match(name))
                   and os.path.isfile(os.path.join(run_dir, name, "trainer_state.json")))
    return os.path.join(run_dir, steps[-1][1]) if steps else None


def _refused(what: str, run_dir: str, reason: str) -> CheckpointWriteError:
    last = last_complete_checkpoint(run_dir)
    survivor = (f"the last complete checkpoint is {last} (--resume_from_checkpoint={last} continues from it)"
                if last else "no complete checkpoint was written before")
    return CheckpointWriteError(f"could not write {what}: {reason}; {survivor}")


def remove_leftovers(run_dir: str) -> list[str]:
    """Delete what a killed run left in `run_dir`: hidden temporary folders and files of utils.core.files
    (.<name>.*.part / .old), the Trainer's staging folder, and checkpoint-<step> folders without the
    trainer_state.json that is written last. Returns the names removed."""
    if not os.path.isdir(run_dir):
        return []
    removed = []
    for name in sorted(os.listdir(run_dir)):
        entry = os.path.join(run_dir, name)
        temporary = name == SAVING_DIR or (name.startswith(".") and name.endswith((".part", ".old")))
        partial = bool(_STEP_DIR.match(name)) and os.path.isdir(entry) and not os.path.isfile(
            os.path.join(entry, "trainer_state.json"))
        if temporary or partial:
            if os.path.isdir(entry):
                shutil.rmtree(entry, ignore_errors=True)
            else:
                os.remove(entry)
            removed.append(name)
    return removed


def rotate_checkpoints(run_dir: str, save_total_limit: Optional[int], keep: Sequence[Optional[str]] = ()) -> list:
    """Delete the oldest checkpoint-<step> folders beyond `save_total_limit`, never one named in `keep`.

    Our own because Trainer's rotation globs checkpoint-* and sorts by mtime, so it counts (and deletes)
    checkpoint-best and checkpoint-final as if they were old step checkpoints."""
    if not save_total_limit or save_total_limit <= 0 or not os.path.isdir(run_dir):
        return []
    steps = sorted((int(m.group(1)), name) for name in os.listdir(run_dir)
                   if (m := _STEP_DIR.match(name)) and os.path.isdir(os.path.join(run_dir, name)))
    protected = {os.path.basename(os.path.normpath(k)) for k in keep if k}
    if steps:
        protected.add(steps[-1][1])  # the newest one is what a resume needs
    removable = [name for _, name in steps if name not in protected]
    excess = len(steps) - save_total_limit
    deleted = removable[:max(0, excess)]
    for name in deleted:
        shutil.rmtree(os.path.join(run_dir, name), ignore_errors=True)
    return deleted


class CheckpointCallback(TrainerCallback):
    """After each save, mirror the best checkpoint so far (by metric_for_best_model) into checkpoint-best,
    then keep at most `save_total_limit` checkpoint-<step> folders (the best and the newest always stay)."""

    def __init__(self, run_dir: str, save_total_limit: Optional[int]):
        self.run_dir = run_dir
        self.best_dir = os.path.join(run_dir, BEST_DIR)
        self.save_total_limit = save_total_limit
        self.copied_from: Optional[str] = None

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return control
        best = state.best_model_checkpoint
        if best and os.path.isdir(best) and best != self.copied_from:
            try:
                copy_adapter_atomic(best, self.best_dir)
            except OSError as exc:
                if write_failure(exc, self.best_dir) is None:
                    raise
                raise _refused(self.best_dir, self.run_dir, exc.strerror) from exc
            self.copied_from = best
        rotate_checkpoints(self.run_dir, self.save_total_limit, keep=[best])
        return control


class WhisperTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer whose checkpoint-<step> folders appear complete or not at all, whose refused writes end
    in one sentence, and which counts the clips SpeechDataset skipped while decoding (--skip_bad).

    transformers 5 writes a checkpoint file by file straight into run_dir/checkpoint-<step>, so a kill or a
    full disk leaves a partial folder; here it writes into a hidden sibling (SAVING_DIR) and the finished
    folder is renamed into place."""

    _staging_root: Optional[str] = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skipped_clips: set = set()

    def _get_output_dir(self, trial):
        return self._staging_root or super()._get_output_dir(trial)

    def _prepare_inputs(self, inputs):
        if isinstance(inputs, dict) and SKIPPED_KEY in inputs:
            self.skipped_clips.update(inputs.pop(SKIPPED_KEY))
        return super()._prepare_inputs(inputs)

    def _wait_for_everyone(self) -> None:
        if self.args.world_size > 1:
            self.accelerator.wait_for_everyone()

    def _save_checkpoint(self, model, trial):
        run_dir = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        final = os.path.join(run_dir, name)
        if not os.path.isdir(run_dir):
            raise _refused(final, run_dir, f"the output folder {run_dir} was removed during the run")
        staging_root = os.path.join(run_dir, SAVING_DIR)
        staged = os.path.join(staging_root, name)
        self._staging_root = staging_root
        try:
            super()._save_checkpoint(model, trial)
            self._wait_for_everyone()
            if self.args.should_save:
                self._promote(staged, final, staging_root)
        except Exception as exc:
            explained = write_failure(exc, staged)
            if self.args.should_save:
                shutil.rmtree(staging_root, ignore_errors=True)
            if explained is None:
                raise
            raise _refused(final, run_dir, explained.strerror) from exc
        finally:
            self._staging_root = None
        self._wait_for_everyone()

    def _promote(self, staged: str, final: str, staging_root: str) -> None:
        # The Trainer recorded the staging path when this step is the best one; the state must name the
        # folder it will have.
        if self.state.best_model_checkpoint == staged:
            self.state.best_model_checkpoint = final
            self.state.save_to_json(os.path.join(staged, "trainer_state.json"))
        replace_dir(staged, final)
        shutil.rmtree(staging_root, ignore_errors=True)


class AdaLoraCallback(TrainerCallback):
    """AdaLoRA scores and prunes ranks from the gradients, so its update must run after every optimizer step
    and before the gradients are zeroed; Trainer offers exactly that hook (on_optimizer_step)."""

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        model.base_model.update_and_allocate(state.global_step)
        return control


def optimizer_steps(n_samples: int, *, batch_size: int, gradient_accumulation_steps: int, world_size: int,
                    num_train_epochs: float, max_steps: int = -1) -> int:
    """Optimizer steps of a run, computed as Trainer does (AdaLoRA's schedule counts these, not samples)."""
    if max_steps and max_steps > 0:
        return max_steps
    batches = math.ceil(n_samples / (batch_size * world_size))
    per_epoch = max(batches // gradient_accumulation_steps + int(batches % gradient_accumulation_steps > 0), 1)
    return math.ceil(num_train_epochs * per_epoch)


class DropoutSeedCallback(TrainerCallback):
    """Reseed the adapters' dropout generator (utils.training.fast_lora.speed_up_lora) from (seed, process, optimizer
    step) before every step: the masks then depend on nothing else that draws random numbers (DataLoader
    workers, the encoder cache, a resume from a checkpoint), and each process of a distributed run draws
    its own."""

    def __init__(self, generator, seed: int):
        self.generator = generator
        self.seed = seed

    def on_step_begin(self, args, state, control, **kwargs):
        seed = np.random.SeedSequence([self.seed, args.process_index, state.global_step]).generate_state(1, np.uint64)
        self.generator.manual_seed(int(seed[0]))
        return control


def make_compute_metrics(tokenizer, metric: str, languages: Optional[Sequence[Optional[str]]] = None) -> Callable:
    """compute_metrics for Seq2SeqTrainer(predict_with_generate=True): decoded texts -> {metric: rate}, each
    clip normalised as evaluation.py does it (by its language code in `languages`, in evaluation order)."""
    from utils.core.text import english_spelling_map

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    spelling = english_spelling_map(tokenizer)

    def compute_metrics(prediction) -> dict:
        preds = np.where(prediction.predictions == -100, pad, prediction.predictions)
        labels = np.where(prediction.label_ids == -100, pad, prediction.label_ids)
        hyps = tokenizer.batch_decode(preds, skip_special_tokens=True)
        refs = tokenizer.batch_decode(labels, skip_special_tokens=True)
        codes = list(languages)[:len(refs)] if languages is not None and len(languages) >= len(refs) else None
        return {metric: error_rate(refs, hyps, metric, language=codes, english_spelling=spelling).value}

    return compute_metrics
