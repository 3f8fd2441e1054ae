"""The torch Dataset that feeds Whisper: manifest rows (utils.data.manifest) become log-mel features
and decoder labels, decoded and augmented per item, i.e. inside DataLoader workers."""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from typing import Optional

import numpy as np
import torch

from utils.core.audio import SAMPLE_RATE, AudioError, load_audio
from utils.core.languages import to_language_code
from utils.core.segments import Segment
from utils.data.augmentation import Augmenter
from utils.data.collator import SKIPPED_KEY
from utils.data.labels import build_labels, prefix_ids
from utils.data.manifest import FORMAT_VERSION, DataError, check_lengths, decoded_length_problem, read_manifest

logger = logging.getLogger(__name__)


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
            check_lengths(min_audio_len, max_audio_len)
            if max_label_length < 4:
                raise ValueError(f"max_label_length must be at least 4 tokens, got {max_label_length}")
        except ValueError as exc:
            raise DataError(str(exc)) from None
        self.language = to_language_code(language)
        self.augmenter = Augmenter.from_file(augment_config_path) if augment_config_path else None
        if self.augmenter is not None:
            logger.info("%s: augmentation %s", self.manifest_path, self.augmenter.describe())

        data, stats = read_manifest(self.manifest_path, min_audio_len=min_audio_len, max_audio_len=max_audio_len,
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

    def spread(self, count: int) -> "SpeechDataset":
        """`count` samples evenly spaced over the manifest (all of them when it has fewer): a fixed subset
        that covers every part of a corpus ordered by speaker or session, unlike its first lines."""
        if count >= len(self.data):
            return self
        cut = copy.copy(self)
        cut.data = self.data.select(np.linspace(0, len(self.data) - 1, count).round().astype(int).tolist())
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
                          language, task, timestamps, max_label_length, FORMAT_VERSION])
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
        row = self.data[int(index)]
        try:
            audio = load_audio(row["path"], row["start_time"], row["end_time"])
        except AudioError as exc:
            raise DataError(f"{self.manifest_path}:{row['line']}: {exc}") from None
        # A damaged body behind an intact header decodes to less (or other) audio than the header promised;
        # training on it would pair the whole sentence with noise.
        problem = decoded_length_problem(row["path"], len(audio) / SAMPLE_RATE, row["duration"])
        if problem:
            raise DataError(f"{self.manifest_path}:{row['line']}: {problem}")
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
        try:
            item = self.load_item(index)
        except DataError as exc:
            if not self.skip_bad:
                raise
            # Found only now, in a DataLoader worker: the collator drops it and the trainer counts it.
            logger.warning("skipped: %s", exc)
            return {SKIPPED_KEY: str(exc)}
        sentences = ([{"start": s.start, "end": s.end, "text": s.text} for s in item["segments"]]
                     if item["has_segments"] else None)
        labels = self._build_labels(item["sentence"], sentences, item["language"], item["line"])
        return {"input_features": self._spectrogram(item["audio"]), "labels": labels}
