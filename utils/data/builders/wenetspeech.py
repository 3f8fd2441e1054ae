"""WenetSpeech (WenetSpeech.json + opus audio) -> windows of at most 30 s as FLAC clips + manifests.

WenetSpeech.json is read as a stream (ijson), one audio entry at a time, so its several GB
never sit in memory. Segments at or above `min_confidence` are grouped per audio file into
windows with clause timestamps relative to the window; each source file is decoded once in a
worker process, which cuts its windows out as 16 kHz FLAC clips. A window never spans a segment
that was left out (its speech would be heard but missing from the label), unless `silence_gaps`
zeroes every unlabelled stretch inside a window, which lets windows grow across such gaps.
"""
from __future__ import annotations

import hashlib
import itertools
import os
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing import Pool
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from utils.core.audio import SAMPLE_RATE, AudioError, load_audio
from utils.core.files import write_text_atomic
from utils.data.builders.common import BuildError, write_audio
from utils.data.builders.manifest_writer import ManifestSet, make_record, manifest_audio_path, snap_time

SPLITS = ("train", "dev", "test_net", "test_meeting")
TEST_SUBSETS = {"TEST_NET": "test_net", "TEST_MEETING": "test_meeting", "DEV": "dev"}
BATCH_AUDIOS = 32   # audio entries handed to the workers at once; bounds memory


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
    with ManifestSet(output_dir, SPLITS) as manifests, Pool(num_workers) as pool, \
            tqdm(desc="audio files", unit="file") as bar:
        while batch := list(itertools.islice(jobs, BATCH_AUDIOS)):
            for job, (error, durations) in zip(batch, pool.imap(convert_audio, batch)):
                bar.update(1)
                if error:
                    if not skip_bad_audio:
                        raise BuildError(f"{error} (pass --skip_bad_audio to leave such files out)")
                    skipped["audio files unreadable"] += 1
                    continue
                for window, path, duration in zip(job.windows, job.clip_paths(), durations):
                    manifests.write(window.split, window_record(window, path, duration))
    return manifests.summary(skipped, unit="windows")


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
    """Worker: decode one source file once, cut and write its windows.
    Returns (error or None, clip durations)."""
    import soundfile

    paths = job.clip_paths()
    # The plan file, written last, marks an audio file as finished for exactly these windows,
    # so a rerun with other settings cuts the clips again instead of reusing stale ones.
    plan = hashlib.sha1(repr((job.windows, job.silence_gaps)).encode()).hexdigest()
    plan_file = os.path.join(os.path.dirname(paths[0]), ".plan")
    if read_text(plan_file) == plan and all(os.path.exists(p) for p in paths):
        return None, [soundfile.info(p).duration for p in paths]
    try:
        audio = load_audio(job.source)
    except AudioError as exc:
        return str(exc), []
    durations = []
    for window, path in zip(job.windows, paths):
        clip = cut_window(audio, window, job.silence_gaps)
        if len(clip) == 0:
            return f"{job.source}: segment {window.start:.2f}-{window.end:.2f} s lies past " \
                   f"the end of the audio ({len(audio) / SAMPLE_RATE:.2f} s)", []
        write_audio(path, clip)
        durations.append(len(clip) / SAMPLE_RATE)
    write_text_atomic(plan_file, plan)
    return None, durations


def read_text(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def cut_window(audio: np.ndarray, window: Window, silence_gaps: bool) -> np.ndarray:
    first = int(round(window.start * SAMPLE_RATE))
    clip = audio[first:int(round(window.end * SAMPLE_RATE))].copy()
    if silence_gaps:
        mask = np.zeros(len(clip), dtype=bool)
        for begin, end, _ in window.segments:
            mask[int(round(begin * SAMPLE_RATE)) - first:int(round(end * SAMPLE_RATE)) - first] = True
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
