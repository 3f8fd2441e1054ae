"""Training data: the jsonlines manifest, its validation, and the torch Dataset that feeds Whisper.

A manifest line (format in docs/data-format.md):

    {"audio": {"path": "dataset/0.wav", "start_time": 0.0, "end_time": 7.4},
     "sentence": "...", "language": "Chinese",
     "sentences": [{"start": 0, "end": 1.4, "text": "..."}], "duration": 7.37}

`load_manifest` validates every line once and stores the result as a memory-mapped
Arrow table (datasets' cache), so millions of lines never become Python objects.
`SpeechDataset` decodes, augments and extracts features per item, i.e. inside
DataLoader workers.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import numpy as np
import torch

from utils import REPO_ROOT
from utils.core.audio import CHUNK_LENGTH, SAMPLE_RATE, AudioError, load_audio
from utils.core.languages import to_language_code
from utils.data.labels import build_labels, prefix_ids, validate_segment

logger = logging.getLogger(__name__)

# Bump when the stored columns or the validation rules change, so old caches are not reused.
_FORMAT_VERSION = 1
# Header durations and hand-written slice ends disagree by rounding; allow this much.
_DURATION_SLACK = 0.05
_REASONS_KEPT = 10
_BLOCK = 256            # lines whose audio headers are read together
_HEADER_THREADS = 8


class DataError(ValueError):
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
    return header_duration(path)


def _file_duration(path: str) -> float:
    stat = os.stat(path)
    return _cached_header_duration(path, stat.st_size, stat.st_mtime_ns)


def header_duration(path: str) -> float:
    """Seconds of audio in `path`, from the file header when possible (fast), else by decoding."""
    import soundfile

    try:
        return float(soundfile.info(path).duration)
    except Exception:
        pass
    try:
        # Containers soundfile cannot parse (m4a, webm, ...) usually state their duration.
        import av

        with av.open(path) as container:
            if container.duration is not None and container.streams.audio:
                return float(container.duration / av.time_base)
    except Exception:
        pass
    return len(load_audio(path)) / SAMPLE_RATE




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


def _parse_line(obj: Any, manifest_dir: str, check_audio: bool) -> dict:
    """One validated row; raises DataError with the problem (without the file:line prefix)."""
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}")
    audio = obj.get("audio")
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

    path = _resolve_audio(raw_path, manifest_dir)
    file_duration = None
    if check_audio:
        if not os.path.exists(path):
            raise DataError(f"audio file not found: {raw_path}")
        try:
            file_duration = _file_duration(path)
        except AudioError as exc:
            raise DataError(str(exc)) from None
        if file_duration <= 0:
            raise DataError(f"audio file has no samples: {raw_path}")
        if start_time is not None and start_time >= file_duration:
            raise DataError(f"audio.start_time {start_time} is past the end of {raw_path} "
                            f"({file_duration:.2f} s)")
        if end_time is not None and end_time > file_duration + _DURATION_SLACK:
            raise DataError(f"audio.end_time {end_time} is past the end of {raw_path} "
                            f"({file_duration:.2f} s)")

    # The clip's length: a slice says it exactly; otherwise the header (when read) beats the
    # line's "duration", which is only trusted when the audio is not checked.
    if end_time is not None:
        duration = end_time - (start_time or 0.0)
        if file_duration is not None:
            duration = min(file_duration, end_time) - (start_time or 0.0)
    elif file_duration is not None:
        duration = file_duration - (start_time or 0.0)
    elif declared is not None and start_time is None:
        duration = float(declared)
    else:
        if not os.path.exists(path):
            raise DataError(f"audio file not found: {raw_path}")
        try:
            duration = _file_duration(path) - (start_time or 0.0)
        except AudioError as exc:
            raise DataError(str(exc)) from None

    sentences = obj.get("sentences")
    if sentences is not None:
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
        sentences = checked

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
                      "cwd": os.getcwd(), "version": _FORMAT_VERSION, **options}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _find_data_error(exc: BaseException) -> Optional[DataError]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, DataError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _check_lengths(min_audio_len: float, max_audio_len: float) -> None:
    if not 0 <= min_audio_len:
        raise ValueError(f"min_audio_len must be >= 0, got {min_audio_len}")
    if max_audio_len > CHUNK_LENGTH:
        raise ValueError(f"max_audio_len {max_audio_len} is longer than Whisper's {CHUNK_LENGTH} s "
                         f"window; longer clips would be cut and their labels would lie")
    if max_audio_len <= min_audio_len:
        raise ValueError(f"max_audio_len ({max_audio_len}) must be greater than min_audio_len "
                         f"({min_audio_len})")


def _load(path, *, min_audio_len, max_audio_len, skip_bad, check_audio, cache_dir):
    import datasets

    _check_lengths(min_audio_len, max_audio_len)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: manifest file not found")
    options = dict(min_audio_len=min_audio_len, max_audio_len=max_audio_len, skip_bad=skip_bad,
                   check_audio=check_audio)
    fingerprint = _fingerprint(path, **options)
    _RUN_STATS.pop(fingerprint, None)
    try:
        data = datasets.Dataset.from_generator(
            _generate_rows, features=_features(), cache_dir=cache_dir, fingerprint=fingerprint,
            gen_kwargs=dict(manifest=path, fingerprint=fingerprint, **options))
    except Exception as exc:
        data_error = _find_data_error(exc)
        if data_error is not None:
            raise DataError(str(data_error)) from None
        # datasets refuses to store zero rows; that case gets its own message below.
        finished = _RUN_STATS.get(fingerprint, {})
        if finished.get("complete") and finished.get("kept") == 0:
            data = None
        else:
            raise
    # A cache hit runs no generator; the counts of the run that built the cache lie beside it.
    stats = _RUN_STATS.pop(fingerprint, None)
    if data is not None and data.cache_files:
        stats_file = os.path.join(os.path.dirname(data.cache_files[0]["filename"]), "manifest_stats.json")
        if stats is not None:
            tmp = f"{stats_file}.part{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(stats, handle)
            os.replace(tmp, stats_file)
        elif os.path.exists(stats_file):
            with open(stats_file, encoding="utf-8") as handle:
                stats = json.load(handle)
    if stats is not None:
        stats.pop("complete", None)
    stats = stats or {"lines": len(data) if data is not None else 0,
                      "kept": len(data) if data is not None else 0,
                      "bad": 0, "too_short": 0, "too_long": 0, "bad_examples": []}
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
    data, _ = _load(path, min_audio_len=min_audio_len, max_audio_len=max_audio_len,
                    skip_bad=skip_bad, check_audio=check_audio, cache_dir=cache_dir)
    return data


class SpeechDataset(torch.utils.data.Dataset):
    """Items {"input_features": float32 [n_mels, 3000], "labels": list[int]} from a manifest.

    Audio decoding, augmentation and feature extraction run in __getitem__ (so in DataLoader
    workers). `language` applies to samples without their own "language"; None and no
    per-sample language means no language token. No-speech samples are kept with the
    <|nospeech|> label. Samples whose labels exceed `max_label_length` tokens (after the
    leading <|startoftranscript|>, which the collator removes) are left out and counted.
    """

    def __init__(self, manifest_path, processor, *, language: Optional[str] = None,
                 task: str = "transcribe", timestamps: bool = False, min_audio_len: float = 0.5,
                 max_audio_len: float = 30.0, augment_config_path: Optional[str] = None,
                 skip_bad: bool = False, max_label_length: int = 448,
                 cache_dir: Optional[str] = None):
        from utils.data.augmentation import Augmenter

        self.manifest_path = os.fspath(manifest_path)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.feature_extractor = processor.feature_extractor
        self.task = task
        self.timestamps = bool(timestamps)
        self.skip_bad = skip_bad
        # Checked against the tokenizer now, not in the first worker's first batch.
        try:
            prefix_ids(self.tokenizer, language=language, task=task)
            _check_lengths(min_audio_len, max_audio_len)
            if max_label_length < 4:
                raise ValueError(f"max_label_length must be at least 4 tokens, got {max_label_length}")
        except ValueError as exc:
            raise DataError(str(exc)) from None
        self.language = to_language_code(language)
        self.augmenter = Augmenter.from_file(augment_config_path) if augment_config_path else None
        if self.augmenter is not None:
            logger.info("%s: augmentation %s", self.manifest_path, self.augmenter.describe())

        data, stats = _load(self.manifest_path, min_audio_len=min_audio_len, max_audio_len=max_audio_len,
                            skip_bad=skip_bad, check_audio=True, cache_dir=cache_dir)
        self.stats = {key: value for key, value in stats.items() if key != "bad_examples"}
        self.bad_examples = list(stats.get("bad_examples", []))
        data = self._check_languages(data)
        if self.timestamps:
            data = self._check_timestamps(data)
        data = self._drop_long_labels(data, max_label_length)
        if len(data) == 0:
            raise DataError(f"{self.manifest_path}: no usable samples left")
        self.data = data
        self.stats["kept"] = len(data)
        self._rng = None
        self._rng_key = None

    def __len__(self) -> int:
        return len(self.data)

    def head(self, count: int) -> "SpeechDataset":
        """The same dataset cut to its first `count` samples (all of them when it has fewer)."""
        if count >= len(self.data):
            return self
        cut = copy.copy(self)
        cut.data = self.data.select(range(count))
        cut.stats = {**self.stats, "kept": count}
        return cut

    # --- validation that needs the tokenizer or the training mode ---------------------

    def _reject_or_drop(self, data, bad_rows: list[int], problem: str):
        lines = data.select(bad_rows[:1])["line"]
        if not self.skip_bad:
            raise DataError(f"{self.manifest_path}:{lines[0]}: {problem}")
        logger.warning("%s: skipped %d line(s): %s (first: line %d)", self.manifest_path, len(bad_rows),
                       problem, lines[0])
        self.stats["bad"] = self.stats.get("bad", 0) + len(bad_rows)
        keep = np.ones(len(data), dtype=bool)
        keep[bad_rows] = False
        # Later checks read the Arrow table directly, so materialise the selection.
        return data.select(np.flatnonzero(keep)).flatten_indices()

    def _check_languages(self, data):
        import pyarrow as pa
        import pyarrow.compute as pc

        problems = {}
        for code in data.unique("language"):
            if code is None:
                continue
            try:
                prefix_ids(self.tokenizer, language=code, task=self.task)
            except ValueError as exc:
                problems[code] = str(exc)
        if not problems:
            return data
        column = data.data.column("language")
        mask = pc.fill_null(pc.is_in(column, value_set=pa.array(sorted(problems))), False)
        bad_rows = np.flatnonzero(mask.to_numpy(zero_copy_only=False).astype(bool)).tolist()
        first = column[bad_rows[0]].as_py()
        return self._reject_or_drop(data, bad_rows, f"field 'language': {problems[first]}")

    def _check_timestamps(self, data):
        import pyarrow.compute as pc

        table = data.data
        speech = pc.not_equal(pc.utf8_trim_whitespace(table.column("sentence")), "")
        no_segments = pc.fill_null(pc.equal(pc.list_value_length(table.column("sentences")), 0), True)
        mask = pc.and_(speech, no_segments).to_numpy(zero_copy_only=False).astype(bool)
        bad_rows = np.flatnonzero(mask).tolist()
        if bad_rows:
            data = self._reject_or_drop(
                data, bad_rows, "timestamp training needs 'sentences' with start/end times for "
                                "every clip with speech")
        return data

    def _drop_long_labels(self, data, max_label_length: int):
        tokenizer, language, task, timestamps = self.tokenizer, self.language, self.task, self.timestamps

        def short_enough(batch):
            keep = []
            for sentence, sentences, lang in zip(batch["sentence"], batch["sentences"], batch["language"]):
                labels = build_labels(tokenizer, sentence=sentence, sentences=sentences,
                                      language=lang or language, task=task, timestamps=timestamps)
                keep.append(len(labels) - 1 <= max_label_length)
            return keep

        key = json.dumps([data._fingerprint, getattr(tokenizer, "name_or_path", ""), len(tokenizer),
                          language, task, timestamps, max_label_length, _FORMAT_VERSION])
        before = len(data)
        data = data.filter(short_enough, batched=True, batch_size=1000,
                           desc="Checking label lengths",
                           new_fingerprint=hashlib.sha256(key.encode()).hexdigest()[:32])
        dropped = before - len(data)
        self.stats["too_many_tokens"] = dropped
        if dropped:
            logger.warning("%s: left out %d sample(s) whose labels are longer than %d tokens",
                           self.manifest_path, dropped, max_label_length)
        return data

    # --- items --------------------------------------------------------------------------

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_rng"] = state["_rng_key"] = None
        return state

    def _generator(self) -> np.random.Generator:
        # torch seeds every DataLoader worker differently (and anew each epoch), and
        # torch.manual_seed / transformers.set_seed fix it: following torch.initial_seed()
        # makes augmentation reproducible without a seed argument of our own.
        key = (os.getpid(), torch.initial_seed())
        if self._rng is None or self._rng_key != key:
            self._rng = np.random.default_rng(torch.initial_seed() % (2 ** 63))
            self._rng_key = key
        return self._rng

    def load_item(self, index: int) -> dict:
        """Audio (16 kHz float32), segments and text of one sample after augmentation."""
        from utils.data.augmentation import Segment

        row = self.data[int(index)]
        try:
            audio = load_audio(row["path"], row["start_time"], row["end_time"])
        except AudioError as exc:
            raise DataError(f"{self.manifest_path}:{row['line']}: {exc}") from None
        segments = [Segment(s["start"], s["end"], s["text"]) for s in (row["sentences"] or [])]
        if self.augmenter is not None:
            audio, segments, _ = self.augmenter(audio, segments, self._generator())
        return {"audio": audio, "segments": segments, "sentence": row["sentence"],
                "has_segments": row["sentences"] is not None, "language": row["language"] or self.language,
                "line": row["line"]}

    def _build_labels(self, sentence: str, sentences: Optional[list], language: Optional[str], line: int) -> list:
        try:
            return build_labels(self.tokenizer, sentence=sentence, sentences=sentences, language=language,
                                task=self.task, timestamps=self.timestamps)
        except ValueError as exc:
            raise DataError(f"{self.manifest_path}:{line}: {exc}") from None

    def _spectrogram(self, audio: np.ndarray) -> np.ndarray:
        features = self.feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
        return features.astype(np.float32, copy=False)

    def features(self, index: int) -> np.ndarray:
        """Log-mel spectrogram of one sample (after augmentation, when configured)."""
        return self._spectrogram(self.load_item(index)["audio"])

    def labels(self, index: int) -> list:
        """Label ids of one sample from the manifest alone, without decoding its audio; only valid
        without augmentation (which may shift the segments)."""
        if self.augmenter is not None:
            raise RuntimeError("labels() without audio is wrong under augmentation; use dataset[index]")
        row = self.data[int(index)]
        return self._build_labels(row["sentence"], row["sentences"], row["language"] or self.language, row["line"])

    def __getitem__(self, index: int) -> dict:
        item = self.load_item(index)
        sentences = ([{"start": s.start, "end": s.end, "text": s.text} for s in item["segments"]]
                     if item["has_segments"] else None)
        labels = self._build_labels(item["sentence"], sentences, item["language"], item["line"])
        return {"input_features": self._spectrogram(item["audio"]), "labels": labels}
