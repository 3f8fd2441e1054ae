"""Every audio input becomes 16 kHz mono float32 here, and only here."""
from __future__ import annotations

import io
import os
from typing import BinaryIO, Callable, Optional, Union

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


class AudioTooLong(AudioError):
    """The audio is longer than the caller's `max_seconds`; `seconds` is its length when the file's
    header states it, None when decoding stopped at the limit."""

    def __init__(self, name: str, seconds: Optional[float], limit: float):
        self.name, self.seconds, self.limit = name, seconds, limit
        held = f"{seconds:.1f} s" if seconds is not None else f"more than {limit:g} s"
        super().__init__(f"{name}: the audio lasts {held}, longer than the limit of {limit:g} s")


# Read this many frames at a time: a block at 48 kHz stereo is 1.5 MB of float32, so a long file
# never sits in memory at its native rate and channel count, only as 16 kHz mono.
BLOCK_FRAMES = 1 << 17
# libsndfile reports SF_COUNT_MAX frames for a stream whose header leaves the length open.
UNKNOWN_FRAMES = 1 << 62


class _Collector:
    """Keeps the wanted slice of a decoded stream as mono float32 at `target_rate`, block by block.

    Downmixing and resampling per block (soxr's streaming resampler gives the same samples as its
    one-shot one) bound memory by the output, and `max_seconds` stops a long input while it decodes.
    """

    def __init__(self, name: str, rate: int, target_rate: int, start_time: Optional[float],
                 end_time: Optional[float], max_seconds: Optional[float]):
        self.name, self.rate, self.max_seconds = name, rate, max_seconds
        self.start = int(round(float(start_time or 0.0) * rate))
        self.end = None if end_time is None else int(round(float(end_time) * rate))
        self.position = 0       # frames decoded so far, at the native rate
        self.blocks: list[np.ndarray] = []
        self.resampler = None
        if rate != target_rate:
            import soxr

            self.resampler = soxr.ResampleStream(rate, target_rate, 1, dtype="float32")

    def wants_more(self) -> bool:
        return self.end is None or self.position < self.end or self.end <= self.start

    def add(self, block: np.ndarray) -> None:
        """`block`: frames x channels (or frames, for mono) float32 at the native rate."""
        mono = block.mean(axis=1) if block.ndim == 2 else block
        first = self.position
        self.position += len(mono)
        if self.max_seconds is not None and self.position > self.max_seconds * self.rate:
            raise AudioTooLong(self.name, None, self.max_seconds)
        stop = self.position if self.end is None else min(self.position, self.end)
        kept = mono[max(self.start - first, 0):max(stop - first, 0)]
        if len(kept):
            self._keep(kept, last=False)

    def _keep(self, samples: np.ndarray, last: bool) -> None:
        samples = samples.astype(np.float32, copy=False)
        if self.resampler is not None:
            samples = self.resampler.resample_chunk(samples, last=last)
        if len(samples):
            self.blocks.append(samples)

    def finish(self) -> tuple[np.ndarray, float]:
        """(samples, seconds decoded at the native rate)."""
        if self.resampler is not None:
            self._keep(np.zeros(0, dtype=np.float32), last=True)
        audio = np.concatenate(self.blocks) if self.blocks else np.zeros(0, dtype=np.float32)
        return audio, self.position / self.rate


def _decode_soundfile(source, make: Callable[[int], _Collector]) -> _Collector:
    import soundfile

    with soundfile.SoundFile(source) as sound:
        collector = make(sound.samplerate)
        if collector.max_seconds is not None and sound.frames < UNKNOWN_FRAMES:
            seconds = sound.frames / sound.samplerate
            if seconds > collector.max_seconds:
                raise AudioTooLong(collector.name, seconds, collector.max_seconds)
        while collector.wants_more():
            block = sound.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
            if not len(block):
                break
            collector.add(block)
    return collector


def _decode_av(source, make: Callable[[int], _Collector]) -> _Collector:
    # PyAV bundles FFmpeg, so mp3/m4a/webm/video decode without a system ffmpeg.
    import av

    with av.open(source, mode="r") as container:
        if not container.streams.audio:
            raise AudioError("contains no audio stream")
        stream = container.streams.audio[0]
        collector = make(SAMPLE_RATE)
        if collector.max_seconds is not None and container.duration is not None:
            seconds = container.duration / av.time_base
            if seconds > collector.max_seconds:
                raise AudioTooLong(collector.name, seconds, collector.max_seconds)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                collector.add(out.to_ndarray().reshape(-1))
            if not collector.wants_more():
                return collector
        for out in resampler.resample(None):
            collector.add(out.to_ndarray().reshape(-1))
    return collector


def resample(audio: np.ndarray, orig_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    if orig_rate == target_rate:
        return audio.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(audio, orig_rate, target_rate).astype(np.float32)


def load_audio(source: AudioSource, start_time: Optional[float] = None,
               end_time: Optional[float] = None, sample_rate: int = SAMPLE_RATE,
               max_seconds: Optional[float] = None, name: Optional[str] = None) -> np.ndarray:
    """Decode any audio/video file (path, bytes or file object) to mono float32 at `sample_rate`.

    `start_time`/`end_time` (seconds) cut a slice; raises AudioError with the file's name (or
    `name`) when the input is missing, empty, not audio, or the slice lies outside the file.
    `max_seconds` refuses longer audio (AudioTooLong) by the header's length before decoding, and
    while decoding when the header does not say, so a long file is never decoded in full.
    """
    name = name or _describe(source)
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

    def make(rate: int) -> _Collector:
        return _Collector(name, rate, sample_rate, start_time, end_time, max_seconds)

    # The decoders' own messages ("[Errno 1094995529] Invalid data ...") mean nothing to a
    # user, so they are replaced by one plain reason.
    reason = "unknown format, or the file is damaged or truncated"
    collector = None
    for decode in (_decode_soundfile, _decode_av):
        try:
            if hasattr(raw, "seek"):
                raw.seek(0)
            collector = decode(raw, make)
            break
        except AudioTooLong:
            raise
        except AudioError as exc:
            reason = str(exc)
        except Exception:  # decoder libraries raise many types for "not audio"
            pass
    if collector is None:
        raise AudioError(f"{name}: not a readable audio file ({reason})")

    audio, decoded = collector.finish()
    if start_time is not None or end_time is not None:
        # `decoded` is the whole file's length unless decoding stopped at the slice's end, which
        # only a valid slice does.
        start = float(start_time or 0.0)
        end = decoded if end_time is None else float(end_time)
        if start < 0 or end <= start or start >= decoded + 1e-3:
            raise AudioError(f"{name}: slice {start:.2f}-{end:.2f} s lies outside the "
                             f"audio ({decoded:.2f} s)")
    if audio.size == 0:
        raise AudioError(f"{name}: audio has no samples")
    return audio


class _Streamer(_Collector):
    """A _Collector that hands each piece of 16 kHz mono samples to `sink` instead of keeping it."""

    def __init__(self, name: str, rate: int, target_rate: int, sink: Callable[[np.ndarray], None]):
        super().__init__(name, rate, target_rate, None, None, None)
        self.sink, self.samples = sink, 0

    def _keep(self, samples: np.ndarray, last: bool) -> None:
        samples = samples.astype(np.float32, copy=False)
        if self.resampler is not None:
            samples = self.resampler.resample_chunk(samples, last=last)
        if len(samples):
            self.samples += len(samples)
            try:
                self.sink(samples)
            except StopDecoding:
                raise
            except BaseException as exc:
                raise _SinkFailed(exc) from exc


class _SinkFailed(Exception):
    """What the sink raised, carried past the decoders' catch-all so that it reaches the caller unchanged."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


class StopDecoding(Exception):
    """Raised by a `decode_in_pieces` sink that has all it wants: decoding ends there, without an error."""


def decode_in_pieces(path: Union[str, os.PathLike], sink: Callable[[np.ndarray], None],
                     sample_rate: int = SAMPLE_RATE) -> int:
    """Decode `path` as load_audio does (the same samples, in order), handing them to `sink` a piece at a time
    instead of returning them, so that memory is bounded by a piece, not by the file's length. Returns the
    number of samples handed over (up to a StopDecoding the sink raised)."""
    name = os.fspath(path)
    if not os.path.exists(name):
        raise AudioError(f"{name}: audio file not found")
    if os.path.getsize(name) == 0:
        raise AudioError(f"{name}: audio file is empty")
    reason = "unknown format, or the file is damaged or truncated"
    streamers: list[_Streamer] = []

    def make(rate: int) -> _Streamer:
        streamers.append(_Streamer(name, rate, sample_rate, sink))
        return streamers[-1]

    for decode in (_decode_soundfile, _decode_av):
        try:
            collector = decode(name, make)
            collector.finish()
            return collector.samples
        except StopDecoding:
            return streamers[-1].samples
        except _SinkFailed as failed:
            raise failed.error from None
        except AudioError as exc:
            reason = str(exc)
        except Exception:  # decoder libraries raise many types for "not audio"
            pass
        # Once samples have gone to the sink, another decoder would hand them over twice.
        if streamers and streamers[-1].samples:
            raise AudioError(f"{name}: decoding failed after {streamers[-1].samples / sample_rate:.2f} s "
                             f"({reason})")
    raise AudioError(f"{name}: not a readable audio file ({reason})")


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


# Below -60 dBFS is digital silence: no microphone recording of speech is that quiet throughout,
# and Whisper decodes such audio into hallucinations (" you" per window) at full cost.
SILENCE_PEAK = 1e-3


def is_silent(samples: np.ndarray) -> bool:
    """Whether every sample is below SILENCE_PEAK (max/min, not abs: no copy of a long clip)."""
    return samples.size == 0 or max(float(samples.max()), -float(samples.min())) < SILENCE_PEAK
