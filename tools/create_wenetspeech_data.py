"""Turn WenetSpeech (10,000 h, WenetSpeech.json + opus audio) into jsonlines training data.

WenetSpeech.json is read as a stream (ijson), one audio entry at a time, so its several
GB never sit in memory. Segments at or above --min_confidence are grouped per audio file
into windows of at most 30 s (Whisper's input) with clause timestamps relative to the
window; each window is cut from the decoded audio and written as a 16 kHz FLAC clip,
in parallel worker processes. Splits: train (--train_subset S/M/L), dev, test_net,
test_meeting -> <output_dir>/<split>.jsonl; clips under <output_dir>/audio/<aid>/.

A window never spans a segment that was left out (low confidence, other split) because
its speech would be heard but missing from the label; --silence_gaps instead zeroes every
unlabelled stretch inside a window, which lets windows grow across such gaps.

Re-running skips audio files whose clips all exist; manifests are replaced atomically.
The training loader turns these manifests into an Arrow table (utils/data/manifest.py), which is
what makes a million-line manifest practical.

  python tools/create_wenetspeech_data.py --wenetspeech_json=/data/WenetSpeech.json \\
      --output_dir=dataset/wenetspeech --num_workers=8
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing import Pool
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.core.audio import CHUNK_LENGTH, SAMPLE_RATE, AudioError, load_audio  # noqa: E402
from utils.data.manifest_writer import ManifestWriter, make_record, manifest_audio_path, snap_time  # noqa: E402,E501
from utils.inference.transcriber import report_errors  # noqa: E402

TEST_SUBSETS = {"TEST_NET": "test_net", "TEST_MEETING": "test_meeting", "DEV": "dev"}
BATCH_AUDIOS = 32   # audio entries handed to the workers at once; bounds memory


class WenetError(ValueError):
    """Malformed input; the message names the file and the entry."""


@dataclass
class Window:
    split: str
    start: float                                   # seconds in the source audio
    end: float
    segments: List[Tuple[float, float, str]] = field(default_factory=list)  # absolute times

    @property
    def text(self) -> str:
        return "".join(text for _, _, text in self.segments)


def segment_split(segment: dict, train_subset: str) -> Optional[str]:
    subsets = segment.get("subsets") or []
    for subset, split in TEST_SUBSETS.items():
        if subset in subsets:
            return split
    return "train" if train_subset in subsets else None


def plan_windows(segments: Sequence[dict], train_subset: str, min_confidence: float,
                 max_seconds: float, silence_gaps: bool, counts: Counter) -> List[Window]:
    """Group kept segments into windows of <= max_seconds (see the module docstring)."""
    windows: List[Window] = []
    current: Optional[Window] = None
    for seg in sorted(segments, key=lambda s: s["begin_time"]):
        split = segment_split(seg, train_subset)
        begin, end, text = float(seg["begin_time"]), float(seg["end_time"]), seg["text"]
        keep = split is not None and float(seg.get("confidence", 0.0)) >= min_confidence \
            and text.strip() and end > begin
        if not keep:
            counts["segments left out (confidence, subset or empty)"] += 1
            if not silence_gaps:
                current = None        # its speech must not end up inside a window
            continue
        if end - begin > max_seconds:
            counts[f"segments over {max_seconds:g} s"] += 1
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
                if not isinstance(audio, dict) or not isinstance(audio.get("path"), str) \
                        or not isinstance(audio.get("segments"), list):
                    raise WenetError(f"{path}: audios[{index}] needs 'path' and a 'segments' "
                                     "list")
                aid = audio.get("aid") or os.path.splitext(os.path.basename(audio["path"]))[0]
                for s_index, seg in enumerate(audio["segments"]):
                    missing = [k for k in ("begin_time", "end_time", "text")
                               if not isinstance(seg, dict) or k not in seg]
                    if missing:
                        raise WenetError(f"{path}: audios[{index}] ({aid}) segments[{s_index}] "
                                         f"lacks {', '.join(missing)}")
                audio["aid"] = aid
                yield audio
    except ijson.JSONError as exc:
        raise WenetError(f"{path}: not valid JSON ({exc})") from None


def clip_path(output_dir: str, aid: str, index: int) -> str:
    return os.path.join(output_dir, "audio", aid, f"{aid}_{index:04d}.flac")


def convert_audio(job) -> Tuple[str, Optional[str], List[float]]:
    """Worker: decode one source file once, cut and write its windows. Returns
    (aid, error or None, clip durations)."""
    import soundfile

    source, aid, windows, output_dir, silence_gaps = job
    paths = [clip_path(output_dir, aid, i) for i in range(len(windows))]
    # The plan file, written last, marks an audio file as finished for exactly these windows,
    # so a rerun with other settings cuts the clips again instead of reusing stale ones.
    plan = hashlib.sha1(repr((windows, silence_gaps)).encode()).hexdigest()
    plan_file = os.path.join(os.path.dirname(paths[0]), ".plan")
    if os.path.exists(plan_file) and open(plan_file).read() == plan \
            and all(os.path.exists(p) for p in paths):
        return aid, None, [soundfile.info(p).duration for p in paths]
    try:
        audio = load_audio(source)
    except AudioError as exc:
        return aid, str(exc), []
    durations = []
    os.makedirs(os.path.dirname(paths[0]), exist_ok=True)
    for window, path in zip(windows, paths):
        first = int(round(window.start * SAMPLE_RATE))
        clip = audio[first:int(round(window.end * SAMPLE_RATE))].copy()
        if len(clip) == 0:
            return aid, f"{source}: segment {window.start:.2f}-{window.end:.2f} s lies past " \
                        f"the end of the audio ({len(audio) / SAMPLE_RATE:.2f} s)", []
        if silence_gaps:
            mask = np.zeros(len(clip), dtype=bool)
            for begin, end, _ in window.segments:
                mask[int(round(begin * SAMPLE_RATE)) - first:
                     int(round(end * SAMPLE_RATE)) - first] = True
            clip[~mask] = 0.0
        tmp = f"{path}.part"
        soundfile.write(tmp, clip, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        os.replace(tmp, path)
        durations.append(len(clip) / SAMPLE_RATE)
    with open(plan_file, "w") as f:
        f.write(plan)
    return aid, None, durations


def window_record(window: Window, path: str, duration: float) -> dict:
    sentences = []
    for begin, end, text in window.segments:
        start = snap_time(begin - window.start)
        stop = min(snap_time(end - window.start), snap_time(duration, down=True))
        if stop > start:
            sentences.append({"start": start, "end": stop, "text": text})
    return make_record(manifest_audio_path(path), window.text, duration, sentences, "Chinese")


def build(args) -> None:
    if not 0 < args.max_seconds <= CHUNK_LENGTH:
        raise WenetError(f"--max_seconds={args.max_seconds}: must lie in (0, {CHUNK_LENGTH}]")
    if args.num_workers < 1:
        raise WenetError("--num_workers must be at least 1")
    if not os.path.isfile(args.wenetspeech_json):
        raise WenetError(f"--wenetspeech_json={args.wenetspeech_json}: file not found")
    audio_root = args.wenetspeech_dir or os.path.dirname(os.path.abspath(args.wenetspeech_json))
    counts: Counter = Counter()
    os.makedirs(args.output_dir, exist_ok=True)
    splits = ["train", "dev", "test_net", "test_meeting"]
    hours: Counter = Counter()
    # ExitStack: every manifest is renamed into place only if the whole run succeeds.
    with contextlib.ExitStack() as stack:
        writers = {s: stack.enter_context(ManifestWriter(os.path.join(args.output_dir,
                                                                      f"{s}.jsonl")))
                   for s in splits}
        jobs = ((os.path.join(audio_root, a["path"]), a["aid"],
                 plan_windows(a["segments"], args.train_subset, args.min_confidence,
                              args.max_seconds, args.silence_gaps, counts),
                 args.output_dir, args.silence_gaps) for a in iter_audios(args.wenetspeech_json))
        jobs = (job for job in jobs if job[2])
        pool = stack.enter_context(Pool(args.num_workers))
        bar = stack.enter_context(tqdm(desc="audio files", unit="file"))
        while True:
            batch = list(itertools.islice(jobs, BATCH_AUDIOS))
            if not batch:
                break
            for job, (aid, error, durations) in zip(batch, pool.imap(convert_audio, batch)):
                bar.update(1)
                if error:
                    if not args.skip_bad_audio:
                        raise WenetError(f"{error} (pass --skip_bad_audio to leave such files "
                                         "out)")
                    counts["audio files unreadable (skipped)"] += 1
                    continue
                for index, (window, duration) in enumerate(zip(job[2], durations)):
                    writers[window.split].write(window_record(
                        window, clip_path(args.output_dir, aid, index), duration))
                    hours[window.split] += duration / 3600
    skipped = ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "none"
    print("summary: " + ", ".join(f"{s}.jsonl {writers[s].count} windows {hours[s]:.2f} h"
                                  for s in splits) + f"; {skipped}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--wenetspeech_json", required=True, help="path to WenetSpeech.json")
    parser.add_argument("--wenetspeech_dir", default=None, help="root that the audio 'path' "
                        "entries are relative to (default: the json's directory)")
    parser.add_argument("--output_dir", default="dataset/wenetspeech",
                        help="manifests <split>.jsonl and clips audio/<aid>/*.flac")
    parser.add_argument("--train_subset", choices=["S", "M", "L"], default="L",
                        help="WenetSpeech training subset (S 100 h, M 1,000 h, L 10,000 h)")
    parser.add_argument("--min_confidence", type=float, default=0.95,
                        help="keep segments whose label confidence is at least this")
    parser.add_argument("--max_seconds", type=float, default=float(CHUNK_LENGTH),
                        help="longest window (Whisper sees 30 s at once)")
    parser.add_argument("--silence_gaps", action="store_true",
                        help="zero unlabelled audio inside windows (see description)")
    parser.add_argument("--num_workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="processes decoding and cutting audio")
    parser.add_argument("--skip_bad_audio", action="store_true",
                        help="leave out unreadable audio files instead of stopping")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    print("configuration: " + ", ".join(f"{k}={v}" for k, v in vars(args).items()))
    return report_errors(lambda: build(args), WenetError)


if __name__ == "__main__":
    sys.exit(main())
