"""What the server was started with, as the app sees it (infer_server.py's flags, minus the engine's)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from utils.core.audio import AudioTooLong

MB = 1024 * 1024
# Multipart framing and the small text fields ride in the same body as the file.
FORM_OVERHEAD_BYTES = 64 * 1024


@dataclass
class ServerSettings:
    backend: str = "transformers"
    temperature_increment_on_fallback: float = 0.0
    model_name: str = "whisper"
    model_created: int = 0               # Unix time the model files were written (OpenAI's `created`)
    num_workers: int = 1
    max_queue: int = 16
    max_upload_mb: float = 100.0
    api_key: Optional[str] = None
    language: Optional[str] = None      # default when a request names none; None = detect
    beam_size: int = 1
    vad_filter: bool = False
    max_audio_s: float = 3600.0
    request_timeout_s: float = 600.0
    cors_origins: tuple[str, ...] = ()     # empty = no CORS headers; ("*",) = any origin
    max_streams: int = 2                   # live WebSocket streams at once (realtime.py)
    batch_requests: int = 0              # > 1: concurrent short clips share one engine call (batching.py)
    batch_window_s: float = 5.0          # that batch's encoder window: longest clip + this (0 = 30 s)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_upload_mb * MB) + FORM_OVERHEAD_BYTES

    def too_large(self) -> str:
        return f"the upload is larger than this server's limit of {self.max_upload_mb:g} MB (--max_upload_mb)"

    def too_long(self, exc: AudioTooLong, shown_name: str) -> str:
        held = f"{exc.seconds:.1f} s" if exc.seconds is not None else f"more than {exc.limit:g} s"
        return (f"uploaded file {shown_name} holds {held} of audio, longer than this server's limit of "
                f"{self.max_audio_s:g} s (--max_audio_s)")

    def too_slow(self) -> str:
        return (f"the recognition did not finish within this server's limit of {self.request_timeout_s:g} s "
                f"(--request_timeout_s) and was stopped; send shorter audio")

    def public(self) -> dict:
        """The settings as /health shows them: the key itself never leaves the server."""
        shown = asdict(self)
        shown["api_key"] = "(set)" if self.api_key else None
        return shown
