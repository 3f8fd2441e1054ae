"""WhisperDesktop: runs on whisper.cpp without PyTorch, and its PyInstaller build works.

The PyInstaller build takes minutes on a small machine (measured: about 80 s of CPU, 4.5 min wall
time on two busy cores), so it is proven by the script WhisperDesktop/verify_build.py, not here.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from test_gui import dialogs, display  # noqa: F401  (fixtures: Xvfb and the dialog closer)

ENTRY = REPO / "WhisperDesktop" / "whisper_desktop.py"
BUILT_APP = REPO / "WhisperDesktop" / "dist" / "WhisperDesktop" / "WhisperDesktop"


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
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert "exit status 0" in result.stdout, result.stdout + result.stderr
    assert "torch imported: False" in result.stdout
    text = " ".join(transcript_lines(result.stdout))
    assert word_error_rate(sample["sentence"], text) <= 0.5, text
    srt_text = (tmp_path / (Path(sample["audio"]["path"]).stem + ".srt")).read_text(encoding="utf-8")
    assert text.strip() in " ".join(srt_text.split("\n"))


def test_desktop_window_on_ggml(ggml_model, tmp_path, display, dialogs):
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
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {missing}: GGML model file not found (make one with convert-ggml.py)"

    result = subprocess.run([sys.executable, str(ENTRY), "--output_format=srt"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--output_format only applies with --transcribe" in result.stderr


def test_spec_keeps_the_other_engines_out():
    spec = (REPO / "WhisperDesktop" / "WhisperDesktop.spec").read_text(encoding="utf-8")
    for module in ("torch", "ctranslate2", "faster_whisper", "utils.inference.backends.transformers", "utils.inference.backends.ct2"):
        assert f'"{module}"' in spec
