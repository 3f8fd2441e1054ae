"""Turn WenetSpeech (10,000 h, WenetSpeech.json + opus audio) into jsonlines training data.

WenetSpeech.json is read as a stream (ijson), one audio entry at a time, so its several
GB never sit in memory. Segments at or above --min_confidence are grouped per audio file
into windows of at most 30 s (Whisper's input) with clause timestamps relative to the
window; each window is written as a 16 kHz FLAC clip as soon as the worker decoding its source
has reached its end, so a worker holds about 30 s of audio however long the source (a 1-hour
source no longer sits in memory whole); sources go to whichever worker is free, one at a time.
Splits: train (--train_subset S/M/L), dev, test_net, test_meeting -> <output_dir>/<split>.jsonl;
clips under <output_dir>/audio/<aid>/.

A window never spans a segment that was left out (low confidence, other split) because
its speech would be heard but missing from the label; --silence_gaps instead zeroes every
unlabelled stretch inside a window, which lets windows grow across such gaps.

Re-running skips audio files whose clips all exist; manifests are replaced atomically.
The training loader turns these manifests into an Arrow table (utils/data/manifest.py), which is
what makes a million-line manifest practical. The work is done by utils/data/builders/wenetspeech.py.

  python tools/create_wenetspeech_data.py --wenetspeech_json=/data/WenetSpeech.json \\
      --output_dir=dataset/wenetspeech --num_workers=8
"""
from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Literal, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.core.audio import CHUNK_LENGTH  # noqa: E402
from utils.core.cli import guarded, parse_args, print_config  # noqa: E402
from utils.core.errors import UsageError  # noqa: E402
from utils.core.files import check_output_path  # noqa: E402
from utils.data.builders import wenetspeech  # noqa: E402


@dataclass
class Arguments:
    wenetspeech_json: str = field(metadata={"help": "path to WenetSpeech.json"})
    wenetspeech_dir: Optional[str] = field(default=None, metadata={
        "help": "root that the audio 'path' entries are relative to (default: the json's directory)"})
    output_dir: str = field(default="dataset/wenetspeech", metadata={
        "help": "manifests <split>.jsonl and clips audio/<aid>/*.flac"})
    train_subset: Literal["S", "M", "L"] = field(default="L", metadata={
        "help": "WenetSpeech training subset (S 100 h, M 1,000 h, L 10,000 h)"})
    min_confidence: float = field(default=0.95, metadata={
        "help": "keep segments whose label confidence is at least this"})
    max_seconds: float = field(default=float(CHUNK_LENGTH), metadata={
        "help": "longest window (Whisper sees 30 s at once)"})
    silence_gaps: bool = field(default=False, metadata={
        "help": "zero unlabelled audio inside windows (see description)"})
    num_workers: int = field(default=max(1, (os.cpu_count() or 2) - 1), metadata={
        "help": "processes decoding and cutting audio"})
    skip_bad_audio: bool = field(default=False, metadata={
        "help": "leave out unreadable audio files instead of stopping"})

    def __post_init__(self):
        if not 0 < self.max_seconds <= CHUNK_LENGTH:
            raise UsageError(f"--max_seconds={self.max_seconds}: must lie in (0, {CHUNK_LENGTH}]")
        if self.num_workers < 1:
            raise UsageError(f"--num_workers={self.num_workers}: must be at least 1")


def build(args: Arguments) -> None:
    print_config("create_wenetspeech_data.py configuration", args)
    check_output_path(args.output_dir, "--output_dir", kind="dir")
    print(wenetspeech.build(**asdict(args)))


def main(argv=None) -> int:
    args = parse_args(Arguments, argv, description=__doc__)
    return guarded(lambda: build(args))


if __name__ == "__main__":
    sys.exit(main())
