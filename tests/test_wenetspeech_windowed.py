"""The WenetSpeech builder cuts each source while it decodes it, holding about one window of samples: the
clips are the very files a cut of the whole decoded file gives, and a long source holds up no other."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import soundfile

from utils.core.audio import SAMPLE_RATE, load_audio
from utils.data.builders import wenetspeech
from utils.data.builders.common import write_audio
from utils.data.builders.wenetspeech import Job, Window

SECONDS = 75.0
# Back to back, overlapping, nested, reaching past the end, and 30 s long: every way windows meet.
WINDOWS = [(0.5, 4.0), (4.0, 9.3), (8.0, 20.0), (12.0, 14.5), (21.0, 51.0), (52.25, 60.0), (70.0, 80.0)]


def _source(path, rate):
    rng = np.random.default_rng(1)
    t = np.arange(int(SECONDS * rate)) / rate
    audio = (0.2 * np.sin(2 * np.pi * 330 * t) * np.sin(2 * np.pi * 0.3 * t) + 0.02 * rng.standard_normal(t.size))
    if path.suffix == ".opus":
        import av

        with av.open(str(path), "w", format="ogg") as container:
            stream = container.add_stream("libopus", rate=48000, layout="mono")
            frame = av.AudioFrame.from_ndarray(audio.astype(np.float32)[None, :], format="flt", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame) + stream.encode(None):
                container.mux(packet)
    else:
        soundfile.write(str(path), np.stack([audio, -audio], axis=1), rate)     # stereo, resampled on reading
    return path


def _windows():
    return [Window("train", begin, end, [(begin + 0.2, min(end, begin + 2.0), "x"), (end - 0.5, end, "y")])
            for begin, end in WINDOWS]


@pytest.mark.parametrize("kind, rate, silence_gaps", [(".flac", 44100, False), (".opus", 48000, True)])
def test_clips_are_the_files_a_whole_file_cut_gives(tmp_path, kind, rate, silence_gaps):
    source = _source(tmp_path / f"long{kind}", rate)
    job = Job(str(source), "long", _windows(), str(tmp_path / "out"), silence_gaps)
    error, durations = wenetspeech.convert_audio(job)
    assert error is None

    # The former way: the whole file decoded, each window cut out of it.
    whole = load_audio(str(source))
    for window, path, duration in zip(job.windows, job.clip_paths(), durations):
        expected = wenetspeech.cut_window(whole, window, silence_gaps)
        write_audio(str(tmp_path / "expected.flac"), expected)
        assert open(path, "rb").read() == open(tmp_path / "expected.flac", "rb").read(), path
        assert duration == len(expected) / SAMPLE_RATE
    assert durations[-1] == pytest.approx(SECONDS - 70.0)   # the last window stops at the end of the audio


def test_memory_holds_a_window_not_the_source(tmp_path):
    source = _source(tmp_path / "long.flac", 44100)
    cutter = wenetspeech.WindowCutter(_windows(), [str(tmp_path / f"{i}.flac") for i in range(len(WINDOWS))], False)
    wenetspeech.decode_in_pieces(str(source), cutter.add)
    # The longest window (30 s) and one decoded piece (2^17 frames at 44.1 kHz, about 3 s) at most.
    assert cutter.most_held <= (30.0 + 3.0) * SAMPLE_RATE < SECONDS * SAMPLE_RATE


def _wait_for_the_last(job):
    """Source 0 is 'long': it finishes only once the source handed out last has finished."""
    folder, number = job
    if number == 0:
        for _ in range(200):
            if os.path.exists(os.path.join(folder, "last-done")):
                return "waited", []
            time.sleep(0.05)
        return "stalled: the last source was never handed out", []
    if number == LAST:
        open(os.path.join(folder, "last-done"), "w").close()
    return None, [float(number)]


LAST = 40     # beyond the 32 sources that the builder used to hand out as one batch


def test_a_long_source_holds_up_no_other(tmp_path, monkeypatch):
    from multiprocessing import Pool

    monkeypatch.setattr(wenetspeech, "convert_audio", _wait_for_the_last)   # the forked workers inherit it
    with Pool(2) as pool:
        results = list(wenetspeech.convert_in_order(pool, ((str(tmp_path), n) for n in range(LAST + 1)),
                                                    bar=type("Bar", (), {"update": lambda self, n: None})()))
    assert [job[1] for job, _ in results] == list(range(LAST + 1))          # manifests keep the source order
    assert results[0][1] == ("waited", [])
    assert [durations for _, (_, durations) in results[1:]] == [[float(n)] for n in range(1, LAST + 1)]


def _first_fails(job):
    return ("cannot read it" if job.aid == "A0000" else None), [1.0] * len(job.windows)


def test_a_failing_source_stops_the_build_while_hundreds_are_handed_out(tmp_path, monkeypatch):
    import json
    import threading

    from utils.data.builders.common import BuildError

    audios = [{"aid": f"A{i:04d}", "path": f"audio/A{i:04d}.opus", "segments": [
        {"begin_time": 1.0, "end_time": 3.0, "text": "你好", "confidence": 1.0, "subsets": ["L"]}]}
        for i in range(wenetspeech.SOURCES_AHEAD + 100)]
    (tmp_path / "WenetSpeech.json").write_text(json.dumps({"audios": audios}), encoding="utf-8")
    monkeypatch.setattr(wenetspeech, "convert_audio", _first_fails)
    raised = []

    def run():
        try:
            wenetspeech.build(str(tmp_path / "WenetSpeech.json"), str(tmp_path / "out"), num_workers=2)
        except BuildError as exc:
            raised.append(str(exc))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60)
    # The pool's task thread, waiting to hand out more sources, must let the pool shut down.
    assert not worker.is_alive(), "the build hung after its first source failed"
    assert raised and "cannot read it" in raised[0]
