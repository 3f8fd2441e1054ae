"""Training data manifests: the jsonlines format, its validation, and the Arrow table it becomes.

A manifest line (format in docs/data-format.md):

    {"audio": {"path": "dataset/0.wav", "start_time": 0.0, "end_time": 7.4},
     "sentence": "...", "language": "Chinese",
     "sentences": [{"start": 0, "end": 1.4, "text": "..."}], "duration": 7.37}

`load_manifest` validates every line once and stores the result as a memory-mapped
Arrow table (datasets' cache), so millions of lines never become Python objects.
`utils.data.dataset.SpeechDataset` turns its rows into model inputs. This module needs no
torch, so tools that only check or count data stay light.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from utils import REPO_ROOT
from utils.core.audio import CHUNK_LENGTH, AudioError, audio_duration
from utils.core.errors import UserError
from utils.core.files import write_json_atomic
from utils.core.languages import to_language_code
from utils.data.labels import validate_segment

logger = logging.getLogger(__name__)

# Bump when the stored columns or the validation rules change, so old caches are not reused.
FORMAT_VERSION = 1
# Header durations and hand-written slice ends disagree by rounding; allow this much.
_DURATION_SLACK = 0.05
# A decoded clip may differ from its header's length by this much (seconds, or this share of it) before
# the file counts as damaged: decoders disagree by a frame or two, a corrupt body loses whole seconds.
DECODED_SLACK_SECONDS = 0.5
DECODED_SLACK_SHARE = 0.1
_REASONS_KEPT = 10
_BLOCK = 256            # lines whose audio headers are read together
_HEADER_THREADS = 8
STATS_FILE = "manifest_stats.json"


class DataError(UserError):
    """A problem with the user's data or data settings; a line's problem starts '<file>:<line>: '."""

    def __init__(self, message: Any = "", *args):
        # torch's DataLoader re-raises a worker's exception as type("Caught ... Original
        # Traceback ...") – keep only the one sentence the user needs, from its last line.
        if isinstance(message, str) and message.startswith("Caught ") and "\nOriginal Traceback" in message:
            last = message.rstrip().splitlines()[-1]
            message = last.split(": ", 1)[1] if ": " in last else last
        super().__init__(message, *args)


def _features():
    import datasets

    segment = {"start": datasets.Value("float64"), "end": datasets.Value("float64"),
               "text": datasets.Value("string")}
    return datasets.Features({
        "path": datasets.Value("string"),
        "start_time": datasets.Value("float64"),
        "end_time": datasets.Value("float64"),
        "sentence": datasets.Value("string"),
        "sentences": datasets.List(segment),
        "language": datasets.Value("string"),
        "duration": datasets.Value("float64"),
        "line": datasets.Value("int64"),
    })


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@functools.lru_cache(maxsize=4096)
def _cached_header_duration(path: str, size: int, mtime_ns: int) -> float:
    # Manifests often cut many slices from one long recording: read its header once.
    return audio_duration(path)


def _file_duration(path: str) -> float:
    stat = os.stat(path)
    return _cached_header_duration(path, stat.st_size, stat.st_mtime_ns)


def _resolve_audio(path: str, manifest_dir: str) -> str:
    # The original project writes paths relative to the working directory; a manifest
    # moved together with its audio has them relative to itself; the shipped manifests
    # (dataset/*.jsonl) are relative to the repository. Accept all three, in that order.
    if os.path.isabs(path):
        return path
    if os.path.exists(path):
        return os.path.abspath(path)
    for base in (manifest_dir, REPO_ROOT):
        candidate = os.path.join(base, path)
        if os.path.exists(candidate):
            return os.path.abspath(candidate)
    return path


def _audio_file_duration(path: str, raw_path: str) -> float:
    if not os.path.exists(path):
        raise DataError(f"audio file not found: {raw_path}")
    try:
        return _file_duration(path)
    except AudioError as exc:
        raise DataError(str(exc)) from None


def decoded_length_problem(path: str, decoded: float, expected: float) -> Optional[str]:
    """Why a clip that decoded to `decoded` seconds cannot be the `expected` seconds its header (or the
    manifest) gives, or None when they agree within DECODED_SLACK_SECONDS / DECODED_SLACK_SHARE."""
    if abs(decoded - expected) <= max(DECODED_SLACK_SECONDS, DECODED_SLACK_SHARE * expected):
        return None
    return (f"{path} decodes to {decoded:.2f} s of audio but its header says {expected:.2f} s: the file is "
            f"damaged or truncated (replace it or leave it out)")


def _parse_audio(audio: Any) -> tuple[str, Optional[float], Optional[float]]:
    """(path as written, start_time, end_time) of the line's 'audio' object."""
    if not isinstance(audio, dict):
        raise DataError("missing field 'audio' (an object with 'path')")
    raw_path = audio.get("path")
    if not isinstance(raw_path, str) or not raw_path.strip():
        raise DataError("missing field 'audio.path'")
    start_time, end_time = audio.get("start_time"), audio.get("end_time")
    for name, value in (("audio.start_time", start_time), ("audio.end_time", end_time)):
        if value is not None and not _is_number(value):
            raise DataError(f"field '{name}' must be a number of seconds, got {value!r}")
    if start_time is not None and start_time < 0:
        raise DataError(f"audio.start_time {start_time} is negative")
    if end_time is not None and end_time <= (start_time or 0):
        raise DataError(f"audio.end_time {end_time} is not after audio.start_time {start_time or 0}")
    return raw_path, start_time, end_time


def _parse_text(obj: dict) -> tuple[str, Optional[str], Optional[float]]:
    """(sentence, language code or None, declared duration or None) of a line."""
    if "sentence" not in obj:
        raise DataError("missing field 'sentence' (use \"\" for a clip without speech)")
    sentence = obj["sentence"]
    if not isinstance(sentence, str):
        raise DataError(f"field 'sentence' must be a string, got {type(sentence).__name__}")
    language = obj.get("language")
    if language is not None:
        if not isinstance(language, str):
            raise DataError(f"field 'language' must be a string, got {language!r}")
        try:
            language = to_language_code(language)
        except ValueError as exc:
            raise DataError(f"field 'language': {exc}") from None
    declared = obj.get("duration")
    if declared is not None and (not _is_number(declared) or declared <= 0):
        raise DataError(f"field 'duration' must be a positive number of seconds, got {declared!r}")
    return sentence, language, declared


def _checked_file_duration(path: str, raw_path: str, start_time: Optional[float],
                           end_time: Optional[float]) -> float:
    """The audio file's length, after checking that the slice lies inside it."""
    file_duration = _audio_file_duration(path, raw_path)
    if file_duration <= 0:
        raise DataError(f"audio file has no samples: {raw_path}")
    if start_time is not None and start_time >= file_duration:
        raise DataError(f"audio.start_time {start_time} is past the end of {raw_path} ({file_duration:.2f} s)")
    if end_time is not None and end_time > file_duration + _DURATION_SLACK:
        raise DataError(f"audio.end_time {end_time} is past the end of {raw_path} ({file_duration:.2f} s)")
    return file_duration


def _clip_duration(path: str, raw_path: str, start_time: Optional[float], end_time: Optional[float],
                   file_duration: Optional[float], declared: Optional[float]) -> float:
    # A slice says its length exactly; otherwise the header (when read) beats the line's
    # "duration", which is only trusted when the audio is not checked.
    start = start_time or 0.0
    if end_time is not None:
        return (end_time if file_duration is None else min(file_duration, end_time)) - start
    if file_duration is not None:
        return file_duration - start
    if declared is not None and start_time is None:
        return float(declared)
    return _audio_file_duration(path, raw_path) - start


def _parse_sentences(sentences: Any, sentence: str, duration: float) -> Optional[list]:
    """The line's timestamped 'sentences', checked against each other and the clip's length."""
    if sentences is None:
        return None
    if not isinstance(sentences, list):
        raise DataError("field 'sentences' must be a list of {start, end, text}")
    checked = []
    previous_start = -1.0
    for number, seg in enumerate(sentences, start=1):
        if not isinstance(seg, dict) or not {"start", "end", "text"} <= set(seg):
            raise DataError(f"sentences[{number}] must be an object with 'start', 'end', 'text'")
        if not isinstance(seg["text"], str):
            raise DataError(f"sentences[{number}].text must be a string")
        problem = validate_segment(seg["start"], seg["end"], clip_duration=duration)
        if problem:
            raise DataError(f"sentences[{number}]: impossible timestamp: {problem}")
        if seg["start"] < previous_start:
            raise DataError(f"sentences[{number}] starts at {seg['start']}, before the "
                            f"previous one ({previous_start}): sentences must be in time order")
        previous_start = seg["start"]
        checked.append({"start": float(seg["start"]), "end": float(seg["end"]), "text": seg["text"]})
    if not sentence.strip() and any(seg["text"].strip() for seg in checked):
        raise DataError("'sentence' is empty (no speech) but 'sentences' has text")
    return checked


def _parse_line(obj: Any, manifest_dir: str, check_audio: bool) -> dict:
    """One validated row; raises DataError with the problem (without the file:line prefix)."""
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}")
    raw_path, start_time, end_time = _parse_audio(obj.get("audio"))
    sentence, language, declared = _parse_text(obj)
    path = _resolve_audio(raw_path, manifest_dir)
    file_duration = _checked_file_duration(path, raw_path, start_time, end_time) if check_audio else None
    duration = _clip_duration(path, raw_path, start_time, end_time, file_duration, declared)
    sentences = _parse_sentences(obj.get("sentences"), sentence, duration)
    return {"path": path, "start_time": None if start_time is None else float(start_time),
            "end_time": None if end_time is None else float(end_time), "sentence": sentence,
            "sentences": sentences, "language": language, "duration": float(duration)}


# Counts of the generation that just ran in this process, by fingerprint (see _load).
_RUN_STATS: dict[str, dict] = {}


def _decode_line(raw: bytes, number: int) -> Any:
    """The line's JSON value, None for a blank line, or the DataError describing it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return DataError("not UTF-8 text")
    if number == 1:
        text = text.lstrip("\ufeff")
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        return DataError(f"not valid JSON ({exc.msg} at column {exc.colno})")


def _prefetch_duration(path: str) -> None:
    # Only warms the header cache; the sequential pass reports any problem in line order.
    try:
        if os.path.isfile(path):
            _file_duration(path)
    except Exception:
        pass


def _generate_rows(manifest, fingerprint, min_audio_len, max_audio_len, skip_bad, check_audio):
    stats = {"lines": 0, "kept": 0, "bad": 0, "too_short": 0, "too_long": 0, "bad_examples": []}
    _RUN_STATS[fingerprint] = stats
    manifest_dir = os.path.dirname(os.path.abspath(manifest))
    # Reading headers is I/O-bound (and slow on network storage): threads read the headers of
    # the next block of lines while validation itself stays sequential and in line order.
    with open(manifest, "rb") as handle, ThreadPoolExecutor(_HEADER_THREADS) as pool:
        lines = enumerate(handle, start=1)
        while True:
            block = [(number, _decode_line(raw, number)) for number, raw in itertools.islice(lines, _BLOCK)]
            if not block:
                break
            if check_audio:
                paths = {_resolve_audio(obj["audio"]["path"], manifest_dir) for _, obj in block
                         if isinstance(obj, dict) and isinstance(obj.get("audio"), dict)
                         and isinstance(obj["audio"].get("path"), str) and obj["audio"]["path"].strip()}
                list(pool.map(_prefetch_duration, sorted(paths)))
            for number, obj in block:
                if obj is None:
                    continue
                stats["lines"] += 1
                try:
                    if isinstance(obj, DataError):
                        raise obj
                    row = _parse_line(obj, manifest_dir, check_audio)
                except DataError as exc:
                    if not skip_bad:
                        raise DataError(f"{manifest}:{number}: {exc}") from None
                    stats["bad"] += 1
                    if len(stats["bad_examples"]) < _REASONS_KEPT:
                        stats["bad_examples"].append(f"{manifest}:{number}: {exc}")
                    continue
                if row["duration"] < min_audio_len:
                    stats["too_short"] += 1
                    continue
                if row["duration"] > max_audio_len:
                    stats["too_long"] += 1
                    continue
                row["line"] = number
                stats["kept"] += 1
                yield row
    stats["complete"] = True


def _fingerprint(manifest: str, **options) -> str:
    stat = os.stat(manifest)
    key = json.dumps({"path": os.path.abspath(manifest), "size": stat.st_size, "mtime": stat.st_mtime_ns,
                      "cwd": os.getcwd(), "version": FORMAT_VERSION, **options}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _find_data_error(exc: BaseException) -> Optional[DataError]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, DataError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def check_lengths(min_audio_len: float, max_audio_len: float) -> None:
    """DataError unless 0 <= min_audio_len < max_audio_len <= 30 s (Whisper's window)."""
    if not 0 <= min_audio_len:
        raise DataError(f"min_audio_len must be >= 0, got {min_audio_len}")
    if max_audio_len > CHUNK_LENGTH:
        raise DataError(f"max_audio_len {max_audio_len} is longer than Whisper's {CHUNK_LENGTH} s "
                        f"window; longer clips would be cut and their labels would lie")
    if max_audio_len <= min_audio_len:
        raise DataError(f"max_audio_len ({max_audio_len}) must be greater than min_audio_len "
                        f"({min_audio_len})")


def _build_table(path: str, fingerprint: str, options: dict, cache_dir: Optional[str]):
    """The validated rows as an Arrow-backed datasets.Dataset (cached by fingerprint); None when the
    manifest was read completely and no row was kept (datasets refuses to store zero rows)."""
    import datasets

    _RUN_STATS.pop(fingerprint, None)
    try:
        return datasets.Dataset.from_generator(
            _generate_rows, features=_features(), cache_dir=cache_dir, fingerprint=fingerprint,
            gen_kwargs=dict(manifest=path, fingerprint=fingerprint, **options))
    except Exception as exc:
        data_error = _find_data_error(exc)
        if data_error is not None:
            raise DataError(str(data_error)) from None
        finished = _RUN_STATS.get(fingerprint, {})
        if finished.get("complete") and finished.get("kept") == 0:
            return None
        raise


def _table_stats(data, fingerprint: str) -> dict:
    # A cache hit runs no generator; the counts of the run that built the cache lie beside it.
    stats = _RUN_STATS.pop(fingerprint, None)
    if stats is not None:
        stats.pop("complete", None)
    if data is not None and data.cache_files:
        stats_file = os.path.join(os.path.dirname(data.cache_files[0]["filename"]), STATS_FILE)
        if stats is not None:
            write_json_atomic(stats_file, stats, indent=None)
        elif os.path.exists(stats_file):
            with open(stats_file, encoding="utf-8") as handle:
                stats = json.load(handle)
    rows = len(data) if data is not None else 0
    return stats or {"lines": rows, "kept": rows, "bad": 0, "too_short": 0, "too_long": 0, "bad_examples": []}


def read_manifest(path, *, min_audio_len: float = 0.5, max_audio_len: float = 30.0, skip_bad: bool = False,
                  check_audio: bool = True, cache_dir: Optional[str] = None) -> tuple[Any, dict]:
    """load_manifest's table and its counts: {"lines", "kept", "bad", "too_short", "too_long",
    "bad_examples"}."""
    check_lengths(min_audio_len, max_audio_len)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: manifest file not found")
    options = dict(min_audio_len=min_audio_len, max_audio_len=max_audio_len, skip_bad=skip_bad,
                   check_audio=check_audio)
    fingerprint = _fingerprint(path, **options)
    data = _build_table(path, fingerprint, options, cache_dir)
    stats = _table_stats(data, fingerprint)
    if stats["bad"]:
        logger.warning("%s: skipped %d bad line(s) of %d, e.g. %s", path, stats["bad"], stats["lines"],
                       "; ".join(stats["bad_examples"][:3]))
    logger.info("%s: %d of %d lines kept (%d bad, %d shorter than %.2f s, %d longer than %.2f s)",
                path, stats["kept"], stats["lines"], stats["bad"], stats["too_short"], min_audio_len,
                stats["too_long"], max_audio_len)
    if data is None or len(data) == 0:
        raise DataError(f"{path}: no usable samples ({stats['lines']} lines, {stats['bad']} bad, "
                        f"{stats['too_short']} shorter than {min_audio_len} s, {stats['too_long']} "
                        f"longer than {max_audio_len} s)")
    return data, stats


def load_manifest(path, *, min_audio_len: float = 0.5, max_audio_len: float = 30.0,
                  skip_bad: bool = False, check_audio: bool = True, cache_dir: Optional[str] = None):
    """Read and validate a jsonlines manifest into a memory-mapped `datasets.Dataset`.

    Columns: path (resolved), start_time, end_time, sentence, sentences, language (code),
    duration, line (1-based line number in the manifest, for error messages).
    A bad line raises DataError('<file>:<line>: ...'), or with skip_bad=True is skipped and
    counted. Clips outside [min_audio_len, max_audio_len] seconds are left out and counted.
    `check_audio` opens every audio file's header (missing/unreadable files are found before
    training); without it only lines lacking a duration touch their audio.
    `cache_dir`: where datasets keeps the Arrow file (default: HF_DATASETS_CACHE).
    """
    data, _ = read_manifest(path, min_audio_len=min_audio_len, max_audio_len=max_audio_len,
                            skip_bad=skip_bad, check_audio=check_audio, cache_dir=cache_dir)
    return data
