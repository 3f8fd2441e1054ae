"""Prepare AIShell-1 (openslr.org/33) as jsonlines manifests for fine-tuning.

Downloads data_aishell.tgz (resumable, MD5-checked) or takes a local copy, unpacks it and
its per-speaker archives, and writes <annotation_text>/train.json (train + dev) and
test.json, one JSON object per line. Re-running after an interruption skips what is
already unpacked; manifests are written beside and renamed, never left half-written.

  python aishell.py --filepath=/data/data_aishell.tgz
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tarfile
import urllib.error
import urllib.request
from collections import Counter
from typing import Dict, List, Optional, Sequence

from tqdm import tqdm

from utils.core.audio import CHUNK_LENGTH, AudioError, audio_duration
from utils.data.manifest_writer import ManifestWriter, make_record, manifest_audio_path, snap_time
from utils.inference.transcriber import report_errors

DATA_URL = "https://openslr.elda.org/resources/33/data_aishell.tgz"
DATA_MD5 = "2f494334227864a8a8fec932999db9d8"
TRANSCRIPT = os.path.join("data_aishell", "transcript", "aishell_transcript_v0.8.txt")
WAV_DIR = os.path.join("data_aishell", "wav")
SPLITS = ("train", "dev", "test")
# Punctuation restoration model (ModelScope), the one the original project used.
PUNC_MODEL = "iic/punc_ct-transformer_cn-en-common-vocab471067-large"


class PrepareError(RuntimeError):
    """A problem with the user's input or download; the message says what to do."""


# --------------------------------------------------------------------------- download

def md5sum(path: str, desc: Optional[str] = None) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f, tqdm(total=os.path.getsize(path), unit="B", unit_scale=True,
                                     desc=desc or f"MD5 {os.path.basename(path)}") as bar:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def download(url: str, target_dir: str, md5: str) -> str:
    """Fetch `url` into target_dir, resuming a previous partial download (`.part`)."""
    filepath = os.path.join(target_dir, os.path.basename(url))
    verified = filepath + ".md5"
    if os.path.exists(filepath):
        # Hashing 15 GB takes a while: remember a successful check next to the file.
        if os.path.exists(verified) and open(verified).read().split() == \
                [md5, str(os.path.getsize(filepath))]:
            return filepath
        if md5sum(filepath) == md5:
            with open(verified, "w") as f:
                f.write(f"{md5} {os.path.getsize(filepath)}\n")
            return filepath
        raise PrepareError(f"{filepath}: MD5 differs from {md5}; delete it and run again to "
                           "download a fresh copy")
    partial = filepath + ".part"
    done = os.path.getsize(partial) if os.path.exists(partial) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and done:    # the partial file already holds every byte
            response = None
        else:
            raise PrepareError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise PrepareError(f"cannot reach {url} ({exc}); download it yourself and pass "
                           "--filepath=<path to data_aishell.tgz>") from None
    if response is not None:
        with response:
            if done and response.status != 206:   # server ignored the range: start over
                done = 0
            total = response.length + done if response.length is not None else None
            with open(partial, "ab" if done else "wb") as f, \
                    tqdm(total=total, initial=done, unit="B", unit_scale=True,
                         desc=f"download {os.path.basename(url)}") as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    f.write(block)
                    bar.update(len(block))
    actual = md5sum(partial)
    if actual != md5:
        os.remove(partial)
        raise PrepareError(f"{url}: downloaded file has MD5 {actual}, expected {md5}; the "
                           "partial file was removed, run again to download it anew")
    os.replace(partial, filepath)
    with open(verified, "w") as f:
        f.write(f"{md5} {os.path.getsize(filepath)}\n")
    return filepath


# --------------------------------------------------------------------------- unpack

def _extract_stream(archive: str, dest: str, desc: str) -> None:
    """Extract member by member, skipping files already present at full size, so a rerun
    after an interruption does not rewrite 15 GB; `filter="data"` refuses unsafe paths."""
    try:
        with tarfile.open(archive, "r|*") as tar, tqdm(desc=desc, unit="file") as bar:
            for member in tar:
                target = os.path.join(dest, member.name)
                if member.isfile() and os.path.isfile(target) and \
                        os.path.getsize(target) == member.size:
                    bar.update(1)
                    continue
                tar.extract(member, dest, filter="data")
                bar.update(1)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise PrepareError(f"{archive}: cannot unpack ({exc}); the archive is damaged or "
                           "incomplete, fetch it again") from None


def unpack(archive: str, target_dir: str) -> str:
    """Unpack data_aishell.tgz and every per-speaker archive inside it; returns the root."""
    root = os.path.join(target_dir, "data_aishell")
    marker = os.path.join(root, ".unpacked")
    if not os.path.exists(marker):
        _extract_stream(archive, target_dir, f"unpack {os.path.basename(archive)}")
        if not os.path.isfile(os.path.join(target_dir, TRANSCRIPT)):
            raise PrepareError(f"{archive}: no {TRANSCRIPT.replace(os.sep, '/')} inside; is this "
                               "AIShell-1's data_aishell.tgz?")
        open(marker, "w").close()
    wav_dir = os.path.join(target_dir, WAV_DIR)
    inner = sorted(os.path.join(d, f) for d, _, files in os.walk(wav_dir) for f in files
                   if f.endswith((".tar.gz", ".tgz", ".tar")))
    if not inner and not any(f.endswith(".wav") for _, _, fs in os.walk(wav_dir) for f in fs):
        raise PrepareError(f"{wav_dir}: no per-speaker archives or wav files found")
    for path in tqdm(inner, desc="unpack speakers", unit="archive"):
        done = path + ".unpacked"
        if os.path.exists(done):
            continue
        # Members are <split>/<speaker>/<utt>.wav; unpacking beside the archive keeps them
        # under wav/, whether the archive sits in wav/ (AIShell-1) or in wav/<split>/.
        _extract_stream(path, os.path.dirname(path), os.path.basename(path))
        open(done, "w").close()
    return root


# --------------------------------------------------------------------------- manifests

def read_transcript(path: str) -> Dict[str, str]:
    """utterance id -> text with the word-segmentation spaces removed."""
    texts = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            if len(parts) != 2 or not re.fullmatch(r"[A-Za-z0-9_]+", parts[0]):
                raise PrepareError(f"{path}, line {number}: expected '<utterance id> <text>', "
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
        raise PrepareError("--add_pun needs the ModelScope punctuation model: pip install "
                           "modelscope funasr (it downloads the model "
                           f"{PUNC_MODEL} on first use), or run without --add_pun") from None
    try:
        punctuate = pipeline(task=Tasks.punctuation, model=PUNC_MODEL)
    except Exception as exc:  # hub, network and model-format errors come in many types
        raise PrepareError(f"--add_pun: cannot load the punctuation model {PUNC_MODEL} "
                           f"({type(exc).__name__}: {exc})") from None

    def add_punctuation(text: str) -> str:
        result = punctuate(text)
        result = result[0] if isinstance(result, list) else result
        return result["text"].replace(" ", "")

    return add_punctuation


def write_split(path: str, wavs: Sequence[str], texts: Dict[str, str], counts: Counter,
                punctuate=None) -> int:
    with ManifestWriter(path) as writer:
        for wav in tqdm(wavs, desc=os.path.basename(path), unit="file"):
            text = texts.get(os.path.splitext(os.path.basename(wav))[0])
            if text is None:
                counts["no transcript"] += 1
                continue
            try:
                duration = audio_duration(wav)
            except AudioError:
                counts["unreadable audio"] += 1
                continue
            if not 0 < duration <= CHUNK_LENGTH:
                counts[f"not within 0-{CHUNK_LENGTH} s"] += 1
                continue
            if punctuate is not None:
                text = punctuate(text)
            # One clause covering the clip: AIShell has no finer timing.
            writer.write(make_record(manifest_audio_path(wav), text, duration,
                                     [{"start": 0.0, "end": snap_time(duration, down=True),
                                       "text": text}]))
    return writer.count


def prepare(args) -> None:
    punctuate = load_punctuator() if args.add_pun else None
    os.makedirs(args.target_dir, exist_ok=True)
    if args.filepath:
        if not os.path.isfile(args.filepath):
            raise PrepareError(f"--filepath={args.filepath}: file not found")
        archive = args.filepath
    else:
        archive = download(args.url, args.target_dir, args.md5)
    root = unpack(archive, args.target_dir)
    texts = read_transcript(os.path.join(args.target_dir, TRANSCRIPT))
    wavs = find_wavs(os.path.join(args.target_dir, WAV_DIR))
    if not any(wavs.values()):
        raise PrepareError(f"{root}: no wav files under wav/<train|dev|test>/")

    ids = {os.path.splitext(os.path.basename(w))[0] for paths in wavs.values() for w in paths}
    counts: Counter = Counter()
    counts["transcript lines without audio"] = len(set(texts) - ids)
    outputs = {"train": wavs["train"] + ([] if args.dev_separately else wavs["dev"]),
               "test": wavs["test"]}
    if args.dev_separately:
        outputs["dev"] = wavs["dev"]
    os.makedirs(args.annotation_text, exist_ok=True)
    written = {}
    for name, paths in outputs.items():
        written[name] = write_split(os.path.join(args.annotation_text, f"{name}.json"), paths,
                                    texts, counts, punctuate)
    skipped = ", ".join(f"{n} {what}" for what, n in counts.items() if n) or "none"
    print("summary: " + ", ".join(f"{name}.json {n} lines" for name, n in written.items())
          + f" in {args.annotation_text}; skipped: {skipped}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--target_dir", default="dataset/audio/",
                        help="where data_aishell.tgz is downloaded and unpacked (~35 GB free)")
    parser.add_argument("--annotation_text", default="dataset/",
                        help="directory for train.json and test.json (and dev.json)")
    parser.add_argument("--filepath", default=None,
                        help="a local data_aishell.tgz to use instead of downloading")
    parser.add_argument("--url", default=DATA_URL, help="download address of data_aishell.tgz")
    parser.add_argument("--md5", default=DATA_MD5, help="expected MD5 of the download")
    parser.add_argument("--dev_separately", action="store_true",
                        help="write dev.json instead of adding dev to train.json")
    parser.add_argument("--add_pun", action="store_true",
                        help="restore punctuation with ModelScope's model (needs modelscope)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    print("configuration: " + ", ".join(f"{k}={v}" for k, v in vars(args).items()))
    return report_errors(lambda: prepare(args), PrepareError)


if __name__ == "__main__":
    sys.exit(main())
