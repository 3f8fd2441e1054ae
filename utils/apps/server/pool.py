"""Admission control: a fixed number of recognitions at once, a bounded queue, 503 beyond it, and
uploads refused before their body is read."""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Optional

from starlette.exceptions import HTTPException as StarletteHTTPException

# How often a waiting request looks at its deadline and whether its client is still connected.
WATCH_INTERVAL_S = 0.2


class Cancelled(Exception):
    """Raised in a worker that saw its request's cancel event: the work stops there."""


class TimedOut(Exception):
    """The request's time limit passed; its work has been told to stop."""


class ClientGone(Exception):
    """The client closed the connection; its work has been told to stop."""


class RecognitionPool:
    """`num_workers` recognitions run at once in threads; up to `max_queue` more wait; beyond, 503.

    A thread pool rather than processes: every backend releases the GIL inside its engine
    (torch, CTranslate2, whisper.cpp), and one copy of the model serves all workers.
    """

    def __init__(self, num_workers: int, max_queue: int):
        self.num_workers, self.max_queue = num_workers, max_queue
        self._executor = ThreadPoolExecutor(num_workers, thread_name_prefix="recognition")
        self._lock = threading.Lock()
        self.admitted = 0     # running + waiting
        self.running = 0
        self.served = 0
        self.rejected = 0
        self.cancelled = 0
        self._durations: list[float] = []
        # The cancel events of admitted jobs, so that shutdown can stop them all.
        self._cancels: set[threading.Event] = set()

    def try_admit(self) -> bool:
        with self._lock:
            if self.admitted >= self.num_workers + self.max_queue:
                return False
            self.admitted += 1
            return True

    def full(self) -> bool:
        with self._lock:
            return self.admitted >= self.num_workers + self.max_queue

    def retry_after_s(self) -> int:
        """Seconds until a slot is likely free: the queue ahead times a recent recognition's time."""
        with self._lock:
            recent = self._durations[-20:]
            per_request = sum(recent) / len(recent) if recent else 2.0
            ahead = self.admitted / max(self.num_workers, 1)
        return max(1, int(round(per_request * ahead)))

    def refusal(self, retry_after_s: int) -> str:
        """Count one request refused for lack of a slot and say why, in one sentence."""
        with self._lock:
            self.rejected += 1
        return (f"all {self.num_workers} workers are busy and {self.max_queue} requests "
                f"are waiting; retry in {retry_after_s} s")

    async def run(self, fn: Callable[[threading.Event], Any], timeout_s: float,
                  client_gone: Optional[Callable[[], Awaitable[bool]]] = None) -> Any:
        """Run `fn(cancel)` on a worker; the caller must have been admitted.

        `fn` must stop soon after `cancel` is set (it raises Cancelled). The event is set, and
        TimedOut or ClientGone raised here, when `timeout_s` (counted from now, so the wait for a
        worker counts too) has passed or `client_gone()` says the client hung up; so is it when
        this coroutine is cancelled (uvicorn does that at the end of a graceful shutdown).
        """
        cancel = threading.Event()

        def timed():
            if cancel.is_set():   # stopped while it waited for a worker
                raise Cancelled()
            with self._lock:
                self.running += 1
            started = time.monotonic()
            try:
                return fn(cancel)
            finally:
                with self._lock:
                    self.running -= 1
                    self._durations = self._durations[-19:] + [time.monotonic() - started]

        def release(_future):
            # On the job's end, not the caller's: the slot stays taken until the worker is really
            # free, which a cancelled job is once it reaches its next check of the event.
            with self._lock:
                self.admitted -= 1
                self.served += 1
                # Counted only when the job really stopped early (raised Cancelled), not when the event
                # came after it had finished: /health's "cancelled" is work that was cut short.
                self.cancelled += bool(cancel.is_set() and not _future.cancelled()
                                       and isinstance(_future.exception(), Cancelled))
                self._cancels.discard(cancel)

        with self._lock:
            self._cancels.add(cancel)
        job = self._executor.submit(timed)
        job.add_done_callback(release)
        waiting = asyncio.wrap_future(job)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                left = deadline - time.monotonic()
                done, _ = await asyncio.wait({waiting}, timeout=max(0.0, min(WATCH_INTERVAL_S, left)))
                if done:
                    break
                if time.monotonic() >= deadline:
                    raise TimedOut()
                if client_gone is not None and await client_gone():
                    raise ClientGone()
        except BaseException:
            cancel.set()
            # Cancelling the asyncio side also takes a job that has not started out of the queue.
            waiting.cancel()
            raise
        return waiting.result()

    def status(self) -> dict:
        with self._lock:
            return {"total": self.num_workers, "busy": self.running,
                    "free": self.num_workers - self.running,
                    "waiting": self.admitted - self.running, "max_queue": self.max_queue,
                    "served": self.served, "rejected_busy": self.rejected, "cancelled": self.cancelled}

    def shutdown(self) -> None:
        """Stop every job: queued ones are dropped, running ones stop at their next check of their
        cancel event (the process exits once they have)."""
        with self._lock:
            for cancel in self._cancels:
                cancel.set()
        self._executor.shutdown(wait=False, cancel_futures=True)


class UploadGate:
    """Refuse an upload before its body is read: 503 when every worker and queue slot is taken,
    413 when the body is over `max_bytes` (by Content-Length, or counted as a chunked body
    streams in), so an overloaded or abused server does not spool bodies it will refuse.

    Starlette's own body limiter answers with its own plain-text 413; raising HTTPException from
    `receive` instead lets FastAPI pass it to this app's handler, which answers in the format of
    the API the client speaks.
    """

    def __init__(self, app, max_bytes: int, pool: RecognitionPool):
        self.app, self.max_bytes, self.pool = app, max_bytes, pool

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        too_large = declared.isdigit() and int(declared) > self.max_bytes
        received = 0

        async def gated_receive():
            nonlocal received
            if received == 0 and self.pool.full():
                raise StarletteHTTPException(503, headers={"Retry-After": str(self.pool.retry_after_s())})
            if too_large:
                raise StarletteHTTPException(413)
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise StarletteHTTPException(413)
            return message

        await self.app(scope, gated_receive, send)
