"""Every audio input becomes 16 kHz mono float32 here, and only here."""
from __future__ import annotations

import io
import os
from typing import BinaryIO, Optional, Union

import numpy as np

from utils.core.errors import UserError
from utils.core.files import atomic_write

SAMPLE_RATE = 16000          # Whisper's input rate
CHUNK_LENGTH = 30            # seconds in one Whisper window
TIME_PRECISION = 0.02        # seconds per timestamp token

AudioSource = Union[str, os.PathLike, bytes, BinaryIO]


class AudioError(UserError):
    """The user's audio cannot be read; the message names the file and the problem."""


def _describe(source: AudioSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return getattr(source, "name", None) or "<uploaded audio>"


def _decode_soundfile(source) -> tuple[np.ndarray, int]:
    import soundfile

    data, rate = soundfile.read(source, dtype="float32", always_2d=True)
    return data.mean(axis=1), rate


def _decode_av(source) -> tuple[np.ndarray, int]:
    # PyAV bundles FFmpeg, so mp3/m4a/webm/video decode without a system ffmpeg.
    import av

    chunks = []
    with av.open(source, mode="r") as container:
        if not container.streams.audio:
            raise AudioError("contains no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    if not chunks:
        return np.zeros(0, dtype=np.float32), SAMPLE_RATE
    return np.concatenate(chunks).astype(np.float32), SAMPLE_RATE


def resample(audio: np.ndarray, orig_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    if orig_rate == target_rate:
        return audio.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(audio, orig_rate, target_rate).astype(np.float32)


def load_audio(source: AudioSource, start_time: Optional[float] = None,
               end_time: Optional[float] = None, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any audio/video file (path, bytes or file object) to mono float32 at `sample_rate`.

    `start_time`/`end_time` (seconds) cut a slice; raises AudioError with the file's name
    when the input is missing, empty, not audio, or the slice lies outside the file.
    """
    name = _describe(source)
    if isinstance(source, (str, os.PathLike)):
        if not os.path.exists(source):
            raise AudioError(f"{name}: audio file not found")
        if os.path.getsize(source) == 0:
            raise AudioError(f"{name}: audio file is empty")
        raw: Union[str, BinaryIO] = os.fspath(source)
    elif isinstance(source, bytes):
        if not source:
            raise AudioError(f"{name}: audio is empty")
        raw = io.BytesIO(source)
    else:
        raw = source

    # The decoders' own messages ("[Errno 1094995529] Invalid data ...") mean nothing to a
    # user, so they are replaced by one plain reason.
    reason = "unknown format, or the file is damaged or truncated"
    audio = rate = None
    for decode in (_decode_soundfile, _decode_av):
        try:
            if hasattr(raw, "seek"):
                raw.seek(0)
            audio, rate = decode(raw)
            break
        except AudioError as exc:
            reason = str(exc)
        except Exception:  # decoder libraries raise many types for "not audio"
            pass
    if audio is None:
        raise AudioError(f"{name}: not a readable audio file ({reason})")

    if start_time is not None or end_time is not None:
        duration = len(audio) / rate
        start = float(start_time or 0.0)
        end = duration if end_time is None else float(end_time)
        if start < 0 or end <= start or start >= duration + 1e-3:
            raise AudioError(f"{name}: slice {start:.2f}-{end:.2f} s lies outside the "
                             f"audio ({duration:.2f} s)")
        audio = audio[int(round(start * rate)):int(round(min(end, duration) * rate))]
    audio = resample(audio, rate, sample_rate)
    if audio.size == 0:
        raise AudioError(f"{name}: audio has no samples")
    return audio


def audio_duration(path: Union[str, os.PathLike]) -> float:
    """Seconds of audio in `path`: from the file header when possible (fast), else by decoding."""
    import soundfile

    path = os.fspath(path)
    try:
        return float(soundfile.info(path).duration)
    except Exception:  # soundfile raises several types for "not a format I know"
        pass
    try:
        # Containers soundfile cannot parse (m4a, webm, ...) usually state their duration.
        import av

        with av.open(path) as container:
            if container.duration is not None and container.streams.audio:
                return float(container.duration / av.time_base)
    except Exception:  # PyAV raises many types for damaged or foreign files
        pass
    return len(load_audio(path)) / SAMPLE_RATE


def save_wav(path: Union[str, os.PathLike], audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM WAV atomically (write beside, then rename)."""
    import soundfile

    with atomic_write(path, "wb") as handle:
        soundfile.write(handle, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")


CUT_SEARCH_SECONDS = 10.0    # look this far back from a piece's limit for the quietest moment
CUT_FRAME = SAMPLE_RATE // 10


def split_at_quiet_points(audio: np.ndarray, max_seconds: float) -> list[tuple[int, int]]:
    """Cut `audio` into contiguous pieces no longer than `max_seconds`, each ending at the
    quietest 0.1 s frame of its last few seconds so that words are rarely cut in half.

    Written here because transformers' pipeline chunking (chunk_length_s) overlaps
    windows and merges them heuristically, which neither streams nor keeps generate's timestamps.
    """
    limit = int(max_seconds * SAMPLE_RATE)
    search = min(int(CUT_SEARCH_SECONDS * SAMPLE_RATE), limit // 2)
    pieces, start = [], 0
    while len(audio) - start > limit:
        window = audio[start + limit - search:start + limit]
        frames = window[:len(window) // CUT_FRAME * CUT_FRAME].reshape(-1, CUT_FRAME)
        quietest = int(np.argmin((frames ** 2).mean(axis=1)))
        cut = start + limit - search + quietest * CUT_FRAME + CUT_FRAME // 2
        pieces.append((start, cut))
        start = cut
    pieces.append((start, len(audio)))
    return pieces


def duration_of(samples: np.ndarray) -> float:
    """Seconds of 16 kHz samples."""
    return len(samples) / SAMPLE_RATE
