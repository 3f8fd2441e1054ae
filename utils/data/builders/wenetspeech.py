"""WenetSpeech (WenetSpeech.json + opus audio) -> windows of at most 30 s as FLAC clips + manifests.

WenetSpeech.json is read as a stream (ijson), one audio entry at a time, so its several GB
never sit in memory. Segments at or above `min_confidence` are grouped per audio file into
windows with clause timestamps relative to the window; each source file is decoded once in a
worker process, which writes each window as a 16 kHz FLAC clip as soon as its samples have been
decoded and keeps nothing before the next window: a worker holds about one window (30 s) of audio
however long the source. Sources go out one at a time to whichever worker is free, so one long
source occupies one worker while the others go on; the manifests keep the json's order. A window
never spans a segment that was left out (its speech would be heard but missing from the label),
unless `silence_gaps` zeroes every unlabelled stretch inside a window, which lets windows grow
across such gaps.
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections import Counter, deque
from contextlib import closing
from dataclasses import dataclass, field
from multiprocessing import Pool
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from utils.core.audio import SAMPLE_RATE, AudioError, StopDecoding, decode_in_pieces
from utils.core.files import write_text_atomic
from utils.data.builders.common import BuildError, write_audio
from utils.data.builders.manifest_writer import ManifestSet, make_record, manifest_audio_path, snap_time

SPLITS = ("train", "dev", "test_net", "test_meeting")
TEST_SUBSETS = {"TEST_NET": "test_net", "TEST_MEETING": "test_meeting", "DEV": "dev"}
# Sources handed to the workers beyond the oldest one whose clips are not yet in the manifests: bounds the
# memory of queued jobs and finished results, while a long source holds up no worker until this many
# later sources have finished.
SOURCES_AHEAD = 256


@dataclass
class Window:
    split: str
    start: float                                   # seconds in the source audio
    end: float
    segments: List[Tuple[float, float, str]] = field(default_factory=list)  # absolute times

    @property
    def text(self) -> str:
        return "".join(text for _, _, text in self.segments)


@dataclass
class Job:
    """One source audio file and the windows to cut from it: what a worker process gets."""
    source: str
    aid: str
    windows: List[Window]
    output_dir: str
    silence_gaps: bool

    def clip_paths(self) -> List[str]:
        return [clip_path(self.output_dir, self.aid, i) for i in range(len(self.windows))]


def build(wenetspeech_json: str, output_dir: str, wenetspeech_dir: Optional[str] = None,
          train_subset: str = "L", min_confidence: float = 0.95, max_seconds: float = 30.0,
          silence_gaps: bool = False, num_workers: int = 1, skip_bad_audio: bool = False) -> str:
    """Write <output_dir>/<split>.jsonl and audio/<aid>/*.flac; returns the summary line.
    The manifests are put in place only when the whole run succeeds."""
    if not os.path.isfile(wenetspeech_json):
        raise BuildError(f"--wenetspeech_json={wenetspeech_json}: file not found")
    audio_root = wenetspeech_dir or os.path.dirname(os.path.abspath(wenetspeech_json))
    skipped: Counter = Counter()
    os.makedirs(output_dir, exist_ok=True)
    jobs = (Job(os.path.join(audio_root, a["path"]), a["aid"],
                plan_windows(a["segments"], train_subset, min_confidence, max_seconds, silence_gaps, skipped),
                output_dir, silence_gaps) for a in iter_audios(wenetspeech_json))
    jobs = (job for job in jobs if job.windows)
    # closing() ends the hand-out before the pool shuts down, whatever stops the loop.
    with ManifestSet(output_dir, SPLITS) as manifests, Pool(num_workers) as pool, \
            tqdm(desc="audio files", unit="file") as bar, closing(convert_in_order(pool, jobs, bar)) as results:
        for job, (error, durations) in results:
            if error:
                if not skip_bad_audio:
                    raise BuildError(f"{error} (pass --skip_bad_audio to leave such files out)")
                skipped["audio files unreadable"] += 1
                continue
            for window, path, duration in zip(job.windows, job.clip_paths(), durations):
                manifests.write(window.split, window_record(window, path, duration))
    return manifests.summary(skipped, unit="windows")


def convert_in_order(pool, jobs: Iterable[Job], bar) -> Iterator[Tuple[Job, Tuple[Optional[str], List[float]]]]:
    """(job, convert_audio's result) in the jobs' order, while the workers take one source at a time as they
    come free (a long source occupies one worker, the others go on), at most SOURCES_AHEAD sources ahead."""
    ahead, stop = threading.Semaphore(SOURCES_AHEAD), threading.Event()
    handed: dict = {}

    def hand_out() -> Iterator[Tuple[int, Job]]:
        # Runs in the pool's task thread, which the pool joins on exit: it must not wait for ever.
        for number, job in enumerate(jobs):
            while not ahead.acquire(timeout=0.2):
                if stop.is_set():
                    return
            handed[number] = job
            yield number, job

    finished: dict = {}
    next_number = 0
    try:
        for number, result in pool.imap_unordered(_convert_numbered, hand_out(), chunksize=1):
            bar.update(1)
            finished[number] = result
            while next_number in finished:
                yield handed.pop(next_number), finished.pop(next_number)
                next_number += 1
                ahead.release()
    finally:
        stop.set()


def _convert_numbered(numbered: Tuple[int, Job]) -> Tuple[int, Tuple[Optional[str], List[float]]]:
    number, job = numbered
    return number, convert_audio(job)


def segment_split(segment: dict, train_subset: str) -> Optional[str]:
    subsets = segment.get("subsets") or []
    for subset, split in TEST_SUBSETS.items():
        if subset in subsets:
            return split
    return "train" if train_subset in subsets else None


def plan_windows(segments: Sequence[dict], train_subset: str, min_confidence: float,
                 max_seconds: float, silence_gaps: bool, skipped: Counter) -> List[Window]:
    """Group kept segments into windows of <= max_seconds (see the module docstring)."""
    windows: List[Window] = []
    current: Optional[Window] = None
    for seg in sorted(segments, key=lambda s: s["begin_time"]):
        split = segment_split(seg, train_subset)
        begin, end, text = float(seg["begin_time"]), float(seg["end_time"]), seg["text"]
        keep = split is not None and float(seg.get("confidence", 0.0)) >= min_confidence \
            and text.strip() and end > begin
        if not keep:
            skipped["segments left out (confidence, subset or empty)"] += 1
            if not silence_gaps:
                current = None        # its speech must not end up inside a window
            continue
        if end - begin > max_seconds:
            skipped[f"segments over {max_seconds:g} s"] += 1
            current = None
            continue
        if current is not None and current.split == split and end - current.start <= max_seconds \
                and begin >= current.end:
            current.end = end
            current.segments.append((begin, end, text))
            continue
        current = Window(split, begin, end, [(begin, end, text)])
        windows.append(current)
    return windows


def iter_audios(path: str) -> Iterator[dict]:
    """Audio entries of WenetSpeech.json, streamed; structure errors name the entry."""
    import ijson

    try:
        with open(path, "rb") as f:
            for index, audio in enumerate(ijson.items(f, "audios.item", use_float=True)):
                yield checked_audio(audio, path, index)
    except ijson.JSONError as exc:
        raise BuildError(f"{path}: not valid JSON ({exc})") from None


def checked_audio(audio, path: str, index: int) -> dict:
    """The entry with its `aid` filled in, or a BuildError naming what it lacks."""
    if not isinstance(audio, dict) or not isinstance(audio.get("path"), str) \
            or not isinstance(audio.get("segments"), list):
        raise BuildError(f"{path}: audios[{index}] needs 'path' and a 'segments' list")
    aid = audio.get("aid") or os.path.splitext(os.path.basename(audio["path"]))[0]
    for s_index, seg in enumerate(audio["segments"]):
        missing = [k for k in ("begin_time", "end_time", "text") if not isinstance(seg, dict) or k not in seg]
        if missing:
            raise BuildError(f"{path}: audios[{index}] ({aid}) segments[{s_index}] lacks {', '.join(missing)}")
    audio["aid"] = aid
    return audio


def clip_path(output_dir: str, aid: str, index: int) -> str:
    return os.path.join(output_dir, "audio", aid, f"{aid}_{index:04d}.flac")


def convert_audio(job: Job) -> Tuple[Optional[str], List[float]]:
    """Worker: decode one source file once, from its start to its last window's end, writing each window as
    soon as its samples have arrived; only the samples from the next window's start on are kept, so memory is
    bounded by a window, not by the source. Returns (error or None, clip durations)."""
    import soundfile

    paths = job.clip_paths()
    # The plan file, written last, marks an audio file as finished for exactly these windows,
    # so a rerun with other settings cuts the clips again instead of reusing stale ones.
    plan = hashlib.sha1(repr((job.windows, job.silence_gaps)).encode()).hexdigest()
    plan_file = os.path.join(os.path.dirname(paths[0]), ".plan")
    if read_text(plan_file) == plan and all(os.path.exists(p) for p in paths):
        return None, [soundfile.info(p).duration for p in paths]
    cutter = WindowCutter(job.windows, paths, job.silence_gaps)
    try:
        total = decode_in_pieces(job.source, cutter.add)
    except AudioError as exc:
        return str(exc), []
    # Windows reaching past the end of the audio get what there is of them, as a cut of the whole file would.
    while cutter.pending:
        _, window, _ = cutter.pending[0]
        if not cutter.write_next():
            return f"{job.source}: segment {window.start:.2f}-{window.end:.2f} s lies past " \
                   f"the end of the audio ({total / SAMPLE_RATE:.2f} s)", []
    write_text_atomic(plan_file, plan)
    return None, cutter.durations


class WindowCutter:
    """Takes a source's samples in order (decode_in_pieces' sink) and writes every window, in start order,
    once its last sample has arrived; keeps no sample before the next window's start."""

    def __init__(self, windows: Sequence[Window], paths: Sequence[str], silence_gaps: bool):
        # (index, window, path) by start: the first pending window's start is the earliest sample still needed.
        self.pending = deque(sorted(((i, w, p) for i, (w, p) in enumerate(zip(windows, paths))),
                                    key=lambda item: item[1].start))
        self.silence_gaps = silence_gaps
        self.buffer = np.zeros(0, dtype=np.float32)
        self.offset = 0                  # the source sample that buffer[0] is
        self.durations: List[float] = [0.0] * len(windows)   # in the windows' order
        self.most_held = 0               # the largest number of samples held at once

    def add(self, samples: np.ndarray) -> None:
        if not self.pending:
            raise StopDecoding
        self.buffer = np.concatenate([self.buffer, samples])
        self.most_held = max(self.most_held, len(self.buffer))
        while self.pending and self.offset + len(self.buffer) >= _sample(self.pending[0][1].end):
            self.write_next()
        if not self.pending:
            raise StopDecoding           # the rest of the source holds no window
        self._drop_before(_sample(self.pending[0][1].start))

    def write_next(self) -> bool:
        """Write the first pending window from what has arrived; False when none of it has."""
        index, window, path = self.pending.popleft()
        clip = cut_window(self.buffer, window, self.silence_gaps, offset=self.offset)
        if len(clip) == 0:
            return False
        write_audio(path, clip)
        self.durations[index] = len(clip) / SAMPLE_RATE
        return True

    def _drop_before(self, sample: int) -> None:
        # Up to `sample`, or up to what has arrived when the next window starts later still.
        sample = min(sample, self.offset + len(self.buffer))
        if sample > self.offset:
            # A copy, so that the dropped samples' memory goes back instead of staying under a view.
            self.buffer = self.buffer[sample - self.offset:].copy()
            self.offset = sample


def _sample(seconds: float) -> int:
    return int(round(seconds * SAMPLE_RATE))


def read_text(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def cut_window(audio: np.ndarray, window: Window, silence_gaps: bool, offset: int = 0) -> np.ndarray:
    """The window's samples from `audio`, whose first sample is the source's sample `offset`."""
    first = _sample(window.start)
    clip = audio[max(first - offset, 0):max(_sample(window.end) - offset, 0)].copy()
    if silence_gaps:
        mask = np.zeros(len(clip), dtype=bool)
        for begin, end, _ in window.segments:
            mask[max(_sample(begin) - first, 0):max(_sample(end) - first, 0)] = True
        clip[~mask] = 0.0
    return clip


def window_record(window: Window, path: str, duration: float) -> dict:
    sentences = []
    for begin, end, text in window.segments:
        start = snap_time(begin - window.start)
        stop = min(snap_time(end - window.start), snap_time(duration, down=True))
        if stop > start:
            sentences.append({"start": start, "end": stop, "text": text})
    return make_record(manifest_audio_path(path), window.text, duration, sentences, "Chinese")
