"""The desktop window's live text under Xvfb: while Record runs (the microphone fed from a file at
real time), committed words appear in the result box, the guess after them in grey."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO
from test_gui import FileInputStream, dialogs, display, make_app, pump  # noqa: F401  (fixtures)
from transcription_audio import english_clip, normalize

pytestmark = pytest.mark.gui

TINY_EN = REPO / "models" / "whisper-tiny.en-ct2"


def test_record_shows_live_text_while_recording(tmp_path, display, dialogs):  # noqa: F811
    from utils.apps import gui
    from utils.apps.recorder import Recorder
    from utils.core.audio import SAMPLE_RATE, load_audio
    from utils.inference.registry import load_transcriber

    transcriber = load_transcriber("ct2", str(TINY_EN), compute_type="int8")
    audio = np.concatenate([load_audio(english_clip(0)[0]), np.zeros(2 * SAMPLE_RATE, dtype=np.float32)])
    streams = []

    def factory(**kwargs):
        streams.append(FileInputStream(audio, speed=1.0, **kwargs))
        return streams[-1]

    app = make_app(tmp_path, transcriber, model_path=str(TINY_EN),
                   recorder_factory=lambda: Recorder(stream_factory=factory, sample_rate=44100))
    try:
        app.start_job(gui.Job(label="loading the model"))
        pump(app, lambda: app.busy is None)
        app.window[gui.K_LANGUAGE].update("en")
        app.window.write_event_value(gui.K_RECORD, None)
        seen_partial = []

        def committed_minutes() -> bool:
            if app.live_text[1]:
                seen_partial.append(app.live_text[1])
            return "minutes" in app.live_text[0].lower()

        pump(app, committed_minutes)
        assert app.window[gui.K_RECORD].get_text() == "Stop recording"   # still recording
        committed = app.live_text[0]
        assert {"train", "minutes"} <= set(normalize(committed).split()), committed
        assert app.output_text().startswith(committed)
        assert seen_partial, "no partial text was shown before the words were committed"
        app.window.write_event_value(gui.K_RECORD, None)
        pump(app, lambda: app.busy is not None)
        pump(app, lambda: app.busy is None)
        assert "minutes" in " ".join(s.text for s in app.segments).lower()   # then recognised as a whole
        assert dialogs.seen == []
    finally:
        app.close()
