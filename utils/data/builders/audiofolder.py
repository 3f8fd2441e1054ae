"""An HF audiofolder or an LJSpeech-style folder -> train.jsonl, test.jsonl (one file per further split).

  audiofolder  <data_dir>/metadata.csv (columns file_name,<text column>) or metadata.jsonl,
               optionally one such folder per split (<data_dir>/train, <data_dir>/test ...)
  ljspeech     <data_dir>/metadata.csv with lines `id|text|normalized text`, audio in
               <data_dir>/wavs/<id>.wav
"""
from __future__ import annotations

import csv
import json
import os
import random
from collections import Counter
from typing import Callable, Dict, List, Optional, Tuple

from tqdm import tqdm

from utils import REPO_ROOT
from utils.core.languages import to_language_code
from utils.core.models import DEFAULT_LOCAL_MODEL, load_processor
from utils.data.builders.common import BuildError, usable_duration
from utils.data.builders.manifest_writer import ManifestSet, make_record, manifest_audio_path

FORMATS = ("audiofolder", "ljspeech")
SPLIT_NAMES = ("train", "validation", "dev", "test")
METADATA = ("metadata.csv", "metadata.jsonl")
DEFAULT_TEST_SIZE = 0.1
DEFAULT_TOKENIZER = os.path.join(REPO_ROOT, DEFAULT_LOCAL_MODEL)
MAX_LABEL_TOKENS = 448    # Whisper's decoder window
# <|startoftranscript|><|lang|><|transcribe|><|notimestamps|> ... <|endoftext|>
SPECIAL_TOKENS_PER_LABEL = 5

Item = Tuple[str, str]  # (audio path, text)


def build(data_dir: str, output_dir: str, format: str = "audiofolder", text_column: str = "text",
          ljspeech_text: str = "normalized", test_size: Optional[float] = None, seed: int = 0,
          language: Optional[str] = None, tokenizer: str = DEFAULT_TOKENIZER,
          max_tokens: int = MAX_LABEL_TOKENS) -> str:
    """Write <output_dir>/<split>.jsonl, leaving out (and counting) texts over `max_tokens` label
    tokens, clips over 30 s and missing or unreadable audio; returns the summary line."""
    if not os.path.isdir(data_dir):
        raise BuildError(f"--data_dir={data_dir}: not a directory")
    to_language_code(language)    # a misspelt language fails now, not when training reads the lines
    count_tokens = load_token_counter(tokenizer) if max_tokens else None
    if format == "ljspeech":
        splits = {"all": read_ljspeech_metadata(data_dir, ljspeech_text)}
    else:
        splits = read_audiofolder_splits(data_dir, text_column)
    if "all" in splits:
        splits = split_items(splits["all"], DEFAULT_TEST_SIZE if test_size is None else test_size, seed)
    elif test_size is not None:
        raise BuildError(f"{data_dir} is already split into {', '.join(splits)}: "
                         "--test_size applies only to an unsplit folder")
    skipped: Counter = Counter()
    with ManifestSet(output_dir, splits) as manifests:
        for name, items in splits.items():
            for audio, text in tqdm(items, desc=f"{name}.jsonl", unit="file"):
                if count_tokens is not None and count_tokens(text) > max_tokens:
                    skipped[f"texts over {max_tokens} tokens"] += 1
                    continue
                duration = usable_duration(audio, skipped)
                if duration is not None:
                    manifests.write(name, make_record(manifest_audio_path(audio), text, duration,
                                                      language=language))
    return manifests.summary(skipped)


def read_audiofolder_splits(data_dir: str, text_column: str) -> Dict[str, List[Item]]:
    """split name -> items; a single unsplit folder comes back as {"all": items}."""
    subdirs = [s for s in SPLIT_NAMES if any(os.path.isfile(os.path.join(data_dir, s, m)) for m in METADATA)]
    if subdirs and not any(os.path.isfile(os.path.join(data_dir, m)) for m in METADATA):
        return {s: read_audiofolder_metadata(os.path.join(data_dir, s), text_column) for s in subdirs}
    return {"all": read_audiofolder_metadata(data_dir, text_column)}


def read_audiofolder_metadata(folder: str, text_column: str) -> List[Item]:
    csv_path, jsonl_path = (os.path.join(folder, m) for m in METADATA)
    if os.path.isfile(csv_path):
        return read_metadata_csv(csv_path, folder, text_column)
    if os.path.isfile(jsonl_path):
        return read_metadata_jsonl(jsonl_path, folder, text_column)
    raise BuildError(f"{folder}: no metadata.csv or metadata.jsonl")


def read_metadata_csv(path: str, folder: str, text_column: str) -> List[Item]:
    items = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"file_name", text_column} - set(reader.fieldnames or [])
        if missing:
            raise BuildError(f"{path}, line 1: header lacks column(s) {', '.join(sorted(missing))} "
                             f"(has: {', '.join(reader.fieldnames or [])}); use --text_column")
        for row in reader:
            if None in row or row.get("file_name") is None or row.get(text_column) is None:
                raise BuildError(f"{path}, line {reader.line_num}: expected {len(reader.fieldnames)} columns")
            items.append((os.path.join(folder, row["file_name"]), row[text_column].strip()))
    return items


def read_metadata_jsonl(path: str, folder: str, text_column: str) -> List[Item]:
    items = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BuildError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("file_name"), str) \
                    or not isinstance(row.get(text_column), str):
                raise BuildError(f"{path}, line {number}: needs string fields 'file_name' and '{text_column}'")
            items.append((os.path.join(folder, row["file_name"]), row[text_column].strip()))
    return items


def read_ljspeech_metadata(data_dir: str, column: str) -> List[Item]:
    path = os.path.join(data_dir, "metadata.csv")
    if not os.path.isfile(path):
        raise BuildError(f"{path}: not found (LJSpeech keeps id|text|normalized there)")
    items = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            fields = line.split("|")
            if len(fields) != 3 or not fields[0]:
                raise BuildError(f"{path}, line {number}: expected 3 fields 'id|text|normalized text', "
                                 f"found {len(fields)}")
            text = fields[2] if column == "normalized" else fields[1]
            items.append((os.path.join(data_dir, "wavs", fields[0] + ".wav"), text.strip()))
    return items


def held_out_count(test_size: float, total: int) -> int:
    """A fraction (< 1) of `total`, or a whole number of items."""
    return int(test_size) if test_size >= 1 else int(round(total * test_size))


def split_items(items: List[Item], test_size: float, seed: int) -> Dict[str, List[Item]]:
    """train and test in the metadata's order, test drawn at random (same seed, same split)."""
    count = held_out_count(test_size, len(items))
    if count >= len(items):
        raise BuildError(f"--test_size={test_size} leaves no training data ({len(items)} items)")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    test = set(order[:count])
    return {"train": [it for i, it in enumerate(items) if i not in test],
            "test": [it for i, it in enumerate(items) if i in test]}


def load_token_counter(tokenizer_path: str) -> Callable[[str], int]:
    """text -> tokens in its training label (text + special tokens)."""
    if not os.path.isdir(tokenizer_path):
        raise BuildError(f"--tokenizer={tokenizer_path}: no such model directory (run `make models`, "
                         "or pass --max_tokens=0 to skip the length check)")
    tokenizer = load_processor(tokenizer_path, local_files_only=True).tokenizer
    return lambda text: len(tokenizer.encode(" " + text, add_special_tokens=False)) + SPECIAL_TOKENS_PER_LABEL
