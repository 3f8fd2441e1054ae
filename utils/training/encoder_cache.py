"""Encoder outputs computed once and reused every epoch when the encoder is frozen.

With `--freeze_encoder` the encoder's weights never change, so for un-augmented audio its output
for a clip is the same in every epoch. The first time a training or evaluation step meets a clip it
runs the encoder as usual and stores the hidden states (one row per clip of a sparse .npy file, keyed
by data + model + feature settings); every later epoch, evaluation and run reads the row instead:
WhisperForConditionalGeneration accepts `encoder_outputs` instead of `input_features`. Nothing runs
before step 1, so a corpus of any size starts training at once, every process fills its own share of
the rows, and an interrupted run keeps the rows it stored. The file lives on disk so that a corpus
larger than RAM still works (each item reads its row).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from typing import Optional

import numpy as np
import torch

from utils.core.errors import UserError
from utils.core.files import publish_dir, write_json_atomic

DTYPES = ("float32", "float16")
HIDDEN_FILE = "hidden_states.npy"
META_FILE = "meta.json"
FILLED_FILE = "filled.bin"
_KEY_BATCH = 50_000
# Bump when the stored layout changes, so that old caches are not read with new code.
_CACHE_VERSION = 2


class EncoderCacheError(UserError):
    """The cache cannot be used for this run; the message names the flag and what to do."""


def stochastic_encoder_reason(config) -> Optional[str]:
    """Why the encoder's training-mode output would differ between epochs (then a cache would change
    training), or None when it is deterministic."""
    if getattr(config, "apply_spec_augment", False):
        return "the model config has apply_spec_augment=True (SpecAugment masks the features anew every step)"
    for name in ("dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop"):
        if (getattr(config, name, 0.0) or 0.0) > 0:
            return f"the model config has {name}={getattr(config, name)} (the encoder is random in training)"
    return None


def _model_identity(name_or_path: str) -> dict:
    # Weights are identified by size and modification time: hashing gigabytes at every start would
    # cost more than the cache saves on small runs.
    if not os.path.isdir(name_or_path):
        return {"model": name_or_path}
    files = {}
    for name in sorted(os.listdir(name_or_path)):
        path = os.path.join(name_or_path, name)
        if name.endswith((".safetensors", ".bin", ".json")) and os.path.isfile(path):
            stat = os.stat(path)
            files[name] = [stat.st_size, stat.st_mtime_ns]
    return {"model": os.path.abspath(name_or_path), "files": files}


def cache_key(dataset, model_name_or_path: str, model_config, feature_extractor, dtype: str,
              autocast: Optional[str] = None) -> str:
    """Same clips in the same order, same model, same features and dtype -> same key."""
    # The encoder sees only the audio, so the key is the clips (file, slice, file size and time), not the
    # labels: runs with and without timestamps, LoRA or AdaLoRA, share one cache. Hashed a batch of rows at
    # a time: a million-line manifest is never held as Python objects (docs/data-tools.md).
    clips = hashlib.sha256()
    last_path, last_stat = None, None
    for batch in dataset.data.select_columns(["path", "start_time", "end_time"]).iter(batch_size=_KEY_BATCH):
        stats = []
        for path in batch["path"]:
            if path != last_path:     # slices of one long file share its stat
                stat = os.stat(path)
                last_path, last_stat = path, [stat.st_size, stat.st_mtime_ns]
            stats.append(last_stat)
        clips.update(json.dumps([batch, stats], sort_keys=True).encode())
    key = {
        "version": _CACHE_VERSION,
        "clips": clips.hexdigest(),
        **_model_identity(model_name_or_path),
        "config": model_config.to_json_string(use_diff=False),
        "features": feature_extractor.to_json_string(),
        "dtype": dtype,
    }
    if autocast:  # outputs computed in mixed precision differ slightly from fp32 ones
        key["autocast"] = autocast
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def cache_bytes(rows: int, encoder_config, dtype: str) -> int:
    """Disk space of the stored outputs of `rows` clips."""
    return rows * encoder_config.max_source_positions * encoder_config.d_model * np.dtype(dtype).itemsize


class EncoderOutputStore:
    """One row of encoder output per clip, filled the first time a training or evaluation step meets the
    clip, read in every later epoch and run.

    On disk: `hidden_states.npy` (a sparse .npy array of every row, allocated at creation) and
    `filled.bin` (one byte per row, set once its row is written). A row is written before its byte, so a
    killed run leaves rows that are either whole and marked or recomputed by the next run; the folder is
    the state to resume from, never a half-finished build. Processes write disjoint rows (each rank meets
    its own share of the clips), with positioned writes that need no lock.
    """

    def __init__(self, folder: str):
        try:
            with open(os.path.join(folder, META_FILE), encoding="utf-8") as handle:
                meta = json.load(handle)
            self.rows, self.shape, self.dtype = meta["rows"], (meta["frames"], meta["width"]), np.dtype(meta["dtype"])
        except (OSError, ValueError, KeyError) as exc:
            raise EncoderCacheError(f"{folder}: not a readable encoder cache ({exc}); delete the folder "
                                    f"to rebuild it") from None
        self.folder = folder
        self.path = os.path.join(folder, HIDDEN_FILE)
        self.offset = _data_offset(self.path)
        self.row_bytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self._fds: Optional[tuple[int, int]] = None

    @classmethod
    def open_or_create(cls, cache_root: str, key: str, rows: int, frames: int, width: int,
                       dtype: str) -> "EncoderOutputStore":
        """The store for `key`, created empty if no process (on any machine sharing the disk) made it yet."""
        if dtype not in DTYPES:
            raise EncoderCacheError(f"--encoder_cache_dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        folder = os.path.join(cache_root, key)
        if not os.path.isfile(os.path.join(folder, META_FILE)):
            os.makedirs(cache_root, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=f".{key}.", suffix=".part", dir=cache_root)
            try:
                with open(os.path.join(tmp, HIDDEN_FILE), "wb") as handle:
                    np.lib.format.write_array_header_1_0(handle, {
                        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                        "shape": (rows, frames, width)})
                    handle.truncate(handle.tell() + rows * frames * width * np.dtype(dtype).itemsize)
                with open(os.path.join(tmp, FILLED_FILE), "wb") as handle:
                    handle.truncate(rows)
                write_json_atomic(os.path.join(tmp, META_FILE), {"rows": rows, "frames": frames, "width": width,
                                                                 "dtype": dtype, "version": _CACHE_VERSION})
                publish_dir(tmp, folder)     # another process that got there first wins; its store is used
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        store = cls(folder)
        if store.rows != rows or store.shape != (frames, width):
            raise EncoderCacheError(f"{folder}: encoder cache has {store.rows} rows of {store.shape} for {rows} "
                                    f"clips of {(frames, width)}; delete the folder to rebuild it")
        return store

    def __getstate__(self):
        # DataLoader workers open the files themselves rather than receiving pickled descriptors.
        state = self.__dict__.copy()
        state["_fds"] = None
        return state

    def _open(self) -> tuple[int, int]:
        if self._fds is None:
            self._fds = (os.open(self.path, os.O_RDWR), os.open(os.path.join(self.folder, FILLED_FILE), os.O_RDWR))
        return self._fds

    def filled(self, row: int) -> bool:
        return os.pread(self._open()[1], 1, int(row)) == b"\x01"

    def filled_count(self) -> int:
        return int(np.count_nonzero(np.fromfile(os.path.join(self.folder, FILLED_FILE), dtype=np.uint8)))

    def read(self, row: int) -> np.ndarray:
        # One read per row into a fresh array. A memory map (np.load(mmap_mode="r")) reads as fast, but
        # every page it touches stays mapped into the process and counts as its resident memory (file
        # pages, not memory it needs; docs/training.md).
        array = np.empty(self.shape, dtype=self.dtype)
        view, position = memoryview(array).cast("B"), self.offset + int(row) * self.row_bytes
        while view:
            count = os.preadv(self._open()[0], [view], position)
            if not count:
                raise EncoderCacheError(f"{self.path}: the encoder cache file ends early; delete its folder "
                                        f"to rebuild it")
            view, position = view[count:], position + count
        return array

    def write(self, row: int, array: np.ndarray) -> np.ndarray:
        """Store one clip's output; returns it as stored (rounded to the store's dtype)."""
        stored = np.ascontiguousarray(array, dtype=self.dtype)
        data, flags = self._open()
        try:
            _pwrite_all(data, memoryview(stored).cast("B"), self.offset + int(row) * self.row_bytes)
            os.pwrite(flags, b"\x01", int(row))
        except OSError as exc:
            raise EncoderCacheError(f"{self.folder}: cannot store encoder outputs ({exc.strerror or exc}); free "
                                    f"space there, use --encoder_cache_dtype=float16, another "
                                    f"--encoder_cache_dir, or --cache_encoder_outputs=False") from None
        return stored


def check_disk_space(store: EncoderOutputStore) -> None:
    """Room for the rows not stored yet (the file is sparse: it takes space as rows arrive)."""
    missing = (store.rows - store.filled_count()) * store.row_bytes
    free = shutil.disk_usage(store.folder).free
    if missing > free:
        raise EncoderCacheError(f"the encoder cache needs {missing / 2**30:.1f} GiB more in {store.folder} and only "
                                f"{free / 2**30:.1f} GiB are free; use --encoder_cache_dtype=float16, "
                                f"another --encoder_cache_dir, or --cache_encoder_outputs=False")


class CachedEncoderDataset(torch.utils.data.Dataset):
    """Items {"encoder_hidden_states": [frames, d_model], "labels": list[int]} for clips already stored (no
    audio is decoded), or the dataset's own item plus {"cache_row": index} for a clip not stored yet: the
    training or evaluation step runs the encoder on it and stores the output (EncoderCacheFiller)."""

    def __init__(self, dataset, store: EncoderOutputStore):
        if store.rows != len(dataset):
            raise EncoderCacheError(f"{store.folder}: encoder cache has {store.rows} rows for {len(dataset)} "
                                    f"clips; delete the folder to rebuild it")
        self.dataset, self.store = dataset, store

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        if self.store.filled(index):
            return {"encoder_hidden_states": self.store.read(index).astype(np.float32, copy=False),
                    "labels": self.dataset.labels(index)}
        return {**self.dataset[index], "cache_row": int(index)}


class EncoderCacheFiller:
    """Trainer mixin: a batch with clips not stored yet (collator keys `missing_*`) gets their encoder outputs
    computed here, under the step's own precision context, stored, and handed to the model with the stored
    ones, so the first epoch costs what training without the cache costs and no pass runs before step 1."""

    # Set by finetune.py: the frozen encoder and the store behind each dataset.
    cache_encoder = None
    cache_autocast: Optional[str] = None      # "bfloat16" / "float16": the run's mixed precision
    train_store: Optional[EncoderOutputStore] = None
    eval_store: Optional[EncoderOutputStore] = None
    # Seconds spent encoding and storing clips inside training / evaluation steps (part of their time).
    cache_seconds = {"train": 0.0, "eval": 0.0}

    def compute_loss(self, model, inputs, *args, **kwargs):
        return super().compute_loss(model, self._complete(inputs, self.train_store, "train"), *args, **kwargs)

    def prediction_step(self, model, inputs, *args, **kwargs):
        return super().prediction_step(model, self._complete(self._prepare_inputs(inputs), self.eval_store, "eval"),
                                       *args, **kwargs)

    def _complete(self, inputs: dict, store: Optional[EncoderOutputStore], what: str) -> dict:
        if "missing_features" not in inputs:
            return inputs
        from transformers.modeling_outputs import BaseModelOutput

        started = time.perf_counter()
        if type(self).cache_seconds is self.cache_seconds:
            self.cache_seconds = {"train": 0.0, "eval": 0.0}     # this trainer's own counts

        inputs = dict(inputs)
        features, positions, rows = (inputs.pop(name) for name in ("missing_features", "missing_positions",
                                                                  "missing_rows"))
        hidden = inputs.pop("cached_hidden", None)
        encoder = self.cache_encoder
        was_training = encoder.training
        encoder.eval()      # deterministic (checked before the cache is used): same output as in training mode
        try:
            weights = next(encoder.parameters())
            # Explicit: evaluation steps run outside the Trainer's autocast, training steps inside it.
            mixed = dict(device_type=weights.device.type, dtype=getattr(torch, self.cache_autocast or "bfloat16"),
                         enabled=bool(self.cache_autocast))
            with torch.no_grad(), torch.autocast(**mixed):
                computed = encoder(features.to(weights.device, weights.dtype)).last_hidden_state
        finally:
            encoder.train(was_training)
        # What later epochs will read: rounded to the store's dtype, so every epoch sees the same numbers.
        stored = [store.write(int(row), out.float().cpu().numpy()) for row, out in zip(rows, computed)]
        if hidden is None:
            hidden = torch.empty((len(features), *computed.shape[1:]), dtype=torch.float32, device=computed.device)
        for position, array in zip(positions.tolist(), stored):
            hidden[position] = torch.from_numpy(array.astype(np.float32)).to(hidden.device)
        inputs["encoder_outputs"] = BaseModelOutput(last_hidden_state=hidden)
        self.cache_seconds[what] += time.perf_counter() - started
        return inputs


def _data_offset(path: str) -> int:
    """Where the rows of the .npy file at `path` begin (after its header)."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read_header:
            raise EncoderCacheError(f"{path}: unexpected .npy format {version}; delete the folder to rebuild it")
        read_header[version](handle)
        return handle.tell()


def _pwrite_all(fd: int, view: memoryview, position: int) -> None:
    while view:
        count = os.pwrite(fd, view, position)
        view, position = view[count:], position + count
