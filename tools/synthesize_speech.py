"""Text lines -> speech with espeak-ng, resampled to 16 kHz, with clause-level timestamps.

Each line is split into clauses at punctuation; every clause is synthesized on its own and
the pieces are concatenated with short pauses, so the clause times in `sentences` are exact
(no forced alignment needed). Mandarin goes to espeak-ng as pinyin with tone numbers
(voice cmn-latn-pinyin), because its character reader mispronounces much of the text.
The work is done by utils/data/builders/synthetic.py.

  clips          one clip per line -> audio files + a jsonlines manifest
  long           all lines into one recording (several voices and rates) + reference text
  sample-corpus  regenerate the sample data shipped in dataset/ (deterministic, seeded)
  more-train     more readings of the sample corpus's training sentences, in training voices only

--help lists every command's flags, `<command> --help` one command's. Examples:
  python tools/synthesize_speech.py clips --text_file=tools/sentences_en.txt \\
      --language=English --output_dir=data/en --manifest=data/en.jsonl
  python tools/synthesize_speech.py sample-corpus --output_dir=dataset
"""
from __future__ import annotations

import difflib
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Literal, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.core.cli import build_parser, guarded, parse_args, print_config  # noqa: E402
from utils.core.errors import EXIT_USAGE, UsageError  # noqa: E402
from utils.data.builders import synthetic  # noqa: E402

VOICE_HELP = {
    "variants": "comma-separated espeak-ng voice variants (see `espeak-ng --voices=variant`); "
                "'default' = base voice",
    "rates": "comma-separated speaking rates (espeak -s, words per minute)",
    "pitches": "comma-separated pitches (0-99)",
}


def voice_field(name: str, default: str):
    return field(default=default, metadata={"help": VOICE_HELP[name]})


def check_not_negative(args, *names: str) -> None:
    for name in names:
        if getattr(args, name) < 0:
            raise UsageError(f"--{name}={getattr(args, name)}: must not be negative")


@dataclass(kw_only=True)
class VoiceArguments:
    text_file: str = field(metadata={"help": "UTF-8 text, one utterance per line; '#' lines are comments. "
                                             "Mandarin in Chinese characters (no digits)"})
    language: Literal["Chinese", "English"] = field(default="Chinese", metadata={
        "help": "language of the text; also written to each manifest line"})
    variants: str = voice_field("variants", "m1,m3,f2,f4")
    rates: str = voice_field("rates", "140,170")
    pitches: str = voice_field("pitches", "40,60")
    seed: int = field(default=0, metadata={"help": "seed for voice choice and pauses"})


@dataclass(kw_only=True)
class ClipsArguments(VoiceArguments):
    """One clip per line + a jsonlines manifest."""
    output_dir: str = field(metadata={"help": "directory for the audio clips"})
    manifest: str = field(metadata={"help": "jsonlines file to write"})
    prefix: str = field(default="clip", metadata={"help": "clip file names: <prefix>_0001.<ext>"})
    audio_format: Literal["flac", "wav"] = field(default="flac", metadata={
        "help": "clip file format (16 kHz mono 16-bit)"})
    bits: int = field(default=16, metadata={"help": "sample resolution kept (below 16 shrinks FLAC files)",
                                            "choices": range(8, 17)})
    no_speech: int = field(default=0, metadata={"help": "also write this many no-speech clips (sentence \"\")"})

    def __post_init__(self):
        check_not_negative(self, "no_speech")


@dataclass(kw_only=True)
class LongArguments(VoiceArguments):
    """All lines into one long recording + its reference text."""
    variants: str = voice_field("variants", "m3,f2,m1,f4")
    rates: str = voice_field("rates", "145,170")
    pitches: str = voice_field("pitches", "45,60")
    output: str = field(metadata={"help": "audio file (.wav or .flac)"})
    reference: Optional[str] = field(default=None, metadata={
        "help": "reference text file, one line per utterance (default: the output path with .txt)"})


@dataclass(kw_only=True)
class CorpusSplitArguments:
    sentences_zh: str = field(default=synthetic.SENTENCES_ZH, metadata={
        "help": "Mandarin sentences, one per line (more-train: as for sample-corpus)"})
    num_test: int = field(default=synthetic.CORPUS_NUM_TEST, metadata={
        "help": "Mandarin test-split lines (more-train: as for sample-corpus)"})
    num_long: int = field(default=synthetic.CORPUS_NUM_LONG, metadata={
        "help": "Mandarin lines read in test_long.wav, about 3 minutes (more-train: as for sample-corpus)"})
    seed: int = field(default=synthetic.CORPUS_SEED, metadata={
        "help": "seed for splits, voices, pauses (more-train: as for sample-corpus)"})

    def __post_init__(self):
        check_not_negative(self, "num_test", "num_long")


@dataclass(kw_only=True)
class SampleCorpusArguments(CorpusSplitArguments):
    """Regenerate the sample data in dataset/."""
    output_dir: str = field(default=synthetic.CORPUS_DIR, metadata={
        "help": "where test.wav, test_long.wav, the jsonl files and audio/ go"})
    sentences_en: str = field(default=synthetic.SENTENCES_EN, metadata={
        "help": "English sentences for en_test.jsonl"})
    no_speech_train: int = field(default=6, metadata={"help": "no-speech clips in the training split"})
    no_speech_test: int = field(default=2, metadata={"help": "no-speech clips in the test split"})

    def __post_init__(self):
        super().__post_init__()
        check_not_negative(self, "no_speech_train", "no_speech_test")


@dataclass(kw_only=True)
class MoreTrainArguments(CorpusSplitArguments):
    """More readings of the sample corpus's training sentences, in training voices only (the split
    flags must match the sample corpus's)."""
    output_dir: str = field(metadata={"help": "directory for the audio clips"})
    manifest: str = field(metadata={"help": "jsonlines file to write"})
    readings: int = field(default=2, metadata={"help": "readings of every training sentence"})
    prefix: str = field(default="zh_train_more", metadata={"help": "clip file names: <prefix>_0001.flac"})
    voice_seed: int = field(default=1, metadata={
        "help": "seed for the voices and pauses of the new readings (the sample corpus used --seed)"})

    def __post_init__(self):
        super().__post_init__()
        if self.readings < 1:
            raise UsageError(f"--readings={self.readings}: must be at least 1")


COMMANDS = {"clips": (ClipsArguments, synthetic.make_clips), "long": (LongArguments, synthetic.make_long),
            "sample-corpus": (SampleCorpusArguments, synthetic.build_sample_corpus),
            "more-train": (MoreTrainArguments, synthetic.build_more_train)}


def full_help() -> str:
    """The description, then every command's flags: one --help shows all of them."""
    parts = [f"usage: synthesize_speech.py {{{','.join(COMMANDS)}}} [flags]\n\n{__doc__.strip()}\n"]
    for name, (arguments, _) in COMMANDS.items():
        parts.append(build_parser(arguments, description=arguments.__doc__,
                                  prog=f"synthesize_speech.py {name}").format_help())
    return "\n".join(parts)


def not_a_command(first: str) -> str:
    """The one-line mistake for a first argument that is not a command (a flag typed first, or a typo)."""
    names = ", ".join(COMMANDS)
    if first.startswith("--"):
        flag = first.split("=", 1)[0]
        flags = sorted({f for arguments, _ in COMMANDS.values() for f in build_parser(arguments).flag_names()})
        if flag not in flags:
            close = difflib.get_close_matches(flag, flags, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            return f"unknown flag {flag}{hint} (and a command comes first: {names}; see --help)"
    close = difflib.get_close_matches(first, COMMANDS, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"the first argument is the command, one of {names}; got {first!r}{hint} (see --help)"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else ""
    if command in ("-h", "--help"):
        print(full_help())
        return 0
    if command not in COMMANDS:
        print(f"error: synthesize_speech.py: {not_a_command(command)}", file=sys.stderr)
        return EXIT_USAGE
    arguments, work = COMMANDS[command]
    args = parse_args(arguments, argv[1:], description=arguments.__doc__)

    def run() -> None:
        print_config(f"synthesize_speech.py {command} configuration", args)
        print(work(**asdict(args)))

    return guarded(run)


if __name__ == "__main__":
    sys.exit(main())
