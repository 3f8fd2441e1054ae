"""AIShell-1 (openslr.org/33): data_aishell.tgz -> train.json (train + dev), test.json (and dev.json).

The archive holds data_aishell/transcript/aishell_transcript_v0.8.txt and one archive per
speaker, data_aishell/wav/[<split>/]<speaker>.tar.gz -> <split>/<speaker>/<utterance>.wav.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from typing import Dict, List, Optional

from tqdm import tqdm

from utils.data.builders.archives import download, extract_stream, mark_done
from utils.data.builders.common import BuildError, usable_duration
from utils.data.builders.manifest_writer import ManifestSet, make_record, manifest_audio_path, snap_time

DATA_URL = "https://openslr.elda.org/resources/33/data_aishell.tgz"
DATA_MD5 = "2f494334227864a8a8fec932999db9d8"
TRANSCRIPT = os.path.join("data_aishell", "transcript", "aishell_transcript_v0.8.txt")
WAV_DIR = os.path.join("data_aishell", "wav")
SPLITS = ("train", "dev", "test")
# Punctuation restoration model (ModelScope), the one the original project used.
PUNC_MODEL = "iic/punc_ct-transformer_cn-en-common-vocab471067-large"


def prepare(target_dir: str, annotation_text: str, filepath: Optional[str] = None, url: str = DATA_URL,
            md5: str = DATA_MD5, dev_separately: bool = False, add_pun: bool = False) -> str:
    """Download (or take `filepath`), unpack into `target_dir` and write the manifests into
    `annotation_text`; returns the summary line."""
    punctuate = load_punctuator() if add_pun else None
    os.makedirs(target_dir, exist_ok=True)
    if filepath:
        if not os.path.isfile(filepath):
            raise BuildError(f"--filepath={filepath}: file not found")
        archive = filepath
    else:
        archive = download(url, target_dir, md5, "download it yourself and pass "
                                                 "--filepath=<path to data_aishell.tgz>")
    root = unpack(archive, target_dir)
    texts = read_transcript(os.path.join(target_dir, TRANSCRIPT))
    wavs = find_wavs(os.path.join(target_dir, WAV_DIR))
    if not any(wavs.values()):
        raise BuildError(f"{root}: no wav files under wav/<train|dev|test>/")

    ids = {utterance_id(w) for paths in wavs.values() for w in paths}
    skipped: Counter = Counter()
    skipped["transcript lines without audio"] = len(set(texts) - ids)
    outputs = {"train": wavs["train"] + ([] if dev_separately else wavs["dev"]), "test": wavs["test"]}
    if dev_separately:
        outputs["dev"] = wavs["dev"]
    with ManifestSet(annotation_text, outputs, suffix=".json") as manifests:
        for split, paths in outputs.items():
            for wav in tqdm(paths, desc=f"{split}.json", unit="file"):
                record = clip_record(wav, texts, skipped, punctuate)
                if record is not None:
                    manifests.write(split, record)
    return manifests.summary(skipped)


def utterance_id(wav: str) -> str:
    return os.path.splitext(os.path.basename(wav))[0]


def clip_record(wav: str, texts: Dict[str, str], skipped: Counter, punctuate=None) -> Optional[dict]:
    text = texts.get(utterance_id(wav))
    if text is None:
        skipped["no transcript"] += 1
        return None
    duration = usable_duration(wav, skipped)
    if duration is None:
        return None
    if punctuate is not None:
        text = punctuate(text)
    # One clause covering the clip: AIShell has no finer timing.
    return make_record(manifest_audio_path(wav), text, duration,
                       [{"start": 0.0, "end": snap_time(duration, down=True), "text": text}])


def unpack(archive: str, target_dir: str) -> str:
    """Unpack data_aishell.tgz and every per-speaker archive inside it; returns the root.
    A rerun skips archives marked done and files already present at full size."""
    root = os.path.join(target_dir, "data_aishell")
    marker = os.path.join(root, ".unpacked")
    if not os.path.exists(marker):
        extract_stream(archive, target_dir, f"unpack {os.path.basename(archive)}")
        if not os.path.isfile(os.path.join(target_dir, TRANSCRIPT)):
            raise BuildError(f"{archive}: no {TRANSCRIPT.replace(os.sep, '/')} inside; is this "
                             "AIShell-1's data_aishell.tgz?")
        mark_done(marker)
    wav_dir = os.path.join(target_dir, WAV_DIR)
    inner = sorted(os.path.join(d, f) for d, _, files in os.walk(wav_dir) for f in files
                   if f.endswith((".tar.gz", ".tgz", ".tar")))
    if not inner and not any(f.endswith(".wav") for _, _, fs in os.walk(wav_dir) for f in fs):
        raise BuildError(f"{wav_dir}: no per-speaker archives or wav files found")
    for path in tqdm(inner, desc="unpack speakers", unit="archive"):
        done = path + ".unpacked"
        if os.path.exists(done):
            continue
        # Members are <split>/<speaker>/<utt>.wav; unpacking beside the archive keeps them
        # under wav/, whether the archive sits in wav/ (AIShell-1) or in wav/<split>/.
        extract_stream(path, os.path.dirname(path), os.path.basename(path))
        mark_done(done)
    return root


def read_transcript(path: str) -> Dict[str, str]:
    """utterance id -> text with the word-segmentation spaces removed."""
    texts = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            if len(parts) != 2 or not re.fullmatch(r"[A-Za-z0-9_]+", parts[0]):
                raise BuildError(f"{path}, line {number}: expected '<utterance id> <text>', "
                                 f"got {line.strip()[:60]!r}")
            texts[parts[0]] = "".join(parts[1].split())
    return texts


def find_wavs(wav_dir: str) -> Dict[str, List[str]]:
    """split -> wav paths, split read from the path (…/train/S0002/BAC009S0002W0122.wav)."""
    found: Dict[str, List[str]] = {split: [] for split in SPLITS}
    for directory, _, files in os.walk(wav_dir):
        parts = os.path.relpath(directory, wav_dir).split(os.sep)
        split = next((p for p in reversed(parts) if p in SPLITS), None)
        if split is None:
            continue
        found[split].extend(os.path.join(directory, f) for f in files if f.endswith(".wav"))
    return {split: sorted(paths) for split, paths in found.items()}


def load_punctuator():
    """ModelScope's punctuation pipeline; loaded before any other work so a missing
    package or model fails in the first second, not after an hour of unpacking."""
    try:
        from modelscope.pipelines import pipeline
        from modelscope.utils.constant import Tasks
    except ImportError:
        raise BuildError("--add_pun needs the ModelScope punctuation model: pip install "
                         f"modelscope funasr (it downloads the model {PUNC_MODEL} on first use), "
                         "or run without --add_pun") from None
    try:
        punctuate = pipeline(task=Tasks.punctuation, model=PUNC_MODEL)
    except Exception as exc:  # hub, network and model-format errors come in many types
        raise BuildError(f"--add_pun: cannot load the punctuation model {PUNC_MODEL} "
                         f"({type(exc).__name__}: {exc})") from None

    def add_punctuation(text: str) -> str:
        result = punctuate(text)
        result = result[0] if isinstance(result, list) else result
        return result["text"].replace(" ", "")

    return add_punctuation

