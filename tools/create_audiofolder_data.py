"""Turn an HF audiofolder or an LJSpeech-style folder into jsonlines manifests.

  audiofolder  <data_dir>/metadata.csv (columns file_name,<text column>) or metadata.jsonl,
               optionally one such folder per split (<data_dir>/train, <data_dir>/test ...)
  ljspeech     <data_dir>/metadata.csv with lines `id|text|normalized text`, audio in
               <data_dir>/wavs/<id>.wav

Writes <output_dir>/train.jsonl and test.jsonl (and one file per further split). Texts
longer than Whisper's 448-token decoder window, clips over 30 s and missing or unreadable
audio are left out and counted; a malformed metadata line stops with its file and line.
The work is done by utils/data/builders/audiofolder.py.

  python tools/create_audiofolder_data.py --data_dir=LJSpeech-1.1 --format=ljspeech \\
      --output_dir=dataset/ljspeech --test_size=0.02 --language=English
"""
from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Literal, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.core.cli import guarded, parse_args, print_config  # noqa: E402
from utils.core.errors import UsageError  # noqa: E402
from utils.core.files import check_output_path  # noqa: E402
from utils.data.builders import audiofolder  # noqa: E402


@dataclass
class Arguments:
    data_dir: str = field(metadata={"help": "the audiofolder or LJSpeech folder"})
    output_dir: str = field(metadata={"help": "where the .jsonl files go"})
    format: Literal["audiofolder", "ljspeech"] = field(default="audiofolder", metadata={
        "help": "layout of --data_dir (see the description above)"})
    text_column: str = field(default="text", metadata={
        "help": "audiofolder: metadata column holding the transcript"})
    ljspeech_text: Literal["normalized", "raw"] = field(default="normalized", metadata={
        "help": "ljspeech: use the 3rd (numbers spelled out) or the 2nd column"})
    test_size: Optional[float] = field(default=None, metadata={
        "help": "unsplit data: fraction (< 1) or number (>= 1) of items held out for test.jsonl "
                f"[default {audiofolder.DEFAULT_TEST_SIZE}]; rejected for pre-split folders"})
    seed: int = field(default=0, metadata={"help": "seed of the train/test split"})
    language: Optional[str] = field(default=None, metadata={
        "help": "language written on every line (e.g. English); omitted if unset"})
    tokenizer: str = field(default=audiofolder.DEFAULT_TOKENIZER, metadata={
        "help": "Whisper tokenizer used to count label tokens"})
    max_tokens: int = field(default=audiofolder.MAX_LABEL_TOKENS, metadata={
        "help": "leave out texts whose label is longer (0: no check)"})

    def __post_init__(self):
        if self.test_size is not None and (self.test_size < 0 or 1 < self.test_size != int(self.test_size)):
            raise UsageError(f"--test_size={self.test_size}: give a fraction in [0, 1) or a whole number "
                             "of items")
        if self.max_tokens < 0:
            raise UsageError(f"--max_tokens={self.max_tokens}: must not be negative (0: no check)")


def build(args: Arguments) -> None:
    print_config("create_audiofolder_data.py configuration", args)
    check_output_path(args.output_dir, "--output_dir", kind="dir")
    print(audiofolder.build(**asdict(args)))


def main(argv=None) -> int:
    args = parse_args(Arguments, argv, description=__doc__)
    return guarded(lambda: build(args))


if __name__ == "__main__":
    sys.exit(main())
