"""WhisperDesktop: runs on whisper.cpp without PyTorch, and its PyInstaller spec names the right modules.

The PyInstaller build itself takes minutes (docs/gui.md), so it is proven by the script
WhisperDesktop/verify_build.py, not here.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from test_gui import dialogs, display  # noqa: F401  (fixtures: Xvfb and the dialog closer)

pytestmark = pytest.mark.build

ENTRY = REPO / "WhisperDesktop" / "whisper_desktop.py"
BUILT_APP = REPO / "WhisperDesktop" / "dist" / "WhisperDesktop" / "WhisperDesktop"
# Left out of the app by the spec, so a GGML run must never import them.
LEFT_OUT = ("torch", "transformers", "huggingface_hub", "ctranslate2", "faster_whisper")


@pytest.fixture(scope="module")
def ggml_model(tmp_path_factory, whisper_base_dir) -> Path:
    """whisper-base exported by convert-ggml.py (the path a user takes)."""
    path = tmp_path_factory.mktemp("ggml") / "ggml-model.bin"
    subprocess.run([sys.executable, str(REPO / "convert-ggml.py"), f"--model_dir={whisper_base_dir}",
                    f"--output_path={path}"], check=True, cwd=REPO, capture_output=True, timeout=600)
    return path


def english_sample() -> dict:
    with open(REPO / "dataset" / "en_test.jsonl", encoding="utf-8") as file:
        return json.loads(file.readline())


def transcript_lines(stdout: str) -> list[str]:
    """The `[start - end] text` lines that the --transcribe mode prints."""
    return [line.split("] ", 1)[1] for line in stdout.splitlines() if line.startswith("[") and "] " in line]


def word_error_rate(reference: str, hypothesis: str) -> float:
    import jiwer

    def words(text):
        return " ".join("".join(c.lower() if c.isalnum() else " " for c in text).split())

    return jiwer.wer(words(reference), words(hypothesis))


def test_desktop_app_transcribes_without_torch(ggml_model, tmp_path):
    """The app's modules, the window's module and a GGML transcription leave PyTorch unimported."""
    sample = english_sample()
    script = (
        "import sys, runpy\n"
        f"sys.argv = ['WhisperDesktop', '--model_path={ggml_model}', "
        f"'--transcribe={REPO / sample['audio']['path']}', '--language=en', "
        f"'--output_format=srt', '--output_dir={tmp_path}']\n"
        "import utils.apps.gui\n"
        "try:\n"
        f"    runpy.run_path({str(ENTRY)!r}, run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    print('exit status', exit.code)\n"
        f"print('imported:', [m for m in {LEFT_OUT!r} if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert "exit status 0" in result.stdout, result.stdout + result.stderr
    assert "imported: []" in result.stdout
    text = " ".join(transcript_lines(result.stdout))
    assert word_error_rate(sample["sentence"], text) <= 0.5, text
    srt_text = (tmp_path / (Path(sample["audio"]["path"]).stem + ".srt")).read_text(encoding="utf-8")
    assert text.strip() in " ".join(srt_text.split("\n"))


@pytest.mark.gui
def test_desktop_window_on_ggml(ggml_model, tmp_path, display, dialogs):  # noqa: F811
    """WhisperDesktop's configuration of the window: GGML backend, its results shown line by line."""
    from test_gui import make_app, recognise

    from utils.inference.registry import load_transcriber
    from utils.inference.transcriber import TranscribeOptions

    sample = english_sample()
    path = str(REPO / sample["audio"]["path"])
    transcriber = load_transcriber("ggml", str(ggml_model))
    segments, _ = transcriber.transcribe(path, TranscribeOptions(language="en"))
    expected = [segment.text for segment in segments]
    app = make_app(tmp_path, transcriber, model_path=str(ggml_model), backend="ggml",
                   backend_options={}, settings={"language": "en", "title": "WhisperDesktop"})
    try:
        recognise(app, path)
        assert [line.split("] ", 1)[1] for line in app.output_text().splitlines()] == expected
        assert word_error_rate(sample["sentence"], " ".join(expected)) <= 0.5
        assert app.window.Title == "WhisperDesktop" and dialogs.seen == []
    finally:
        app.close()


def test_desktop_cli_errors_are_one_sentence(tmp_path):
    missing = tmp_path / "missing.bin"
    result = subprocess.run([sys.executable, str(ENTRY), f"--model_path={missing}",
                             f"--transcribe={REPO / 'dataset' / 'test.wav'}"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {missing}: GGML model file not found (make one with convert-ggml.py)"

    for argv, message in [(["--output_format=srt"], "--output_format only applies with --transcribe"),
                          (["--language=klingon", "--transcribe=x.wav"], "unknown language 'klingon'"),
                          (["--num_beam=2"], "unknown flag --num_beam; did you mean --num_beams?")]:
        result = subprocess.run([sys.executable, str(ENTRY), *argv],
                                cwd=REPO, capture_output=True, text=True, timeout=300)
        assert result.returncode == 2 and result.stderr.startswith("error: "), result.stderr
        assert result.stderr.count("\n") == 1 and message in result.stderr


def test_desktop_help_loads_no_toolkit_and_no_engine():
    heavy = ("PySimpleGUI", "tkinter", "sounddevice", "torch", "transformers", "pywhispercpp", "_pywhispercpp")
    script = ("import runpy, sys\n"
              "sys.argv = ['WhisperDesktop', '--help']\n"
              "try:\n"
              f"    runpy.run_path({str(ENTRY)!r}, run_name='__main__')\n"
              "except SystemExit as exit:\n"
              "    print('exit status', exit.code)\n"
              f"print('imported:', [m for m in {heavy!r} if m in sys.modules])\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert "--transcribe" in result.stdout and "exit status 0" in result.stdout, result.stdout + result.stderr
    assert "imported: []" in result.stdout


def spec_lists() -> dict[str, list[str]]:
    """The module lists the spec hands PyInstaller: EXCLUDES and HIDDEN_IMPORTS."""
    tree = ast.parse((REPO / "WhisperDesktop" / "WhisperDesktop.spec").read_text(encoding="utf-8"))
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id in ("EXCLUDES", "HIDDEN_IMPORTS")}


def test_spec_names_the_ggml_backend_and_keeps_the_other_engines_out():
    from utils.inference.registry import BACKENDS

    lists = spec_lists()
    excludes, hidden = lists["EXCLUDES"], lists["HIDDEN_IMPORTS"]
    # The registry imports backends by name, so the GGML one must be named; the others stay out.
    assert BACKENDS["ggml"].module in hidden
    for backend in BACKENDS.values():
        if backend.name != "ggml":
            assert backend.module in excludes
    assert [module for module in LEFT_OUT if module not in excludes] == []
    # Every module of ours the spec names exists: a moved module would otherwise be silently bundled
    # (an exclude) or missing from the app (a hidden import).
    ours = [name for name in excludes + hidden if name.split(".")[0] == "utils"]
    assert ours and [name for name in ours if importlib.util.find_spec(name) is None] == []
