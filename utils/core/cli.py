"""The one command-line contract of every script: flags from a dataclass, fast --help, one-sentence errors.

    @dataclass
    class Arguments:
        audio_path: str = field(metadata={"help": "audio or video file"})
        beam_size: int = field(default=1, metadata={"help": "beam width", "aliases": ["--num_beams"]})

    def main(argv=None) -> int:
        args = parse_args(Arguments, argv, description=__doc__)
        return guarded(lambda: work(args))

    if __name__ == "__main__":
        sys.exit(main())

Flags are written `--name=value` or `--name value` (the original project's habit) and a bool flag
alone means True. A mistyped flag names the closest valid one; a user mistake (UserError) ends in
one `error: ...` line; the exit statuses are those of utils.core.errors (guarded).

Our own instead of transformers' HfArgumentParser: importing transformers takes most of a second
(and torch with it), which every `--help` would pay; argparse is in the standard library.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import errno
import json
import os
import re
import sys
import types
import typing
from typing import Any, Callable, Optional, Sequence, TypeVar

from utils.core.errors import EXIT_INTERRUPTED, EXIT_USAGE, UsageError, UserError

T = TypeVar("T")

TRUE_WORDS = ("true", "yes", "y", "on", "1")
FALSE_WORDS = ("false", "no", "n", "off", "0")


def parse_bool(value: str) -> bool:
    """'True', 'yes', '1' -> True; 'False', 'no', '0' -> False (case-insensitive)."""
    lowered = str(value).strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _none_or(convert: Callable[[str], Any], *spellings: str) -> Callable[[str], Any]:
    # The original project writes --language=None for "not set"; an Optional flag takes that spelling
    # (and the `spellings` given, in lower case).
    def parse(value: str):
        if value.strip().lower() in ("none", *spellings):
            return None
        try:
            return convert(value)
        except argparse.ArgumentTypeError as exc:
            if not spellings:
                raise
            raise argparse.ArgumentTypeError(f"{exc} (or {' or '.join(spellings)})") from None

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _choice(choices: list) -> Callable[[str], Any]:
    """A str Literal's value, matched case-insensitively; where the choices hold "true" and "false", the words
    parse_bool takes (True, yes, 0, ...) mean those two."""
    def parse(value: str):
        lowered = value.strip().lower()
        if "true" in choices and "false" in choices:
            lowered = "true" if lowered in TRUE_WORDS else "false" if lowered in FALSE_WORDS else lowered
        matches = [c for c in choices if c.lower() == lowered]
        return matches[0] if matches else value

    parse.__name__ = "choice"
    return parse


def _unwrap_optional(annotation) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, getattr(types, "UnionType", typing.Union)):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _number(kind: type) -> Callable[[str], Any]:
    def parse(value: str):
        try:
            return kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {value!r}") from None

    parse.__name__ = kind.__name__
    return parse


def _add_field(parser: argparse.ArgumentParser, item: dataclasses.Field, hints: dict) -> None:
    annotation, optional = _unwrap_optional(hints[item.name])
    names = [f"--{item.name}", *item.metadata.get("aliases", ())]
    # argparse formats help texts with %, so a literal "50 %" must be escaped.
    kwargs: dict[str, Any] = {"dest": item.name, "help": item.metadata.get("help", "").replace("%", "%%")}
    if item.default is not dataclasses.MISSING:
        kwargs["default"] = item.default
    elif item.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        kwargs["default"] = item.default_factory()  # type: ignore[misc]
    else:
        kwargs["required"] = True
    if annotation is bool:
        # `--flag` alone is True; `--flag=False` (or no, 0) turns it off. An Optional bool's None is
        # "decide from the other flags" (its help says how), so it is also spelled auto.
        kwargs.update(type=_none_or(parse_bool, "auto") if optional else parse_bool, nargs="?", const=True,
                      metavar="BOOL")
    elif typing.get_origin(annotation) is typing.Literal:
        choices = list(typing.get_args(annotation))
        convert = _choice(choices) if isinstance(choices[0], str) else type(choices[0])
        kwargs.update(choices=choices + ([None] if optional else []),
                      type=_none_or(convert) if optional else convert,
                      metavar="{" + ",".join(map(str, choices)) + "}")
        if "true" in choices and "false" in choices:
            # A flag that was a bool before it gained "auto": `--flag` alone still means true.
            kwargs.update(nargs="?", const="true")
    elif annotation in (int, float):
        kwargs["type"] = _none_or(_number(annotation)) if optional else _number(annotation)
    elif annotation is str:
        kwargs["type"] = _none_or(str) if optional else str
    elif typing.get_origin(annotation) is list and typing.get_args(annotation) == (str,):
        # Several values after one flag (`--audio_path a.wav b.wav`), as openai-whisper's CLI takes files.
        kwargs.update(type=str, nargs="+")
    else:
        raise TypeError(f"field {item.name}: unsupported flag type {annotation!r}")
    if "choices" in item.metadata:
        kwargs["choices"] = list(item.metadata["choices"])
    action = parser.add_argument(*names, **kwargs)
    action.secret = bool(item.metadata.get("secret"))


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown after every flag's help, except a secret's (an API key from the environment)."""

    def _get_help_string(self, action):
        if getattr(action, "secret", False):
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error style: one `error:` sentence naming the flag, exit status 2,
    and for an unknown flag the closest valid one."""

    def error(self, message: str) -> typing.NoReturn:
        # argparse writes "argument --beam_size/--num_beams: ..."; the flag's own name says it.
        message = re.sub(r"^argument (--\w+)(?:/--\w+)*: ", r"\1: ", message)
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message} (see --help)\n")

    def flag_names(self) -> list[str]:
        return [name for action in self._actions for name in action.option_strings]

    def check_unknown(self, argv: Sequence[str]) -> None:
        known = set(self.flag_names())
        for token in argv:
            if token == "--":
                break
            if not token.startswith("--"):
                continue
            name = token.split("=", 1)[0]
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]}?" if close else ""
                self.error(f"unknown flag {name}{hint}")


def build_parser(config_class: type, *, description: Optional[str] = None,
                 prog: Optional[str] = None) -> ArgumentParser:
    """An ArgumentParser with one flag per field of the dataclass `config_class`."""
    parser = ArgumentParser(prog=prog or os.path.basename(sys.argv[0]), description=description,
                            formatter_class=_HelpFormatter, allow_abbrev=False)
    hints = typing.get_type_hints(config_class)
    for item in dataclasses.fields(config_class):
        if item.init:
            _add_field(parser, item, hints)
    return parser


def parse_args(config_class: type[T], argv: Optional[Sequence[str]] = None, *,
               description: Optional[str] = None) -> T:
    """Parse `argv` (default sys.argv[1:]) into an instance of the dataclass `config_class`.

    A single argument ending in .json is a file holding the whole configuration ({"flag": value}),
    as in the transformers examples. `__post_init__` of the dataclass may raise UsageError for a
    combination of flags that cannot work; it ends like any other flag mistake.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(config_class, description=_first_paragraph(description))
    if len(argv) == 1 and argv[0].endswith(".json") and not argv[0].startswith("-"):
        argv = _argv_from_json(parser, argv[0])
    parser.check_unknown(argv)
    # `--audio_path=a.wav b.wav`: the words after a many-valued flag's `=` form belong to it as well.
    many = {name for action in parser._actions if action.nargs == "+" for name in action.option_strings}
    argv = [part for token in argv
            for part in (token.split("=", 1) if token.split("=", 1)[0] in many else [token])]
    namespace = parser.parse_args(argv)
    try:
        return config_class(**vars(namespace))
    except UsageError as exc:
        parser.error(str(exc))


def _argv_from_json(parser: ArgumentParser, path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            values = json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        parser.error(f"cannot read the configuration file {path}: {exc}")
    if not isinstance(values, dict):
        parser.error(f"{path}: a configuration file holds one JSON object of flag: value")
    argv = []
    for name, value in values.items():
        # A list ("audio_path": ["a.wav", "b.wav"]) is the flag's several values.
        argv += [f"--{name}", *map(str, value)] if isinstance(value, list) else \
            [f"--{name}={'None' if value is None else value}"]
    return argv


def _first_paragraph(text: Optional[str]) -> Optional[str]:
    return text.strip().split("\n\n")[0] if text else None


def print_config(title: str, config: Any) -> None:
    """The effective configuration, one `name = value` line per flag, at the start of a run.

    Under torchrun/accelerate only rank 0 prints. Fields marked `metadata={"secret": True}` show
    "(set)" instead of their value."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    print(f"{title}:", flush=True)
    secret = {f.name for f in dataclasses.fields(config) if f.metadata.get("secret")} \
        if dataclasses.is_dataclass(config) else set()
    items = ({f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
             if dataclasses.is_dataclass(config) else dict(config))
    for name, value in items.items():
        shown = ("(set)" if value else None) if name in secret else value
        print(f"  {name} = {shown!r}", flush=True)


ENVIRONMENT_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                      errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG}


def guarded(run: Callable[[], Optional[int]]) -> int:
    """Run a script's work and return its exit status: 0, or what `run` returns. A UserError ends in
    one `error: ...` line on stderr and EXIT_USAGE, and so does an OSError about a path (a read-only
    output folder, a full disk, a file where a folder should be); Ctrl-C ends in EXIT_INTERRUPTED
    without a traceback; anything else is a bug and keeps its traceback.

    Every script ends the same way:

        def main(argv=None) -> int:
            args = parse_args(Arguments, argv, description=__doc__)
            return guarded(lambda: work(args))

        if __name__ == "__main__":
            sys.exit(main())
    """
    try:
        return run() or 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except OSError as exc:
        # A path the user gave that this machine refuses (read-only, full, not a folder, missing) is the
        # user's to fix, not a bug: one sentence naming the path.
        if exc.errno not in ENVIRONMENT_ERRNOS or not exc.filename:
            raise
        print(f"error: {exc.filename}: {exc.strerror}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
