"""Prepare AIShell-1 (openslr.org/33) as jsonlines manifests for fine-tuning.

Downloads data_aishell.tgz (resumable, MD5-checked) or takes a local copy, unpacks it and
its per-speaker archives, and writes <annotation_text>/train.json (train + dev) and
test.json, one JSON object per line. Re-running after an interruption skips what is
already unpacked; manifests are written beside and renamed, never left half-written.
The work is done by utils/data/builders/aishell.py.

  python aishell.py --filepath=/data/data_aishell.tgz
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from typing import Optional

from utils.core.cli import guarded, parse_args, print_config
from utils.core.files import check_output_path
from utils.data.builders import aishell


@dataclass
class Arguments:
    target_dir: str = field(default="dataset/audio/", metadata={
        "help": "where data_aishell.tgz is downloaded and unpacked (~35 GB free)"})
    annotation_text: str = field(default="dataset/", metadata={
        "help": "directory for train.json and test.json (and dev.json)"})
    filepath: Optional[str] = field(default=None, metadata={
        "help": "a local data_aishell.tgz to use instead of downloading"})
    url: str = field(default=aishell.DATA_URL, metadata={"help": "download address of data_aishell.tgz"})
    md5: str = field(default=aishell.DATA_MD5, metadata={"help": "expected MD5 of the download"})
    dev_separately: bool = field(default=False, metadata={
        "help": "write dev.json instead of adding dev to train.json"})
    add_pun: bool = field(default=False, metadata={
        "help": "restore punctuation with ModelScope's model (needs modelscope)"})


def prepare(args: Arguments) -> None:
    print_config("aishell.py configuration", args)
    check_output_path(args.target_dir, "--target_dir", kind="dir")
    check_output_path(args.annotation_text, "--annotation_text", kind="dir")
    print(aishell.prepare(**asdict(args)))


def main(argv=None) -> int:
    args = parse_args(Arguments, argv, description=__doc__)
    return guarded(lambda: prepare(args))


if __name__ == "__main__":
    sys.exit(main())
