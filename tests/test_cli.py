"""The one command-line contract (utils/core/cli.py), on its own and on every script of the project."""
import functools
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest
from conftest import REPO

from utils.core.cli import guarded, parse_args
from utils.core.errors import EXIT_USAGE, UsageError, UserError

SCRIPTS = sorted(str(p.relative_to(REPO)) for pattern in ("*.py", "tools/*.py", "WhisperDesktop/*.py")
                 for p in REPO.glob(pattern))
# What --help must not pay for: each of these takes from a fraction of a second to several seconds to import.
HEAVY = ("torch", "transformers", "peft", "datasets", "accelerate", "ctranslate2", "faster_whisper",
         "fastapi", "uvicorn", "PySimpleGUI", "tkinter", "sounddevice", "pywhispercpp", "jiwer")


@dataclass
class Example:
    audio_path: str = field(metadata={"help": "audio file"})
    beam_size: int = field(default=1, metadata={"help": "beam width, 100 % greedy at 1", "aliases": ["--num_beams"]})
    language: Optional[str] = field(default="zh", metadata={"help": "language"})
    use_gpu: bool = field(default=False, metadata={"help": "GPU"})
    task: Literal["transcribe", "translate"] = field(default="transcribe", metadata={"help": "task"})
    ratio: Optional[float] = field(default=None, metadata={"help": "a number"})
    api_key: Optional[str] = field(default=None, metadata={"help": "key", "secret": True})
    vad: Optional[bool] = field(default=None, metadata={"help": "unset = decide from the other flags"})

    def __post_init__(self):
        if self.beam_size < 1:
            raise UsageError(f"--beam_size must be at least 1, got {self.beam_size}")


def test_flags_parse_as_the_original_project_writes_them():
    args = parse_args(Example, ["--audio_path=a.wav", "--num_beams", "3", "--language=None", "--use_gpu",
                                "--task=translate", "--ratio=0.5"])
    assert (args.audio_path, args.beam_size, args.language, args.use_gpu, args.task, args.ratio) == \
        ("a.wav", 3, None, True, "translate", 0.5)
    for spelling, value in (("True", True), ("false", False), ("1", True), ("no", False)):
        assert parse_args(Example, ["--audio_path=a", f"--use_gpu={spelling}"]).use_gpu is value
    assert parse_args(Example, ["--audio_path=a"]).language == "zh"
    # An Optional bool: alone True, a bool word, or None spelled None or auto (decide from the other flags).
    for spelling, value in (("", True), ("=False", False), ("=auto", None), ("=None", None), ("=AUTO", None)):
        assert parse_args(Example, ["--audio_path=a", f"--vad{spelling}"]).vad is value


@pytest.mark.parametrize("argv, message", [
    (["--audio_path=a", "--beam_sise=2"], "unknown flag --beam_sise; did you mean --beam_size?"),
    (["--audio_path=a", "--lang=en"], "unknown flag --lang; did you mean --language?"),   # no abbreviations
    (["--audio_path=a", "--zzz=1"], "unknown flag --zzz (see --help)"),
    (["--audio_path=a", "--beam_size=two"], "--beam_size: expected an integer, got 'two'"),
    (["--audio_path=a", "--use_gpu=maybe"], "--use_gpu: expected true or false, got 'maybe'"),
    (["--audio_path=a", "--vad=maybe"], "--vad: expected true or false, got 'maybe' (or auto)"),
    (["--audio_path=a", "--task=summarise"], "--task: invalid choice: 'summarise'"),
    (["--audio_path=a", "--beam_size=0"], "--beam_size must be at least 1, got 0"),
    ([], "the following arguments are required: --audio_path"),
])
def test_a_flag_mistake_is_one_sentence_and_status_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(Example, argv)
    assert exit_info.value.code == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_a_json_file_can_hold_the_whole_configuration(tmp_path, capsys):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"audio_path": "x.wav", "beam_size": 4, "language": None, "use_gpu": True}))
    args = parse_args(Example, [str(config)])
    assert (args.audio_path, args.beam_size, args.language, args.use_gpu) == ("x.wav", 4, None, True)
    config.write_text(json.dumps({"audio_path": "x.wav", "beem_size": 4}))
    with pytest.raises(SystemExit):
        parse_args(Example, [str(config)])
    assert "unknown flag --beem_size; did you mean --beam_size?" in capsys.readouterr().err


def test_guarded_turns_user_errors_into_one_line_and_keeps_bugs(capsys):
    def user_mistake():
        raise UserError("data/x.jsonl:3: missing field 'sentence'")

    assert guarded(user_mistake) == EXIT_USAGE
    assert capsys.readouterr().err == "error: data/x.jsonl:3: missing field 'sentence'\n"
    assert guarded(lambda: None) == 0 and guarded(lambda: 3) == 3
    with pytest.raises(ZeroDivisionError):
        guarded(lambda: 1 / 0)


def test_guarded_names_a_path_the_machine_refuses(tmp_path, capsys):
    import errno
    import os

    from utils.core.files import write_text_atomic

    (tmp_path / "a-file").write_text("x")
    assert guarded(lambda: write_text_atomic(tmp_path / "a-file" / "out.txt", "x")) == EXIT_USAGE
    assert capsys.readouterr().err == f"error: {tmp_path / 'a-file'}: File exists\n"

    def full_disk():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "output/checkpoint-best")

    assert guarded(full_disk) == EXIT_USAGE
    assert capsys.readouterr().err == "error: output/checkpoint-best: No space left on device\n"
    with pytest.raises(ConnectionResetError):   # not about a path of the user's: a bug, with its traceback
        guarded(lambda: (_ for _ in ()).throw(ConnectionResetError(errno.ECONNRESET, "reset")))


def test_print_config_and_help_hide_secrets(capsys):
    from utils.core.cli import build_parser, print_config

    @dataclass
    class WithKey:
        api_key: Optional[str] = field(default="from-the-environment", metadata={"help": "key", "secret": True})
        port: int = field(default=5000, metadata={"help": "port"})

    shown = build_parser(WithKey).format_help()
    assert "from-the-environment" not in shown and "(default: 5000)" in shown

    print_config("example", Example(audio_path="a.wav", api_key="hunter2"))
    out = capsys.readouterr().out
    assert "  api_key = '(set)'\n" in out and "hunter2" not in out and "  audio_path = 'a.wav'\n" in out


@functools.lru_cache(maxsize=None)
def run_help(script: str) -> subprocess.CompletedProcess:
    """`script --help` in a fresh interpreter; stderr's last line lists the heavy modules it imported."""
    code = ("import runpy, sys\n"
            f"sys.argv = [{script!r}, '--help']\n"
            "status = 0\n"
            "try:\n"
            f"    runpy.run_path({script!r}, run_name='__main__')\n"
            "except SystemExit as exc:\n"
            "    status = exc.code or 0\n"
            f"print('imported:', *sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
            "sys.exit(status)\n")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_every_script_is_covered():
    # A new script joins the contract by existing: this list is globbed, and these are its landmarks.
    for script in ("infer.py", "finetune.py", "aishell.py", "convert-ggml.py", "tools/demo.py",
                   "tools/create_wenetspeech_data.py", "WhisperDesktop/whisper_desktop.py"):
        assert script in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_is_complete_and_imports_no_engine(script):
    result = run_help(script)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: "), result.stdout[:300]
    assert result.stderr.strip().splitlines()[-1] == "imported:", result.stderr[-500:]
    # Every flag has its help text.
    flags = re.findall(r"^  (--\w+)(.*)$", result.stdout, flags=re.M)
    assert flags, result.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_mistyped_flag_names_the_closest_valid_one(script):
    flags = re.findall(r"^  (--\w{4,})", run_help(script).stdout, flags=re.M)
    flag = flags[-1]
    typo = flag[:-1]   # one letter missing, as typed in a hurry
    result = subprocess.run([sys.executable, script, f"{typo}=1"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == EXIT_USAGE, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines[0].startswith("error: ") and f"unknown flag {typo}" in lines[0], lines[0]
    assert "did you mean --" in lines[0], lines[0]
