"""Encoder outputs computed once and reused every epoch when the encoder is frozen.

With `--freeze_encoder` the encoder's weights never change, so for un-augmented audio its output
for a clip is the same in every epoch. Running it once per clip and storing the hidden states in a
memory-mapped .npy file (one row per clip, keyed by data + model + feature settings) lets training
run only the decoder: WhisperForConditionalGeneration accepts `encoder_outputs` instead of
`input_features`. The file lives on disk so that a corpus larger than RAM still works (the OS pages
in the rows a batch needs).
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

DTYPES = ("float32", "float16")
HIDDEN_FILE = "hidden_states.npy"
META_FILE = "meta.json"
# Bump when the stored layout changes, so that old caches are not read with new code.
_CACHE_VERSION = 1


class EncoderCacheError(ValueError):
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

    The folder is written under a temporary name and renamed when complete, so an interrupted
    run leaves nothing that a later run would mistake for a finished cache.
    """
    from tqdm import tqdm

    if dtype not in DTYPES:
        raise EncoderCacheError(f"--encoder_cache_dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    folder = os.path.join(cache_root, key)
    if os.path.isfile(os.path.join(folder, META_FILE)):
        return folder, 0.0
    os.makedirs(cache_root, exist_ok=True)
    config = encoder.config
    frames, width = config.max_source_positions, config.d_model
    size = len(dataset) * frames * width * np.dtype(dtype).itemsize
    free = shutil.disk_usage(cache_root).free
    if size > free:
        raise EncoderCacheError(f"the encoder cache needs {size / 2**30:.1f} GiB in {cache_root} and only "
                                f"{free / 2**30:.1f} GiB are free; use --encoder_cache_dtype=float16, "
                                f"another --output_dir, or --cache_encoder_outputs=False")
    device = device or next(encoder.parameters()).device
    tmp = tempfile.mkdtemp(prefix=f".{key}.", dir=cache_root)
    start = time.perf_counter()
    try:
        hidden = np.lib.format.open_memmap(os.path.join(tmp, HIDDEN_FILE), mode="w+", dtype=dtype,
                                           shape=(len(dataset), frames, width))
        loader = torch.utils.data.DataLoader(_Features(dataset), batch_size=batch_size, shuffle=False,
                                             num_workers=num_workers, collate_fn=_collate_features)
        was_training = encoder.training
        encoder.eval()
        row = 0
        weight_dtype = next(encoder.parameters()).dtype
        mixed = dict(device_type=device.type, dtype=getattr(torch, autocast or "bfloat16"), enabled=bool(autocast))
        with torch.inference_mode():
            for features in tqdm(loader, desc="Encoder outputs (once)", unit="batch", disable=not show_progress):
                # Only the encoder in autocast: with num_workers=0 the loader's feature extraction runs here too.
                with torch.autocast(**mixed):
                    out = encoder(features.to(device, weight_dtype)).last_hidden_state
                hidden[row:row + len(out)] = out.float().cpu().numpy().astype(dtype, copy=False)
                row += len(out)
        encoder.train(was_training)
        hidden.flush()
        del hidden
        with open(os.path.join(tmp, META_FILE), "w", encoding="utf-8") as handle:
            json.dump({"rows": len(dataset), "frames": frames, "width": width, "dtype": dtype,
                       "manifest": dataset.manifest_path}, handle)
        if os.path.isdir(folder):  # a concurrent run finished first; its cache is equally valid
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder, time.perf_counter() - start


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
        self._hidden = None

    def __len__(self):
        return len(self.dataset)

    def __getstate__(self):
        # DataLoader workers open their own memory map rather than receiving a pickled copy.
        state = self.__dict__.copy()
        state["_hidden"] = None
        return state

    def __getitem__(self, index):
        if self._hidden is None:
            self._hidden = np.load(self.path, mmap_mode="r")
        return {"encoder_hidden_states": np.array(self._hidden[int(index)], dtype=np.float32),
                "labels": self.dataset.labels(index)}
