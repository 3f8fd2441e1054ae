"""Build WhisperDesktop with PyInstaller and prove the built executable works.

    python WhisperDesktop/verify_build.py            # exports whisper-base to GGML first if needed

A script rather than a test: the build takes minutes. Checks: the bundle carries no PyTorch,
transformers or CTranslate2; the executable, run from another folder, transcribes dataset/test.wav
to exactly the lines of an in-process whisper.cpp run; its window opens under Xvfb (when Xvfb and
xdotool are installed). Exit status 0 only when all hold, 1 when a check fails.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from utils.core.cli import guarded, parse_args, print_config  # noqa: E402
from utils.inference.registry import default_model  # noqa: E402

BUILT_APP = REPO / "WhisperDesktop" / "dist" / "WhisperDesktop" / "WhisperDesktop"
TEST_WAV = REPO / "dataset" / "test.wav"
LEFT_OUT = ("torch", "transformers", "huggingface_hub", "ctranslate2", "faster_whisper")


@dataclass
class VerifyArguments:
    model_path: str = field(default=default_model("ggml"), metadata={
        "help": "GGML model bundled into the app (a relative path is taken from the repository root); when "
                "missing, convert-ggml.py exports models/whisper-base to it first"})


def check(condition: bool, message: str) -> None:
    if not condition:
        sys.exit(f"FAILED: {message}")
    print(f"ok: {message}")


def bundled_packages() -> set[str]:
    """Top-level names of the Python modules in the built executable's archive."""
    from PyInstaller.archive.readers import CArchiveReader

    archive = CArchiveReader(str(BUILT_APP)).open_embedded_archive("PYZ.pyz")
    return {name.split(".")[0] for name in archive.toc}


def build(model: Path) -> None:
    if not model.exists():
        subprocess.run([sys.executable, str(REPO / "convert-ggml.py"), "--model_dir=models/whisper-base",
                        f"--output_path={model}"], check=True, cwd=REPO)
    started = time.monotonic()
    subprocess.run(["bash", str(REPO / "WhisperDesktop" / "build.sh"), str(model)], check=True, cwd=REPO,
                   env=dict(os.environ, PYTHON=sys.executable))   # build with the Python that checks
    print(f"build took {time.monotonic() - started:.0f} s")


def check_bundle() -> None:
    bundled = BUILT_APP.parent / "_internal"
    packed = bundled_packages() | {path.name.split("-")[0] for path in bundled.iterdir()}
    check(not packed & set(LEFT_OUT), f"the bundle holds none of {', '.join(LEFT_OUT)}")


def check_transcription(model: Path) -> None:
    from utils.inference.registry import load_transcriber
    from utils.inference.transcriber import TranscribeOptions

    with tempfile.TemporaryDirectory() as elsewhere:
        result = subprocess.run([str(BUILT_APP), f"--transcribe={TEST_WAV}", "--language=zh"],
                                cwd=elsewhere, capture_output=True, text=True, timeout=600)
    check(result.returncode == 0, f"the built app transcribes {TEST_WAV.name} (exit {result.returncode})")
    built = [line.split("] ", 1)[1] for line in result.stdout.splitlines()
             if line.startswith("[") and "] " in line]
    segments, _ = load_transcriber("ggml", str(model)).transcribe(str(TEST_WAV), TranscribeOptions(language="zh"))
    check(bool(built) and built == [segment.text for segment in segments],
          f"its lines equal an in-process whisper.cpp run: {built}")


def check_window() -> None:
    if not (shutil.which("Xvfb") and shutil.which("xdotool")):
        print("Xvfb/xdotool not installed: window check not run")
        return
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x800x24"],
                              pass_fds=(write_fd,), stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        env = dict(os.environ, DISPLAY=f":{pipe.readline().strip()}")
    app = subprocess.Popen([str(BUILT_APP)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        found = subprocess.run(["xdotool", "search", "--sync", "--name", "^WhisperDesktop$"],
                               env=env, capture_output=True, text=True, timeout=120)
        check(bool(found.stdout.split()) and app.poll() is None, "the WhisperDesktop window opens")
    finally:
        app.terminate()
        app.wait(30)
        server.terminate()
        server.wait(10)


def verify(args: VerifyArguments) -> None:
    print_config("verify_build.py configuration", args)
    model = REPO / args.model_path   # an absolute model_path stays as it is
    build(model)
    check_bundle()
    check_transcription(model)
    check_window()


def main(argv=None) -> int:
    args = parse_args(VerifyArguments, argv, description=__doc__)
    return guarded(lambda: verify(args))


if __name__ == "__main__":
    sys.exit(main())
