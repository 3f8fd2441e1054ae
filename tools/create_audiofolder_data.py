"""Turn an HF audiofolder or an LJSpeech-style folder into jsonlines manifests.

  audiofolder  <data_dir>/metadata.csv (columns file_name,<text column>) or metadata.jsonl,
               optionally one such folder per split (<data_dir>/train, <data_dir>/test ...)
  ljspeech     <data_dir>/metadata.csv with lines `id|text|normalized text`, audio in
               <data_dir>/wavs/<id>.wav

Writes <output_dir>/train.jsonl and test.jsonl (and one file per further split). Texts
longer than Whisper's 448-token decoder window, clips over 30 s and missing or unreadable
audio are left out and counted; a malformed metadata line stops with its file and line.

  python tools/create_audiofolder_data.py --data_dir=LJSpeech-1.1 --format=ljspeech \\
      --output_dir=dataset/ljspeech --test_size=0.02 --language=English
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.core.audio import CHUNK_LENGTH, AudioError, audio_duration  # noqa: E402
from utils.data.manifest_writer import ManifestWriter, make_record, manifest_audio_path  # noqa: E402
from utils.inference.transcriber import report_errors  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLIT_NAMES = ("train", "validation", "dev", "test")
# <|startoftranscript|><|lang|><|transcribe|><|notimestamps|> ... <|endoftext|>
SPECIAL_TOKENS_PER_LABEL = 5

Item = Tuple[str, str]  # (audio path, text)


class MetadataError(ValueError):
    """Malformed input; the message names the file and line."""


def read_audiofolder_metadata(folder: str, text_column: str) -> List[Item]:
    csv_path = os.path.join(folder, "metadata.csv")
    jsonl_path = os.path.join(folder, "metadata.jsonl")
    items = []
    if os.path.isfile(csv_path):
        with open(csv_path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            missing = {"file_name", text_column} - set(reader.fieldnames or [])
            if missing:
                raise MetadataError(f"{csv_path}, line 1: header lacks column(s) "
                                    f"{', '.join(sorted(missing))} (has: "
                                    f"{', '.join(reader.fieldnames or [])}); use --text_column")
            for row in reader:
                if None in row or row.get("file_name") is None or row.get(text_column) is None:
                    raise MetadataError(f"{csv_path}, line {reader.line_num}: expected "
                                        f"{len(reader.fieldnames)} columns")
                items.append((os.path.join(folder, row["file_name"]), row[text_column].strip()))
    elif os.path.isfile(jsonl_path):
        with open(jsonl_path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise MetadataError(f"{jsonl_path}, line {number}: not valid JSON "
                                        f"({exc.msg})") from None
                if not isinstance(row, dict) or not isinstance(row.get("file_name"), str) \
                        or not isinstance(row.get(text_column), str):
                    raise MetadataError(f"{jsonl_path}, line {number}: needs string fields "
                                        f"'file_name' and '{text_column}'")
                items.append((os.path.join(folder, row["file_name"]), row[text_column].strip()))
    else:
        raise MetadataError(f"{folder}: no metadata.csv or metadata.jsonl")
    return items


def read_ljspeech_metadata(data_dir: str, column: str) -> List[Item]:
    path = os.path.join(data_dir, "metadata.csv")
    if not os.path.isfile(path):
        raise MetadataError(f"{path}: not found (LJSpeech keeps id|text|normalized there)")
    items = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            fields = line.split("|")
            if len(fields) != 3 or not fields[0]:
                raise MetadataError(f"{path}, line {number}: expected 3 fields "
                                    f"'id|text|normalized text', found {len(fields)}")
            text = fields[2] if column == "normalized" else fields[1]
            items.append((os.path.join(data_dir, "wavs", fields[0] + ".wav"), text.strip()))
    return items


def read_splits(args) -> Dict[str, List[Item]]:
    """split name -> items; a single unsplit folder comes back as {"all": items}."""
    if args.format == "ljspeech":
        return {"all": read_ljspeech_metadata(args.data_dir, args.ljspeech_text)}
    subdirs = [s for s in SPLIT_NAMES if os.path.isdir(os.path.join(args.data_dir, s))
               and any(os.path.isfile(os.path.join(args.data_dir, s, m))
                       for m in ("metadata.csv", "metadata.jsonl"))]
    if subdirs and not any(os.path.isfile(os.path.join(args.data_dir, m))
                           for m in ("metadata.csv", "metadata.jsonl")):
        return {s: read_audiofolder_metadata(os.path.join(args.data_dir, s), args.text_column)
                for s in subdirs}
    return {"all": read_audiofolder_metadata(args.data_dir, args.text_column)}


def split_items(items: List[Item], test_size: float, seed: int) -> Dict[str, List[Item]]:
    if test_size < 0 or (1 < test_size != int(test_size)):
        raise MetadataError(f"--test_size={test_size}: give a fraction in [0, 1) or a whole "
                            "number of items")
    count = int(test_size) if test_size >= 1 else int(round(len(items) * test_size))
    if count >= len(items):
        raise MetadataError(f"--test_size={test_size} leaves no training data "
                            f"({len(items)} items)")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    test = set(order[:count])
    return {"train": [it for i, it in enumerate(items) if i not in test],
            "test": [it for i, it in enumerate(items) if i in test]}


def load_token_counter(tokenizer_path: str):
    if not os.path.isdir(tokenizer_path):
        raise MetadataError(f"--tokenizer={tokenizer_path}: no such model directory (run "
                            "`make models`, or pass --max_tokens=0 to skip the length check)")
    from transformers import WhisperTokenizerFast

    tokenizer = WhisperTokenizerFast.from_pretrained(tokenizer_path)
    return lambda text: len(tokenizer.encode(" " + text, add_special_tokens=False)) \
        + SPECIAL_TOKENS_PER_LABEL


def write_split(path: str, items: Sequence[Item], language: Optional[str], max_tokens: int,
                count_tokens, counts: Counter) -> int:
    with ManifestWriter(path) as writer:
        for audio, text in tqdm(items, desc=os.path.basename(path), unit="file"):
            if not os.path.isfile(audio):
                counts["missing audio"] += 1
                continue
            if max_tokens and count_tokens(text) > max_tokens:
                counts[f"texts over {max_tokens} tokens"] += 1
                continue
            try:
                duration = audio_duration(audio)
            except AudioError:
                counts["unreadable audio"] += 1
                continue
            if not 0 < duration <= CHUNK_LENGTH:
                counts[f"clips not within 0-{CHUNK_LENGTH} s"] += 1
                continue
            writer.write(make_record(manifest_audio_path(audio), text, duration,
                                     language=language))
    return writer.count


def build(args) -> None:
    if not os.path.isdir(args.data_dir):
        raise MetadataError(f"--data_dir={args.data_dir}: not a directory")
    count_tokens = load_token_counter(args.tokenizer) if args.max_tokens else None
    splits = read_splits(args)
    if "all" in splits:
        splits = split_items(splits["all"], 0.1 if args.test_size is None else args.test_size,
                             args.seed)
    elif args.test_size is not None:
        raise MetadataError(f"{args.data_dir} is already split into {', '.join(splits)}: "
                            "--test_size applies only to an unsplit folder")
    counts: Counter = Counter()
    written = {}
    for name, items in splits.items():
        written[name] = write_split(os.path.join(args.output_dir, f"{name}.jsonl"), items,
                                    args.language, args.max_tokens, count_tokens, counts)
    skipped = ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "none"
    print("summary: " + ", ".join(f"{name}.jsonl {n} lines" for name, n in written.items())
          + f" in {args.output_dir}; skipped: {skipped}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="the audiofolder or LJSpeech folder")
    parser.add_argument("--format", choices=["audiofolder", "ljspeech"], default="audiofolder",
                        help="layout of --data_dir (see the description above)")
    parser.add_argument("--output_dir", required=True, help="where the .jsonl files go")
    parser.add_argument("--text_column", default="text",
                        help="audiofolder: metadata column holding the transcript")
    parser.add_argument("--ljspeech_text", choices=["normalized", "raw"], default="normalized",
                        help="ljspeech: use the 3rd (numbers spelled out) or the 2nd column")
    parser.add_argument("--test_size", type=float, default=None,
                        help="unsplit data: fraction (< 1) or number (>= 1) of items held out "
                             "for test.jsonl [default 0.1]; rejected for pre-split folders")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    parser.add_argument("--language", default=None,
                        help="language written on every line (e.g. English); omitted if unset")
    parser.add_argument("--tokenizer", default=os.path.join(REPO_ROOT, "models", "whisper-base"),
                        help="Whisper tokenizer used to count label tokens")
    parser.add_argument("--max_tokens", type=int, default=448,
                        help="leave out texts whose label is longer (0: no check)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    print("configuration: " + ", ".join(f"{k}={v}" for k, v in vars(args).items()))
    return report_errors(lambda: build(args), MetadataError)


if __name__ == "__main__":
    sys.exit(main())
