"""Microphone recording for the desktop window: start, stop, save a 16 kHz mono WAV.

PortAudio (through `sounddevice`) does the capture. The input stream is made by a factory with
`sounddevice.InputStream`'s signature, so tests feed a recorded stream in place of a microphone.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Callable, Optional

import numpy as np

from utils.core.audio import SAMPLE_RATE, resample, save_wav

RECORD_DIR = "dataset/record"


class MicrophoneError(RuntimeError):
    """No usable input device (none attached, PortAudio missing, or the device refused to open)."""


class PlaybackError(RuntimeError):
    """No usable output device for playing audio back."""


def _sounddevice():
    try:
        import sounddevice
    except OSError as exc:  # the Python package imports, but the PortAudio library is absent
        raise MicrophoneError(f"audio input/output is unavailable: {exc} "
                              "(install PortAudio, e.g. `apt-get install libportaudio2`)") from exc
    return sounddevice


def default_input_rate() -> int:
    """Sample rate of the default microphone; MicrophoneError when there is none."""
    sd = _sounddevice()
    try:
        device = sd.query_devices(kind="input")
    except Exception as exc:  # PortAudioError or ValueError, depending on the host API
        raise MicrophoneError("no microphone found: connect one (or enable it in the system's "
                              "sound settings) and press Record again") from exc
    return int(device["default_samplerate"])


StreamFactory = Callable[..., object]


class Recorder:
    """Collects microphone blocks on PortAudio's thread until `stop()`.

    Recording happens at the device's own rate (many devices refuse 16 kHz) and is resampled
    once on stop.
    """

    def __init__(self, stream_factory: Optional[StreamFactory] = None,
                 sample_rate: Optional[int] = None):
        self._stream_factory = stream_factory
        self._sample_rate = sample_rate
        self._blocks: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._stream = None
        self._started_at: Optional[float] = None
        self._stopped_at: Optional[float] = None
        self._taken = 0            # blocks already handed out by take()
        self._live_resampler = None

    @property
    def recording(self) -> bool:
        return self._stream is not None

    @property
    def elapsed(self) -> float:
        """Seconds since start (frozen at stop)."""
        if self._started_at is None:
            return 0.0
        return (self._stopped_at or time.monotonic()) - self._started_at

    def _callback(self, indata, frames, time_info, status) -> None:
        # Runs on PortAudio's thread: copy, because the buffer is reused for the next block.
        with self._lock:
            self._blocks.append(np.asarray(indata, dtype=np.float32).mean(axis=1).copy())

    def start(self) -> None:
        if self.recording:
            raise RuntimeError("already recording")
        factory = self._stream_factory
        if factory is None:
            if self._sample_rate is None:
                self._sample_rate = default_input_rate()
            factory = _sounddevice().InputStream
        elif self._sample_rate is None:
            self._sample_rate = SAMPLE_RATE
        self._blocks, self._taken, self._live_resampler = [], 0, None
        try:
            stream = factory(samplerate=self._sample_rate, channels=1, dtype="float32",
                             callback=self._callback)
            stream.start()
        except MicrophoneError:
            raise
        except Exception as exc:
            raise MicrophoneError(f"the microphone could not be opened: {exc}") from exc
        self._stream = stream
        self._started_at, self._stopped_at = time.monotonic(), None

    def stop(self) -> np.ndarray:
        """End the recording; returns 16 kHz mono float32 samples (may be empty)."""
        if not self.recording:
            raise RuntimeError("not recording")
        stream, self._stream = self._stream, None
        self._stopped_at = time.monotonic()
        try:
            stream.stop()
        finally:
            stream.close()
        with self._lock:
            blocks, self._blocks = self._blocks, []
        # A soxr object alive at exit makes nanobind print "leaked" warnings.
        self._live_resampler = None
        audio = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
        return resample(audio, self._sample_rate, SAMPLE_RATE)


    def take(self) -> np.ndarray:
        """The 16 kHz samples recorded since the last take() (live transcription reads them while
        recording goes on; stop() still returns the whole recording)."""
        with self._lock:
            blocks, self._taken = self._blocks[self._taken:], len(self._blocks)
        audio = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
        if self._sample_rate in (None, SAMPLE_RATE) or not audio.size:
            return audio
        if self._live_resampler is None:
            import soxr

            self._live_resampler = soxr.ResampleStream(self._sample_rate, SAMPLE_RATE, 1, dtype="float32")
        return self._live_resampler.resample_chunk(audio)


def recording_path(record_dir: str = RECORD_DIR) -> str:
    """A fresh file name under `record_dir`, named by the time the recording ended."""
    os.makedirs(record_dir, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = os.path.join(record_dir, f"{stamp}.wav")
    suffix = 1
    while os.path.exists(path):
        path = os.path.join(record_dir, f"{stamp}-{suffix}.wav")
        suffix += 1
    return path


def save_recording(audio: np.ndarray, record_dir: str = RECORD_DIR) -> str:
    path = recording_path(record_dir)
    save_wav(path, audio, SAMPLE_RATE)
    return path


def play(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Start playing `audio` on the default output device and return at once."""
    try:
        sd = _sounddevice()
        sd.query_devices(kind="output")
    except Exception as exc:
        raise PlaybackError("no audio output device found: connect speakers or headphones "
                            "to play the audio") from exc
    try:
        sd.play(audio, sample_rate)
    except Exception as exc:
        raise PlaybackError(f"the audio could not be played: {exc}") from exc


def stop_playback() -> None:
    try:
        _sounddevice().stop()
    except Exception:  # nothing is playing, or there is no audio system: nothing to stop
        pass


def microphone_chunks(chunk_s: float, recorder: Optional[Recorder] = None):
    """The microphone as (16 kHz samples, wall time) chunks of about `chunk_s`, until the caller
    stops iterating (Ctrl+C); MicrophoneError, in one sentence, when there is no microphone."""
    recorder = recorder or Recorder()
    recorder.start()
    try:
        while True:
            time.sleep(chunk_s)
            yield recorder.take(), time.monotonic()
    finally:
        if recorder.recording:
            recorder.stop()
