"""The desktop window under Xvfb: a real PySimpleGUI window, a real faster-whisper model, real dialogs.

Dialogs are closed the way a user closes them: xdotool finds the window by its title and clicks OK.
"""
from __future__ import annotations

import atexit
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

# Xvfb and xdotool come with `make system-deps`; without them these tests fail (they are never skipped).
pytestmark = pytest.mark.gui

EN_MANIFEST = REPO / "dataset" / "en_test.jsonl"
CT2_MODEL = REPO / "models" / "whisper-base-ct2"


def en_samples(count: int = 2) -> list[dict]:
    with open(EN_MANIFEST, encoding="utf-8") as file:
        return [json.loads(line) for line in file][:count]


def words(text: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() or c.isspace() else " " for c in text).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    import jiwer

    return jiwer.wer(" ".join(words(reference)), " ".join(words(hypothesis)))


# espeak-ng's voice through whisper-base int8 gives e.g. "The train to airport in every 20 minutes."
# for "... the airport leaves every twenty minutes.": the window must show exactly what the model
# yields (checked against a direct call), and that must be recognisably the sentence.
MAX_WER = 0.5


def direct_texts(transcriber, path, **options) -> list[str]:
    from utils.inference.transcriber import TranscribeOptions

    segments, _ = transcriber.transcribe(str(path), TranscribeOptions(**options))
    return [segment.text.strip() for segment in segments]


_XVFB: list = []


def start_xvfb() -> str:
    """One private X server for the whole test process (-displayfd picks a free number).

    Tk (through PySimpleGUI's hidden root window) stays connected to the first display it
    opened; stopping that server before the process ends would kill the process."""
    if not _XVFB:
        read_fd, write_fd = os.pipe()
        server = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x800x24",
                                   "-nolisten", "tcp"], pass_fds=(write_fd,),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            number = pipe.readline().strip()
        assert number, "Xvfb did not start"
        atexit.register(server.terminate)
        _XVFB.append(f":{number}")
    os.environ["DISPLAY"] = _XVFB[0]
    return _XVFB[0]


@pytest.fixture
def display():
    return start_xvfb()


class DialogCloser:
    """Watches for our dialogs ("Whisper: ...") and clicks their OK button, centred at the bottom."""

    def __init__(self):
        self.seen: list[str] = []
        self._clicked: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _xdotool(self, *args: str) -> str:
        return subprocess.run(["xdotool", *args], capture_output=True, text=True, timeout=10).stdout

    def _watch(self) -> None:
        while not self._stop.is_set():
            for window_id in self._xdotool("search", "--onlyvisible", "--name", "^Whisper: ").split():
                title = self._xdotool("getwindowname", window_id).strip()
                geometry = dict(line.split("=") for line in
                                self._xdotool("getwindowgeometry", "--shell", window_id).split())
                width, height = int(geometry["WIDTH"]), int(geometry["HEIGHT"])
                # Noted before the click: the click releases the test's main thread.
                if window_id not in self._clicked:
                    self._clicked.add(window_id)
                    self.seen.append(title)
                time.sleep(0.3)   # let Tk finish drawing before the click
                self._xdotool("mousemove", "--window", window_id, str(width // 2), str(height - 18),
                              "click", "1")
            self._stop.wait(0.2)

    def close(self):
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def dialogs(display):
    closer = DialogCloser()
    yield closer
    closer.close()


@pytest.fixture(scope="module")
def ct2_transcriber():
    from utils.inference.registry import load_transcriber

    if not (CT2_MODEL / "model.bin").exists():
        pytest.fail(f"{CT2_MODEL} is missing: run `make models`")
    return load_transcriber("ct2", str(CT2_MODEL), compute_type="int8")


def make_app(tmp_path, transcriber=None, **kwargs):
    from utils.apps.gui import GuiSettings, WhisperWindow

    settings = GuiSettings(model_path=kwargs.pop("model_path", str(CT2_MODEL)),
                           backend=kwargs.pop("backend", "ct2"),
                           backend_options=kwargs.pop("backend_options", {"compute_type": "int8"}),
                           record_dir=str(tmp_path / "record"), **kwargs.pop("settings", {}))
    factory = (lambda: transcriber) if transcriber is not None else None
    return WhisperWindow(settings, transcriber_factory=factory, **kwargs)


# Deadlines only catch a hang; they are minutes, far beyond a recognition on a loaded 2-core machine.
DEADLINE = 300.0


def pump(app, until, timeout: float = DEADLINE) -> int:
    """Run the event loop until `until()`; returns the number of loop turns it took."""
    deadline = time.monotonic() + timeout
    turns = 0
    while not until():
        assert time.monotonic() < deadline, f"timed out; status: {app.window['-STATUS-'].get()}"
        assert app.step(timeout=50), "window closed unexpectedly"
        turns += 1
    return turns


def recognise(app, path: str, **values) -> None:
    from utils.apps import gui

    app.window[gui.K_FILE].update(path)
    for key, value in values.items():
        app.window[key].update(value)
    app.window.write_event_value(gui.K_RECOGNISE, None)
    pump(app, lambda: app.busy is not None)
    pump(app, lambda: app.busy is None)


class GatedTranscriber:
    """A real transcriber whose recognition, after its first segment, waits for `release`: the test
    decides when the recognition ends, so it can act on the window while one is under way."""

    def __init__(self, inner):
        self.inner = inner
        self.first_segment_out = threading.Event()
        self.release = threading.Event()

    def transcribe(self, audio, options):
        segments, info = self.inner.transcribe(audio, options)

        def gated():
            for number, segment in enumerate(segments):
                if number == 1:
                    self.release.wait(DEADLINE)
                yield segment
                self.first_segment_out.set()
            self.release.wait(DEADLINE)

        return gated(), info


def test_file_recognition_shows_segments_saves_srt_and_copies(tmp_path, display, dialogs,
                                                             ct2_transcriber, artifacts_dir):
    import srt
    from PIL import ImageGrab

    from utils.apps import gui

    sample = en_samples(1)[0]
    gated = GatedTranscriber(ct2_transcriber)
    app = make_app(tmp_path, gated)
    try:
        app.window[gui.K_FILE].update(str(REPO / sample["audio"]["path"]))
        app.window.write_event_value(gui.K_RECOGNISE, None)
        pump(app, lambda: app.busy is not None)
        # Mid-recognition (the worker holds the next segment until released) the window still
        # handles what the user does: the segment so far is shown, and Copy copies it.
        pump(app, lambda: gated.first_segment_out.is_set() and bool(app.output_text()))
        app.window.write_event_value(gui.K_COPY, None)
        pump(app, lambda: app.window[gui.K_STATUS].get().startswith("Copied"))
        assert app.busy is not None, "the recognition ended before the window handled Copy"
        import PySimpleGUI as sg
        assert sg.clipboard_get() == app.output_text()
        gated.release.set()
        pump(app, lambda: app.busy is None)

        shown = app.output_text()
        # Timestamped lines in the terminal's style (infer.py): "[0.00 - 3.00] text".
        lines = shown.splitlines()
        assert lines and all(re.match(r"\[\d+\.\d\d - \d+\.\d\d\] \S", line) for line in lines), shown
        texts = [line.split("] ", 1)[1] for line in lines]
        assert texts == direct_texts(ct2_transcriber, REPO / sample["audio"]["path"])
        text = " ".join(texts)
        assert word_error_rate(sample["sentence"], text) <= MAX_WER, text
        assert app.window[gui.K_PROGRESS].TKProgressBar.TKProgressBarForReal["value"] == gui.PROGRESS_STEPS
        assert app.window[gui.K_STATUS].get().startswith("Done:")

        app.window.refresh()   # draw the final state before the picture is taken
        shot = ImageGrab.grab(xdisplay=display)
        shot.save(artifacts_dir / "gui_window.png")
        assert len(shot.convert("L").getcolors(maxcolors=1 << 16) or ()) > 10   # a drawn window, not a blank screen

        app.window.write_event_value(gui.K_SAVE_PATH, str(tmp_path / "result.srt"))
        pump(app, lambda: (tmp_path / "result.srt").exists())
        cues = list(srt.parse((tmp_path / "result.srt").read_text(encoding="utf-8")))
        assert [c.content for c in cues] == [s.text.strip() for s in app.segments]
        assert cues[0].start.total_seconds() == pytest.approx(app.segments[0].start, abs=0.001)
        assert cues[-1].end.total_seconds() <= sample["duration"] + 0.5

        app.window[gui.K_JOIN].update(True)
        app.window.write_event_value(gui.K_JOIN, True)
        pump(app, lambda: not app.output_text().startswith("["))
        assert app.output_text() == text.strip()
        app.window.write_event_value(gui.K_COPY, None)
        pump(app, lambda: sg.clipboard_get() == text.strip())
        assert dialogs.seen == []
    finally:
        gated.release.set()
        app.close()


def test_infer_gui_script_opens_the_window(display):
    """`python infer_gui.py ...` prints its configuration and shows the window (closed by SIGTERM)."""
    process = subprocess.Popen([sys.executable, str(REPO / "infer_gui.py"), "--backend=ct2",
                                f"--model_path={CT2_MODEL}", "--compute_type=int8", "--language=en"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        found = subprocess.run(["xdotool", "search", "--sync", "--name", "^Whisper$"],
                               capture_output=True, text=True, timeout=DEADLINE)
        assert found.stdout.split(), "the window did not appear"
        assert process.poll() is None
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert "infer_gui.py configuration:" in output and "backend = 'ct2'" in output
    assert "Traceback" not in output


def gui_settings(*argv: str):
    """infer_gui.py's window settings for a command line, as its main() makes them."""
    import infer_gui
    from utils.core.cli import parse_args

    return infer_gui.settings_from(parse_args(infer_gui.GuiArguments, list(argv)))


def test_flags_reach_the_backend_through_the_registry(whisper_base_dir):
    from utils.inference.registry import BACKEND_NAMES, default_model

    # auto: the backend is what --model_path holds; unset, the first registered backend's default model.
    assert gui_settings(f"--model_path={CT2_MODEL}").backend == "ct2"
    assert gui_settings(f"--model_path={whisper_base_dir}").backend == "transformers"
    unset = gui_settings()
    assert (unset.backend, unset.model_path) == (BACKEND_NAMES[0], default_model(BACKEND_NAMES[0]))
    assert gui_settings("--backend=ggml").model_path == default_model("ggml")
    # The original project's names: --beam_size is --num_beams, --use_int8 an int8 compute type on ct2.
    mapped = gui_settings("--backend=ct2", "--use_int8", "--beam_size=3")
    assert mapped.backend_options == {"compute_type": "int8"} and mapped.beam_size == 3
    # The original project's --batch_size and --use_compile now work where the backend has them.
    assert gui_settings("--backend=transformers", "--batch_size=4", "--use_compile").backend_options == \
        {"batch_size": 4, "use_compile": True}
    assert gui_settings("--backend=ct2", "--batch_size=8", "--cpu_threads=2").backend_options == \
        {"batch_size": 8, "cpu_threads": 2}
    # The transformers backend's precision is compute_type too; the backend checks the value when it loads.
    assert gui_settings("--backend=transformers", "--compute_type=bfloat16").backend_options == \
        {"compute_type": "bfloat16"}
    assert gui_settings("--backend=transformers", "--use_int8").backend_options == {"use_int8": True}
    # The original project's speculative decoding and attention flags reach the transformers backend.
    assert gui_settings("--backend=transformers", f"--assistant_model_path={whisper_base_dir}",
                        "--attn_implementation=eager").backend_options == \
        {"assistant_model_path": str(whisper_base_dir), "attn_implementation": "eager"}


@pytest.mark.parametrize("argv, message", [
    (["--backend=ct2", "--num_workers=2"], "one recognition at a time"),
    (["--num_beams=0"], "--num_beams must be at least 1"),
    (["--backend=ggml", "--use_int8"], "--use_int8 applies only to --backend=transformers or ct2, not ggml"),
    (["--backend=ct2", "--use_int8", "--compute_type=float32"], "contradict"),
    (["--backend=ggml", "--batch_size=2"], "--batch_size applies only to --backend=transformers or ct2, not ggml"),
    (["--backend=ct2", "--use_compile"], "--use_compile applies only to --backend=transformers, not ct2"),
    (["--backend=ct2", "--assistant_model_path=models/whisper-base"],
     "--assistant_model_path applies only to --backend=transformers, not ct2"),
    (["--use_bettertransformer"], "--use_bettertransformer: optimum's BetterTransformer is obsolete"),
    (["--use_flash_attention_2"], "--use_flash_attention_2: flash_attention_2 needs a CUDA GPU (--use_gpu)"),
    (["--backend=ggml", "--use_gpu"], "--use_gpu applies only to --backend=transformers or ct2, not ggml"),
    (["--backend=transformers", "--vad_filter"], "--vad_filter applies only to --backend=ct2, not transformers"),
    (["--backend=ct2", "--language=klingon"], "unknown language 'klingon'"),
    (["--backend=ct2", "--beam_sise=2"], "unknown flag --beam_sise; did you mean --beam_size?"),
])
def test_flag_mistakes_end_in_one_sentence_and_status_2(argv, message, capsys):
    import infer_gui

    try:
        status = infer_gui.main(argv)
    except SystemExit as exit:   # a mistake in the flags themselves ends while parsing
        status = exit.code
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err


def test_help_loads_no_toolkit_and_no_engine():
    """--help is instant: neither Tk/PySimpleGUI nor any inference engine is imported for it."""
    heavy = ("PySimpleGUI", "tkinter", "sounddevice", "torch", "transformers", "ctranslate2",
             "faster_whisper", "pywhispercpp")
    script = ("import runpy, sys\n"
              "sys.argv = ['infer_gui.py', '--help']\n"
              "try:\n"
              f"    runpy.run_path({str(REPO / 'infer_gui.py')!r}, run_name='__main__')\n"
              "except SystemExit as exit:\n"
              "    print('exit status', exit.code)\n"
              f"print('imported:', [m for m in {heavy!r} if m in sys.modules])\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=DEADLINE)
    assert "--batch_size" in result.stdout and "exit status 0" in result.stdout, result.stdout + result.stderr
    assert "imported: []" in result.stdout


def test_segments_appear_one_by_one(tmp_path, display, dialogs, ct2_transcriber):
    from utils.apps import gui
    from utils.core.audio import SAMPLE_RATE, load_audio, save_wav

    samples = en_samples(3)
    pause = np.zeros(SAMPLE_RATE, dtype=np.float32)
    audio = np.concatenate([part for s in samples for part in (load_audio(REPO / s["audio"]["path"]), pause)])
    path = tmp_path / "three_sentences.wav"
    save_wav(path, audio)
    app = make_app(tmp_path, ct2_transcriber)
    try:
        app.window[gui.K_FILE].update(str(path))
        app.window.write_event_value(gui.K_RECOGNISE, None)
        pump(app, lambda: app.busy is not None)
        line_counts = []
        pump(app, lambda: line_counts.append(len(app.output_text().splitlines())) or app.busy is None)
        final = app.output_text().splitlines()
        assert len(final) >= 2, final
        # Every intermediate count was seen: the text grew one segment at a time.
        assert sorted(set(line_counts)) == list(range(len(final) + 1))
        text = " ".join(line.split("] ", 1)[1] for line in final)
        assert word_error_rate(" ".join(s["sentence"] for s in samples), text) <= MAX_WER, text
    finally:
        app.close()


def test_without_a_display_infer_gui_says_so():
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    result = subprocess.run([sys.executable, str(REPO / "infer_gui.py"), "--backend=ct2",
                             f"--model_path={CT2_MODEL}"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=DEADLINE)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: cannot open a window (no display name")
    assert "Traceback" not in result.stderr


def test_without_tk_infer_gui_says_so(tmp_path):
    # A Python built without Tk: its _tkinter import fails like this one.
    (tmp_path / "_tkinter.py").write_text(
        'raise ModuleNotFoundError("No module named \'_tkinter\'", name="_tkinter")\n')
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    result = subprocess.run([sys.executable, str(REPO / "infer_gui.py")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=DEADLINE)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: this Python has no Tk support (tkinter)")


def test_second_request_while_busy_is_refused(tmp_path, display, dialogs, ct2_transcriber):
    from utils.apps import gui

    first, second = en_samples(2)
    gated = GatedTranscriber(ct2_transcriber)
    app = make_app(tmp_path, gated)
    try:
        app.window[gui.K_FILE].update(str(REPO / first["audio"]["path"]))
        app.window.write_event_value(gui.K_RECOGNISE, None)
        pump(app, lambda: gated.first_segment_out.is_set() and bool(app.segments))
        app.window[gui.K_FILE].update(str(REPO / second["audio"]["path"]))
        app.window.write_event_value(gui.K_RECOGNISE, None)
        pump(app, lambda: app.window[gui.K_STATUS].get().startswith("Still"))
        assert "please wait" in app.window[gui.K_STATUS].get()
        gated.release.set()
        pump(app, lambda: app.busy is None)
        # Only the first file was recognised.
        assert [s.text.strip() for s in app.segments] == \
            direct_texts(ct2_transcriber, REPO / first["audio"]["path"])
        assert dialogs.seen == []
    finally:
        gated.release.set()
        app.close()


def test_closing_while_recognising_is_quiet(tmp_path, display, dialogs, ct2_transcriber, capfd):
    from utils.apps import gui

    gated = GatedTranscriber(ct2_transcriber)
    app = make_app(tmp_path, gated)
    app.window[gui.K_FILE].update(str(REPO / en_samples(1)[0]["audio"]["path"]))
    app.window.write_event_value(gui.K_RECOGNISE, None)
    pump(app, lambda: gated.first_segment_out.is_set())
    app.close()   # mid-recognition: the worker still has segments to hand over
    gated.release.set()
    for worker in [t for t in threading.enumerate() if t.name == "whisper-recognition"]:
        worker.join(60)
        assert not worker.is_alive()
    assert "Traceback" not in capfd.readouterr().err


def test_traditional_to_simplified_toggle(tmp_path, display, dialogs):
    import zhconv

    from utils.apps import gui
    from utils.inference.transcriber import Segment

    app = make_app(tmp_path, model_path=str(tmp_path / "unused"))
    try:
        # Whisper often writes Mandarin in traditional characters; the display and saved files follow the box.
        # The box starts checked, as in the original project and on the web page.
        app.segments = [Segment(0.0, 2.0, "這是一個測試。"), Segment(2.0, 4.0, "我們會說話。")]
        app.render()
        assert app.window[gui.K_SIMPLIFY].get() is True
        assert app.output_text() == "[0.00 - 2.00] 这是一个测试。\n[2.00 - 4.00] 我们会说话。"
        written = app.save(str(tmp_path / "zh.txt"))
        assert Path(written).read_text(encoding="utf-8").split() == \
            [zhconv.convert(s.text, "zh-cn") for s in app.segments]
        app.window[gui.K_SIMPLIFY].update(False)
        app.window.write_event_value(gui.K_SIMPLIFY, False)
        pump(app, lambda: "這是一個測試" in app.output_text())
        assert "們會說話" in app.output_text()
    finally:
        app.close()


class FileInputStream:
    """Stands in for sounddevice.InputStream: calls back with blocks of a known recording from
    its own thread, as PortAudio does, at `speed` times real time."""

    def __init__(self, audio, samplerate, channels=1, dtype="float32", callback=None,
                 blocksize=4800, speed=4.0):
        from utils.core.audio import resample

        self.audio = resample(audio, 16000, samplerate)
        self.channels, self.callback, self.blocksize = channels, callback, blocksize
        self.delay = blocksize / samplerate / speed
        self.fed = 0
        self.running = threading.Event()
        self.thread = None

    def _feed(self):
        while self.running.is_set() and self.fed < len(self.audio):
            block = self.audio[self.fed:self.fed + self.blocksize]
            self.callback(np.repeat(block[:, None], self.channels, axis=1), len(block), None, None)
            self.fed += len(block)
            time.sleep(self.delay)

    def start(self):
        self.running.set()
        self.thread = threading.Thread(target=self._feed, daemon=True)
        self.thread.start()

    def stop(self):
        self.running.clear()
        self.thread.join()

    def close(self):
        pass


def test_recorder_resamples_a_fake_device_stream():
    from utils.apps.recorder import Recorder
    from utils.core.audio import SAMPLE_RATE, load_audio

    sample = en_samples(1)[0]
    audio = load_audio(REPO / sample["audio"]["path"])
    streams = []

    def factory(**kwargs):
        streams.append(FileInputStream(audio, speed=20.0, **kwargs))
        return streams[-1]

    recorder = Recorder(stream_factory=factory, sample_rate=48000)   # a typical device rate
    recorder.start()
    deadline = time.monotonic() + DEADLINE
    while streams[0].fed < len(streams[0].audio):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    recorded = recorder.stop()
    assert not recorder.recording and recorder.elapsed > 0
    assert abs(len(recorded) - len(audio)) <= SAMPLE_RATE // 100
    correlation = np.corrcoef(recorded[:len(audio)], audio[:len(recorded)])[0, 1]
    assert correlation > 0.99


def test_record_then_recognise(tmp_path, display, dialogs, ct2_transcriber):
    from utils.apps import gui
    from utils.apps.recorder import Recorder
    from utils.core.audio import audio_duration, load_audio

    sample = en_samples(2)[1]
    audio = load_audio(REPO / sample["audio"]["path"])
    streams = []

    def factory(**kwargs):
        streams.append(FileInputStream(audio, **kwargs))
        return streams[-1]

    app = make_app(tmp_path, ct2_transcriber,
                   recorder_factory=lambda: Recorder(stream_factory=factory, sample_rate=44100))
    try:
        app.window.write_event_value(gui.K_RECORD, None)
        pump(app, lambda: bool(streams) and streams[0].fed >= len(streams[0].audio))
        assert app.window[gui.K_RECORD].get_text() == "Stop recording"
        assert app.window[gui.K_ELAPSED].get() >= "00:00.5"   # the clock ran while recording
        app.window.write_event_value(gui.K_RECORD, None)
        pump(app, lambda: app.busy is not None)
        pump(app, lambda: app.busy is None)
        saved = list((tmp_path / "record").glob("*.wav"))
        assert [str(p) for p in saved] == [app.last_recording]
        assert app.window[gui.K_FILE].get() == app.last_recording
        assert audio_duration(saved[0]) == pytest.approx(sample["duration"], abs=0.05)
        text = " ".join(s.text for s in app.segments)
        assert word_error_rate(sample["sentence"], text) <= MAX_WER, text
        assert dialogs.seen == []
    finally:
        app.close()


def test_no_microphone_dialog(tmp_path, display, dialogs):
    import sounddevice

    from utils.apps import gui

    try:
        sounddevice.query_devices(kind="input")
        pytest.skip("this machine has a microphone; the no-microphone dialog cannot appear")
    except Exception:
        pass
    app = make_app(tmp_path, model_path=str(tmp_path / "unused"))   # the real Recorder
    try:
        app.window.write_event_value(gui.K_RECORD, None)
        pump(app, lambda: bool(app.dialogs))
        assert dialogs.seen == ["Whisper: cannot record"]
        assert app.dialogs[0][1].startswith("no microphone found")
        assert app.window[gui.K_RECORD].get_text() == "Record"   # not stuck in recording state
    finally:
        app.close()


def test_errors_are_dialogs_not_tracebacks(tmp_path, display, dialogs, ct2_transcriber):
    from utils.apps import gui

    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("this is not audio\n")
    app = make_app(tmp_path, ct2_transcriber)
    try:
        recognise(app, str(not_audio))
        assert dialogs.seen == ["Whisper: cannot read the audio"]
        assert str(not_audio) in app.dialogs[-1][1] and "not a readable audio file" in app.dialogs[-1][1]

        recognise(app, str(REPO / en_samples(1)[0]["audio"]["path"]),
                  **{gui.K_LANGUAGE: "klingon"})
        assert dialogs.seen[-1] == "Whisper: invalid option"
        assert "klingon" in app.dialogs[-1][1]
        assert app.segments == []
    finally:
        app.close()

    # Play on a machine without speakers: a dialog, and the window carries on.
    import sounddevice
    try:
        sounddevice.query_devices(kind="output")
        has_output = True
    except Exception:
        has_output = False
    if not has_output:
        app = make_app(tmp_path, ct2_transcriber)
        try:
            app.window[gui.K_FILE].update(str(REPO / en_samples(1)[0]["audio"]["path"]))
            app.window.write_event_value(gui.K_PLAY, None)
            pump(app, lambda: dialogs.seen[-1:] == ["Whisper: cannot play the audio"])
            assert app.dialogs[-1][1].startswith("no audio output device found")
        finally:
            app.close()

    missing = tmp_path / "no-such-model"
    app = make_app(tmp_path, model_path=str(missing))
    try:
        recognise(app, str(REPO / en_samples(1)[0]["audio"]["path"]))
        assert dialogs.seen[-1] == "Whisper: cannot load the model"
        assert str(missing) in app.dialogs[-1][1] and "--model_path" in app.dialogs[-1][1]
    finally:
        app.close()


def test_transformers_backend_in_the_window(tmp_path, display, dialogs, whisper_tiny_en_dir):
    """infer_gui.py's default engine: real whisper-tiny.en through transformers, in the window."""
    sample = en_samples(1)[0]
    # A compute type the backend cannot run is its own refusal, shown as an option problem.
    app = make_app(tmp_path, model_path=str(whisper_tiny_en_dir), backend="transformers",
                   backend_options={"compute_type": "int8"})
    try:
        recognise(app, str(REPO / sample["audio"]["path"]))
        assert dialogs.seen == ["Whisper: invalid option"]
        assert "compute_type=int8 is not one the transformers backend runs in" in app.dialogs[-1][1]
        assert app.dialogs[-1][1].endswith("Start the program with other options (see --help).")
    finally:
        app.close()

    app = make_app(tmp_path, model_path=str(whisper_tiny_en_dir), backend="transformers",
                   backend_options={"local_files_only": True})
    try:
        recognise(app, str(REPO / sample["audio"]["path"]))
        lines = app.output_text().splitlines()
        assert lines and all(line.startswith("[0.00 - ") or re.match(r"\[\d+\.\d\d - ", line) for line in lines)
        text = " ".join(line.split("] ", 1)[1] for line in lines)
        assert word_error_rate(sample["sentence"], text) <= MAX_WER, text
        assert dialogs.seen == ["Whisper: invalid option"]   # only the first window's
    finally:
        app.close()
