"""The desktop window shared by infer_gui.py and WhisperDesktop: layout and event handling.

Recognition, model loading and audio decoding run on worker threads that talk to the window
only through `window.write_event_value`, so the event loop keeps drawing while a model works.
Our code makes no direct tkinter calls: PySimpleGUI owns the toolkit.
"""
from __future__ import annotations

import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Optional

from utils.apps.recorder import (
    RECORD_DIR,
    MicrophoneError,
    PlaybackError,
    Recorder,
    play,
    save_recording,
    stop_playback,
)
from utils.core.audio import SAMPLE_RATE, AudioError, load_audio
from utils.core.errors import UserError
from utils.core.languages import TASKS
from utils.core.text import to_simplified
from utils.inference.registry import load_transcriber
from utils.inference.transcriber import (
    Segment,
    TranscribeOptions,
    Transcriber,
    TranscriptionError,
    TranscriptionInfo,
)
from utils.inference.writers import get_writer, segment_line, transcript_text

try:
    import PySimpleGUI as sg
except ModuleNotFoundError as missing:
    if missing.name not in ("tkinter", "_tkinter"):
        raise
    raise UserError("this Python has no Tk support (tkinter), which the window needs; install it "
                    "(Debian/Ubuntu: apt-get install python3-tk; pyenv: install tk-dev, then rebuild Python)"
                    ) from None

# Element keys; events from worker threads carry the same naming scheme.
K_FILE, K_PLAY, K_STOP_PLAY = "-FILE-", "-PLAY-", "-STOP-PLAY-"
K_RECORD, K_ELAPSED = "-RECORD-", "-ELAPSED-"
K_TASK, K_LANGUAGE, K_JOIN, K_SIMPLIFY = "-TASK-", "-LANGUAGE-", "-JOIN-", "-SIMPLIFY-"
K_RECOGNISE, K_PROGRESS, K_STATUS, K_OUTPUT = "-RECOGNISE-", "-PROGRESS-", "-STATUS-", "-OUTPUT-"
K_COPY, K_SAVE_PATH = "-COPY-", "-SAVE-PATH-"
E_LOADED, E_INFO, E_SEGMENT, E_DONE, E_FAILED = "-LOADED-", "-INFO-", "-SEGMENT-", "-DONE-", "-FAILED-"
E_PLAY_FAILED = "-PLAY-FAILED-"
E_LIVE = "-LIVE-"
# Live text while recording: new audio is decoded this often; the guess not yet committed is grey.
LIVE_CHUNK_S = 1.0
PARTIAL_COLOR = "#8a93a6"

PROGRESS_STEPS = 1000
SAVE_FORMATS = ("srt", "vtt", "txt")
AUDIO_FILE_TYPES = (
    ("Audio or video", "*.wav *.mp3 *.flac *.m4a *.ogg *.opus *.aac *.wma *.mp4 *.mkv *.webm *.mov *.avi"),
    ("All files", "*.*"),
)
# Shortest recording worth sending to the model; a click on Record/Stop gives less.
MIN_RECORDING_SECONDS = 0.3


# Dialog titles by what the worker was doing when it failed.
STAGE_TITLES = {"audio": "cannot read the audio", "model": "cannot load the model",
                "options": "invalid option", "recognition": "recognition failed"}


class DisplayError(UserError):
    """The window cannot be shown: no graphical display (e.g. over ssh without X forwarding)."""


@dataclass
class GuiSettings:
    model_path: str
    backend: str   # a name in utils.inference.registry.BACKENDS
    backend_options: dict = field(default_factory=dict)
    language: Optional[str] = None
    task: str = "transcribe"
    beam_size: int = 1
    vad_filter: bool = False
    record_dir: str = RECORD_DIR
    title: str = "Whisper"


@dataclass
class Job:
    """One request for the worker: `audio` None means "load the model only"."""
    label: str
    audio: object = None
    options: TranscribeOptions = field(default_factory=TranscribeOptions)


def show_dialog(title: str, message: str) -> None:
    """A modal message box with one centred OK button (Return also closes it)."""
    layout = [[sg.Text(message, size=(min(70, max(30, len(message))), None))],
              [sg.Push(), sg.Button("OK", bind_return_key=True, size=(8, 1)), sg.Push()]]
    dialog = sg.Window(title, layout, modal=True, keep_on_top=True, finalize=True)
    dialog.read(close=True)


def build_layout(settings: GuiSettings) -> list:
    return [
        [sg.Text("Audio file", size=(10, 1)), sg.Input(key=K_FILE, expand_x=True),
         sg.FileBrowse("Browse…", file_types=AUDIO_FILE_TYPES, target=K_FILE),
         sg.Button("Play", key=K_PLAY), sg.Button("Stop", key=K_STOP_PLAY)],
        [sg.Text("Microphone", size=(10, 1)), sg.Button("Record", key=K_RECORD, size=(14, 1)),
         sg.Text(_clock(0), key=K_ELAPSED, size=(8, 1)),
         sg.Text(f"recordings are saved under {settings.record_dir}/")],
        [sg.Text("Task", size=(10, 1)),
         sg.Combo(list(TASKS), default_value=settings.task, key=K_TASK, readonly=True, size=(11, 1)),
         sg.Text("Language"), sg.Input(settings.language or "", key=K_LANGUAGE, size=(10, 1),
                                       tooltip="name or code (chinese, zh); empty = detect"),
         sg.Checkbox("One paragraph (no timestamps)", key=K_JOIN, enable_events=True),
         # Checked at start, as in the original project and the web page: Whisper often writes Mandarin
         # in traditional characters.
         sg.Checkbox("Traditional → Simplified Chinese", key=K_SIMPLIFY, default=True, enable_events=True)],
        [sg.Button("Recognise", key=K_RECOGNISE, size=(12, 1)),
         sg.ProgressBar(PROGRESS_STEPS, orientation="h", key=K_PROGRESS, size=(30, 16), expand_x=True,
                        bar_color=("#3a9d5d", "#d9dee6")),
         sg.Text("", key=K_STATUS, size=(48, 1))],
        [sg.Multiline(key=K_OUTPUT, size=(100, 22), disabled=True, autoscroll=True,
                      expand_x=True, expand_y=True, font=("Courier", 11))],
        [sg.Button("Copy", key=K_COPY),
         sg.Input(key=K_SAVE_PATH, visible=False, enable_events=True),
         sg.FileSaveAs("Save as…", target=K_SAVE_PATH, default_extension=".srt",
                       file_types=(("SubRip subtitles", "*.srt"), ("WebVTT subtitles", "*.vtt"),
                                   ("Plain text", "*.txt"))),
         sg.Text(f"model: {settings.model_path} ({settings.backend})")],
    ]


class WhisperWindow:
    """The window and its state. `run()` is the event loop; tests call `step()` themselves."""

    def __init__(self, settings: GuiSettings,
                 transcriber_factory: Callable[[], Transcriber] = None,
                 recorder_factory: Callable[[], Recorder] = Recorder):
        self.settings = settings
        self._transcriber_factory = transcriber_factory or (
            lambda: load_transcriber(settings.backend, settings.model_path, **settings.backend_options))
        self._recorder_factory = recorder_factory
        self._transcriber: Optional[Transcriber] = None
        self._recorder: Optional[Recorder] = None
        self._closing = threading.Event()
        self.busy: Optional[str] = None      # what the worker is doing, None when idle
        self.segments: list[Segment] = []
        self.info: Optional[TranscriptionInfo] = None
        self.dialogs: list[tuple[str, str]] = []   # every (title, message) shown, newest last
        self.last_recording: Optional[str] = None
        self.live_text: tuple[str, str] = ("", "")   # (committed, partial) shown while recording
        self._started_at = 0.0
        try:
            self.window = sg.Window(settings.title, build_layout(settings), resizable=True, finalize=True)
        except Exception as exc:
            # Tk's TclError is the only sign of a missing display; matched by name so that
            # our code needs no tkinter import.
            if type(exc).__name__ != "TclError":
                raise
            raise DisplayError(f"cannot open a window ({exc}); run it on a desktop, or set DISPLAY "
                               "(e.g. ssh -X), or use infer.py / --transcribe without a window") from exc

    # ---- the loop -------------------------------------------------------------------------
    def run(self) -> None:
        self.start_job(Job(label="loading the model"))
        while self.step(timeout=100):
            pass

    def step(self, timeout: int = 100) -> bool:
        """Handle one event (or a timeout tick); False once the window is closed."""
        event, values = self.window.read(timeout=timeout)
        if event in (sg.WIN_CLOSED, sg.WINDOW_CLOSE_ATTEMPTED_EVENT):
            self.close()
            return False
        handler = self._handlers().get(event)
        if handler is not None:
            handler(values)
        if self._recorder is not None:
            self.window[K_ELAPSED].update(_clock(self._recorder.elapsed))
        return True

    def _handlers(self) -> dict:
        return {
            K_RECOGNISE: lambda v: self.recognise(v[K_FILE], v),
            K_RECORD: lambda v: self.toggle_recording(v),
            K_PLAY: lambda v: self.play(v[K_FILE]),
            K_STOP_PLAY: lambda v: stop_playback(),
            K_JOIN: lambda v: self.render(),
            K_SIMPLIFY: lambda v: self.render(),
            K_COPY: lambda v: self.copy(),
            K_SAVE_PATH: lambda v: self.save(v[K_SAVE_PATH]) if v[K_SAVE_PATH] else None,
            E_LOADED: lambda v: self._on_loaded(v[E_LOADED]),
            E_INFO: lambda v: self._on_info(v[E_INFO]),
            E_SEGMENT: lambda v: self._on_segment(v[E_SEGMENT]),
            E_DONE: lambda v: self._on_done(v[E_DONE]),
            E_FAILED: lambda v: self._on_failed(*v[E_FAILED]),
            E_PLAY_FAILED: lambda v: self.tell("cannot play the audio", v[E_PLAY_FAILED]),
            E_LIVE: lambda v: self._on_live(*v[E_LIVE]),
        }

    def close(self) -> None:
        self._closing.set()
        if self._recorder is not None:
            self._recorder.stop()
            self._recorder = None
        stop_playback()
        self.window.close()

    # ---- messages ---------------------------------------------------------------------------
    def tell(self, title: str, message: str) -> None:
        self.dialogs.append((title, message))
        self.set_status(message)
        show_dialog(f"{self.settings.title}: {title}", message)

    def set_status(self, text: str) -> None:
        self.window[K_STATUS].update(text)

    # ---- recognition ----------------------------------------------------------------------
    def options_from(self, values: dict) -> TranscribeOptions:
        return TranscribeOptions(language=(values.get(K_LANGUAGE) or "").strip() or None,
                                 task=values.get(K_TASK) or self.settings.task,
                                 beam_size=self.settings.beam_size, vad_filter=self.settings.vad_filter)

    def recognise(self, path: str, values: dict) -> bool:
        path = (path or "").strip()
        if self.busy:
            self.set_status(f"Still {self.busy}; please wait until it finishes, then try again.")
            return False
        if not path:
            self.tell("no audio", "Choose an audio or video file with Browse…, or record one, first.")
            return False
        return self.start_job(Job(label=f"recognising {os.path.basename(path)}", audio=path,
                                  options=self.options_from(values)))

    def start_job(self, job: Job) -> bool:
        if self.busy:
            return False
        self.busy = job.label
        self._started_at = time.perf_counter()
        if job.audio is not None:
            self.segments, self.info = [], None
            self.render()
        self.window[K_PROGRESS].update(0)
        self.set_status(job.label[0].upper() + job.label[1:] + "…")
        threading.Thread(target=self._work, args=(job,), name="whisper-recognition", daemon=True).start()
        return True

    def _post(self, event: str, value) -> None:
        # A worker may finish after the window closed; its news then has nowhere to go.
        if not self._closing.is_set():
            self.window.write_event_value(event, value)

    def _work(self, job: Job) -> None:
        post = self._post
        stage = "audio"
        try:
            # Decode first: an unreadable file should not wait for a slow model load to be reported.
            samples = load_audio(job.audio) if job.audio is not None else None
            stage = "model"
            if self._transcriber is None:
                self._transcriber = self._transcriber_factory()
                post(E_LOADED, time.perf_counter() - self._started_at)
            if samples is None:
                post(E_DONE, None)
                return
            stage = "options"
            segments, info = self._transcriber.transcribe(samples, job.options)
            post(E_INFO, info)
            stage = "recognition"
            for segment in segments:
                if self._closing.is_set():
                    return
                post(E_SEGMENT, segment)
            post(E_DONE, time.perf_counter() - self._started_at)
        except Exception as exc:
            post(E_FAILED, _describe_error(stage, exc, self.settings))

    def _on_loaded(self, seconds: float) -> None:
        self.set_status(f"Model loaded in {seconds:.1f} s.")

    def _on_info(self, info: TranscriptionInfo) -> None:
        self.info = info

    def _on_segment(self, segment: Segment) -> None:
        previous = [self._shown(self.segments[-1])] if self.segments else []
        self.segments.append(segment)
        shown = self._shown(segment)
        if self.window[K_JOIN].get():
            piece = transcript_text(previous + [shown])[len(transcript_text(previous)):]
        else:
            piece = ("\n" if previous else "") + segment_line(shown)
        self.window[K_OUTPUT].update(piece, append=True)
        if self.info and self.info.duration > 0:
            done = min(segment.end, self.info.duration) / self.info.duration
            self.window[K_PROGRESS].update(int(done * PROGRESS_STEPS))
            self.set_status(f"{self.busy[0].upper()}{self.busy[1:]}: "
                            f"{min(segment.end, self.info.duration):.1f} / {self.info.duration:.1f} s")

    def _on_done(self, seconds: Optional[float]) -> None:
        self.busy = None
        if seconds is None:   # a model-only job
            return
        self.window[K_PROGRESS].update(PROGRESS_STEPS)
        duration = self.info.duration if self.info else 0.0
        language = f", language {self.info.language}" if self.info else ""
        if not self.segments:
            self.set_status(f"No speech found in {duration:.1f} s of audio{language}.")
            return
        self.set_status(f"Done: {duration:.1f} s of audio in {seconds:.1f} s, "
                        f"{len(self.segments)} segments{language}.")

    def _on_failed(self, title: str, message: str) -> None:
        self.busy = None
        self.window[K_PROGRESS].update(0)
        self.tell(title, message)

    # ---- display --------------------------------------------------------------------------
    def _shown(self, segment: Segment) -> Segment:
        if not self.window[K_SIMPLIFY].get():
            return segment
        return Segment(segment.start, segment.end, to_simplified(segment.text), segment.words)

    def shown_segments(self) -> list[Segment]:
        """The result as displayed, copied and saved (after the Simplified Chinese option)."""
        return [self._shown(segment) for segment in self.segments]

    def shown_text(self) -> str:
        segments = self.shown_segments()
        if self.window[K_JOIN].get():
            return transcript_text(segments)
        return "\n".join(segment_line(segment) for segment in segments)

    def render(self) -> None:
        self.window[K_OUTPUT].update(self.shown_text())

    def output_text(self) -> str:
        """What the result box shows now."""
        return self.window[K_OUTPUT].get().rstrip("\n")

    def copy(self) -> None:
        text = self.shown_text()
        if not text:
            self.set_status("Nothing to copy yet.")
            return
        sg.clipboard_set(text)
        self.set_status(f"Copied {len(text)} characters to the clipboard.")

    def save(self, path: str) -> Optional[str]:
        if not self.segments:
            self.tell("nothing to save", "Nothing to save yet: recognise a file first.")
            return None
        extension = os.path.splitext(path)[1].lower().lstrip(".")
        if extension not in SAVE_FORMATS:
            self.tell("cannot save", f"{path}: choose a file name ending in "
                      f"{', '.join('.' + f for f in SAVE_FORMATS)}.")
            return None
        # The writer names its file after the audio's stem; handing it `path` itself keeps the name.
        try:
            written = get_writer(extension, os.path.dirname(os.path.abspath(path)))(
                self.shown_segments(), self.info, path)
        except OSError as exc:
            self.tell("cannot save", f"{path}: {exc.strerror or exc}.")
            return None
        self.set_status(f"Saved {written}")
        return written

    # ---- microphone and playback ----------------------------------------------------------
    def toggle_recording(self, values: dict) -> None:
        if self._recorder is None:
            recorder = self._recorder_factory()
            try:
                recorder.start()
            except MicrophoneError as exc:
                self.tell("cannot record", _sentence(str(exc)))
                return
            self._recorder = recorder
            self.window[K_RECORD].update("Stop recording")
            self.set_status("Recording… press Stop recording to finish.")
            self._start_live(recorder, values)
            return
        recorder, self._recorder = self._recorder, None
        audio = recorder.stop()
        self.window[K_RECORD].update("Record")
        self.window[K_ELAPSED].update(_clock(recorder.elapsed))
        if len(audio) < MIN_RECORDING_SECONDS * SAMPLE_RATE:
            self.tell("recording too short", "The recording is too short to recognise: "
                      "press Record, speak, then press Stop recording.")
            return
        path = save_recording(audio, self.settings.record_dir)
        self.last_recording = path
        self.window[K_FILE].update(path)
        self.recognise(path, values)

    def _start_live(self, recorder: Recorder, values: dict) -> None:
        """Live text while recording, when the model is loaded and gives word timestamps (ct2); the
        recording is still recognised as a whole when it stops."""
        from utils.inference.streaming import StreamingOptions, StreamingTranscriber

        if self._transcriber is None or "word_timestamps" in self._transcriber.unsupported:
            return
        options = self.options_from(values)
        try:
            stream = StreamingTranscriber(self._transcriber, StreamingOptions(
                language=options.language, task=options.task, beam_size=options.beam_size))
        except UserError:
            return   # the recognition after Stop reports a bad language in its dialog
        self.live_text = ("", "")
        self.window[K_OUTPUT].update("")

        def listen():
            partial = ""
            while recorder.recording and not self._closing.is_set():
                time.sleep(LIVE_CHUNK_S)
                for event in stream.feed(recorder.take()):
                    partial = event.text if event.kind == "partial" else partial
                self._post(E_LIVE, (recorder, stream.committed_text, partial.strip()))

        threading.Thread(target=listen, name="whisper-live", daemon=True).start()

    def _on_live(self, recorder: Recorder, committed: str, partial: str) -> None:
        if recorder is not self._recorder:
            return   # news from a recording that has stopped: its whole recognition is under way
        self.live_text = (committed, partial)
        output = self.window[K_OUTPUT]
        output.update(committed)
        if partial:
            output.update((" " if committed else "") + partial, append=True, text_color_for_value=PARTIAL_COLOR)

    def play(self, path: str) -> None:
        path = (path or "").strip()
        if not path:
            self.tell("no audio", "Choose an audio file or record one before pressing Play.")
            return

        def decode_and_play():
            # Decoding a long video takes a while: off the event loop, like recognition.
            try:
                play(load_audio(path))
            except (AudioError, PlaybackError) as exc:
                self._post(E_PLAY_FAILED, _sentence(str(exc)))

        threading.Thread(target=decode_and_play, daemon=True).start()
        self.set_status(f"Playing {os.path.basename(path)}")


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def _clock(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes):02d}:{secs:04.1f}"


def _describe_error(stage: str, exc: Exception, settings: GuiSettings) -> tuple[str, str]:
    """(dialog title, one sentence); unexpected errors also go to the console with a traceback."""
    if stage == "model" and isinstance(exc, TranscriptionError):
        # The backend refused one of its options before loading (a compute type it cannot run,
        # a GPU that is not there): the model itself may be fine.
        return "invalid option", f"{_sentence(str(exc))} Start the program with other options (see --help)."
    title = STAGE_TITLES[stage]
    if isinstance(exc, AudioError):
        return title, _sentence(str(exc))
    if stage == "model" and isinstance(exc, (OSError, ValueError, ImportError, RuntimeError)):
        return title, (f"The {settings.backend} model at {settings.model_path} could not be loaded ({exc}). "
                       f"Start the program with --model_path pointing at a {settings.backend} model.")
    if isinstance(exc, UserError):
        return title, _sentence(str(exc))
    traceback.print_exc()
    return title, f"{type(exc).__name__}: {exc} (details are printed in the console)."
