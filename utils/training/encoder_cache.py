"""Encoder outputs computed once and reused every epoch when the encoder is frozen.

With `--freeze_encoder` the encoder's weights never change, so for un-augmented audio its output
for a clip is the same in every epoch. Running it once per clip and storing the hidden states in a
.npy file (one row per clip, keyed by data + model + feature settings) lets training
run only the decoder: WhisperForConditionalGeneration accepts `encoder_outputs` instead of
`input_features`. The file lives on disk so that a corpus larger than RAM still works (each item
reads its row).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from typing import Optional

import numpy as np
import torch

from utils.core.errors import UserError
from utils.core.files import atomic_dir

DTYPES = ("float32", "float16")
HIDDEN_FILE = "hidden_states.npy"
META_FILE = "meta.json"
# Bump when the stored layout changes, so that old caches are not read with new code.
_CACHE_VERSION = 1


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
    # labels: runs with and without timestamps, LoRA or AdaLoRA, share one cache.
    clips = dataset.data.select_columns(["path", "start_time", "end_time"]).to_dict()
    stats = {}
    for path in set(clips["path"]):
        stat = os.stat(path)
        stats[path] = [stat.st_size, stat.st_mtime_ns]
    key = {
        "version": _CACHE_VERSION,
        "clips": hashlib.sha256(json.dumps([clips, stats], sort_keys=True).encode()).hexdigest(),
        **_model_identity(model_name_or_path),
        "config": model_config.to_json_string(use_diff=False),
        "features": feature_extractor.to_json_string(),
        "dtype": dtype,
    }
    if autocast:  # outputs computed in mixed precision differ slightly from fp32 ones
        key["autocast"] = autocast
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


class _Features(torch.utils.data.Dataset):
    """Only the spectrogram of each clip (labels are not needed to run the encoder)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset.features(index)


def _collate_features(batch):
    return torch.from_numpy(np.stack(batch))


def build_encoder_cache(encoder, dataset, cache_root: str, key: str, *, dtype: str = "float32",
                        batch_size: int = 8, num_workers: int = 0, device: Optional[torch.device] = None,
                        show_progress: bool = True, autocast: Optional[str] = None) -> tuple[str, float]:
    """Run the encoder over every clip of `dataset` once; returns (folder, seconds spent, 0 on a hit).

    `autocast` ("bfloat16" / "float16") runs the encoder in that mixed precision, as training with
    --bf16 / --fp16 would without the cache.

    The folder appears complete or not at all (utils.core.files.atomic_dir), so an interrupted run
    leaves nothing that a later run would mistake for a finished cache; a concurrent run that
    finished first is replaced by an equal cache.
    """
    if dtype not in DTYPES:
        raise EncoderCacheError(f"--encoder_cache_dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    folder = os.path.join(cache_root, key)
    if os.path.isfile(os.path.join(folder, META_FILE)):
        return folder, 0.0
    shape = (len(dataset), encoder.config.max_source_positions, encoder.config.d_model)
    _check_disk_space(cache_root, int(np.prod(shape)) * np.dtype(dtype).itemsize)
    start = time.perf_counter()
    with atomic_dir(folder) as tmp:
        _write_hidden_states(encoder, dataset, os.path.join(tmp, HIDDEN_FILE), shape, dtype,
                             batch_size=batch_size, num_workers=num_workers, show_progress=show_progress,
                             device=device or next(encoder.parameters()).device, autocast=autocast)
        with open(os.path.join(tmp, META_FILE), "w", encoding="utf-8") as handle:
            json.dump({"rows": shape[0], "frames": shape[1], "width": shape[2], "dtype": dtype,
                       "manifest": dataset.manifest_path}, handle)
    return folder, time.perf_counter() - start


def _check_disk_space(cache_root: str, size: int) -> None:
    os.makedirs(cache_root, exist_ok=True)
    free = shutil.disk_usage(cache_root).free
    if size > free:
        raise EncoderCacheError(f"the encoder cache needs {size / 2**30:.1f} GiB in {cache_root} and only "
                                f"{free / 2**30:.1f} GiB are free; use --encoder_cache_dtype=float16, "
                                f"another --output_dir, or --cache_encoder_outputs=False")


def _write_hidden_states(encoder, dataset, path: str, shape: tuple, dtype: str, *, batch_size: int,
                         num_workers: int, show_progress: bool, device: torch.device,
                         autocast: Optional[str]) -> None:
    """The encoder's last hidden state of every clip, in order, as one .npy array of `shape`."""
    from tqdm import tqdm

    loader = torch.utils.data.DataLoader(_Features(dataset), batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, collate_fn=_collate_features)
    weight_dtype = next(encoder.parameters()).dtype
    mixed = dict(device_type=device.type, dtype=getattr(torch, autocast or "bfloat16"), enabled=bool(autocast))
    was_training = encoder.training
    encoder.eval()
    # Plain file writes after the .npy header, not a memory map: the pages a map writes count towards
    # this process's resident memory until it is closed.
    try:
        with torch.inference_mode(), open(path, "wb", buffering=0) as rows:
            np.lib.format.write_array_header_1_0(rows, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                        "fortran_order": False, "shape": shape})
            for features in tqdm(loader, desc="Encoder outputs (once)", unit="batch", disable=not show_progress):
                # Only the encoder in autocast: with num_workers=0 the loader's feature extraction runs here too.
                with torch.autocast(**mixed):
                    out = encoder(features.to(device, weight_dtype)).last_hidden_state
                _write_all(rows, np.ascontiguousarray(out.float().cpu().numpy().astype(dtype, copy=False)))
    finally:
        encoder.train(was_training)


class CachedEncoderDataset(torch.utils.data.Dataset):
    """Items {"encoder_hidden_states": [frames, d_model], "labels": list[int]}: the stored encoder output
    of each clip instead of its spectrogram; no audio is decoded."""

    def __init__(self, dataset, folder: str):
        with open(os.path.join(folder, META_FILE), encoding="utf-8") as handle:
            meta = json.load(handle)
        if meta["rows"] != len(dataset):
            raise EncoderCacheError(f"{folder}: encoder cache has {meta['rows']} rows for {len(dataset)} clips; "
                                    f"delete the folder to rebuild it")
        self.dataset = dataset
        self.path = os.path.join(folder, HIDDEN_FILE)
        self.shape = (meta["frames"], meta["width"])
        self.dtype = np.dtype(meta["dtype"])
        self.offset = _data_offset(self.path)
        self._file = None

    def __len__(self):
        return len(self.dataset)

    def __getstate__(self):
        # DataLoader workers open the file themselves rather than receiving a pickled handle.
        state = self.__dict__.copy()
        state["_file"] = None
        return state

    def __getitem__(self, index):
        # One read per row into a fresh array. A memory map (np.load(mmap_mode="r")) reads as fast, but
        # every page it touches stays mapped into the process and counts as its resident memory (file
        # pages, not memory it needs; docs/training.md).
        if self._file is None:
            self._file = open(self.path, "rb", buffering=0)
        row = np.empty(self.shape, dtype=self.dtype)
        self._file.seek(self.offset + int(index) * row.nbytes)
        _read_all(self._file, row, self.path)
        return {"encoder_hidden_states": row.astype(np.float32, copy=False), "labels": self.dataset.labels(index)}


def _data_offset(path: str) -> int:
    """Where the rows of the .npy file at `path` begin (after its header)."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read_header:
            raise EncoderCacheError(f"{path}: unexpected .npy format {version}; delete the folder to rebuild it")
        read_header[version](handle)
        return handle.tell()


def _write_all(handle, array: np.ndarray) -> None:
    view = memoryview(array).cast("B")
    while view:
        view = view[handle.write(view):]


def _read_all(handle, array: np.ndarray, path: str) -> None:
    view = memoryview(array).cast("B")
    while view:
        count = handle.readinto(view)
        if not count:
            raise EncoderCacheError(f"{path}: the encoder cache file ends early; delete its folder to rebuild it")
        view = view[count:]
