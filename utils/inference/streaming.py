"""Live transcription: audio arrives in chunks, committed words and a partial tail come out.

    stream = StreamingTranscriber(load_transcriber("ct2", "models/whisper-base-ct2"))
    for chunk in chunks:                      # 16 kHz mono float32, any length
        for event in stream.feed(chunk):
            print(event.kind, event.text)     # "commit": final words; "partial": may still change
    stream.flush()                            # the end: everything left is committed

The policy is LocalAgreement-2 (Machacek et al. 2023, UFAL's whisper_streaming): the buffer of
audio since the last trim is decoded again after every `min_chunk_s` of new audio, with the
committed text before the buffer as the prompt and with word timestamps; the words on which two
successive hypotheses agree (their longest common prefix) are committed, the rest is partial.
The buffer is cut at the end of a committed sentence once it is longer than `trim_s`, and at the
end of any committed word past `max_buffer_s`, so that one decode costs about the same at minute
one and at minute sixty. Silero VAD (faster-whisper's) drops silence before it reaches the model;
a decode whose audio ends in `pause_commit_s` of silence commits all its words, and
`min_silence_s` of silence closes the utterance: every word in it is committed (decoded once more
only if speech came after the last decode). Word times are on the stream's clock: seconds of audio fed so far.

Any Transcriber that gives word timestamps works (the ct2 backend does; transformers and ggml do
not); the tests drive the policy with a fake one.
"""
from __future__ import annotations

import queue
import re
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from utils.core.audio import SAMPLE_RATE
from utils.inference.transcriber import TranscribeOptions, Transcriber, TranscriptionError, Word

# Silero's frame: 32 ms at 16 kHz.
VAD_FRAME = 512
# The VAD network restarts its state at every call; it sees this much audio before the new frames.
VAD_HISTORY = 32 * VAD_FRAME
# A committed word may come back in the next hypothesis with its start moved this much earlier.
TIME_TOLERANCE_S = 0.1
# Whisper on a few hundred ms of audio invents words; a shorter closing sliver is not decoded.
MIN_DECODE_S = 0.3
# Longest run of committed words looked for at the start of a hypothesis (it says them again).
MAX_REPEAT_WORDS = 5
# The prompt holds the end of the committed text, as Whisper's own previous-text context does.
PROMPT_CHARS = 200
SENTENCE_END = re.compile(r"[.?!。？！…]['\")\]」』]*$")


@dataclass
class StreamingOptions:
    language: Optional[str] = None     # name or code; None = detect on the first decode, then keep it
    task: str = "transcribe"
    beam_size: int = 1
    min_chunk_s: float = 1.0           # decode again once this much new audio has arrived
    trim_s: float = 10.0               # past this, cut the buffer at a committed sentence's end
    max_buffer_s: float = 20.0         # past this, cut at any committed word's end
    vad: bool = True                   # skip silence and end utterances with Silero VAD
    vad_threshold: float = 0.5         # speech probability that opens speech
    min_silence_s: float = 1.0         # this much silence ends an utterance (everything is committed)
    pause_commit_s: float = 0.2        # a decode whose audio ends in this much silence commits all its words
    speech_pad_s: float = 0.3          # audio kept before speech starts and after it ends
    context_gap_s: float = 3.0         # a closed utterance's audio stays in the buffer (as context for the
                                       # next) unless this much silence follows it; 0 = each utterance alone
    initial_prompt: Optional[str] = None
    short_window: bool = True          # encode the buffer's length, not 30 s (TranscribeOptions.short_window):
                                       # 2.5x less CPU per decode, which the latency goal and two streams on
                                       # two cores need; False = full windows (no more accurate on the files
                                       # measured, docs/streaming.md)

    def check(self) -> None:
        """TranscriptionError naming the first option out of range (the stream checks at its start; a
        command line can check before it loads a model). Not at construction: the server sets the
        fields of a session's options one by one."""
        if self.pause_commit_s <= 0:
            raise TranscriptionError(f"pause_commit_s must be above 0 (a larger value than min_silence_s "
                                     f"turns it off), got {self.pause_commit_s}")
        if not 0 < self.min_chunk_s <= self.trim_s <= self.max_buffer_s <= 30:
            raise TranscriptionError("streaming needs 0 < min_chunk_s <= trim_s <= max_buffer_s <= 30 s, got "
                                     f"{self.min_chunk_s}, {self.trim_s}, {self.max_buffer_s}")
        if not 0 <= self.context_gap_s <= 30 - self.max_buffer_s:
            # The kept silence comes on top of a buffer of up to max_buffer_s: together one Whisper window.
            raise TranscriptionError(f"context_gap_s must be between 0 and 30 - max_buffer_s = "
                                     f"{30 - self.max_buffer_s:g} s, got {self.context_gap_s}")


_DEFAULTS = StreamingOptions()


@dataclass
class StreamingFlags:
    """The stream's policy as command-line flags, defaults StreamingOptions' own (infer_stream.py and
    tools/benchmark_streaming.py subclass it, as the inference scripts do CommonInferArguments)."""
    beam_size: int = field(default=_DEFAULTS.beam_size, metadata={"help": "beam width; 1 = greedy decoding"})
    vad: bool = field(default=_DEFAULTS.vad, metadata={
        "help": "skip silence and end utterances with Silero VAD; False = decode everything"})
    min_silence_s: float = field(default=_DEFAULTS.min_silence_s, metadata={
        "help": "this much silence ends an utterance and commits all of it"})
    pause_commit_s: float = field(default=_DEFAULTS.pause_commit_s, metadata={
        "help": "a decode whose audio ends in this much silence commits all its words (with --vad)"})
    context_gap_s: float = field(default=_DEFAULTS.context_gap_s, metadata={
        "help": "above 0: an ended utterance's audio stays as context for the next one unless this much "
                "silence follows it (with --vad; 0 = decode each utterance alone)"})
    short_window: bool = field(default=_DEFAULTS.short_window, metadata={
        "help": "encode only the buffer's length (plus 3 s, at least 10 s), not Whisper's whole 30 s "
                "window: 2.5x less CPU per decode, for lower latency and more streams on a CPU; False = "
                "full windows"})
    trim_s: float = field(default=_DEFAULTS.trim_s, metadata={
        "help": "buffer length after which it is cut at the end of a committed sentence"})
    max_buffer_s: float = field(default=_DEFAULTS.max_buffer_s, metadata={
        "help": "buffer length after which it is cut at any committed word (bounds each decode's cost)"})

    def streaming_options(self, **others) -> StreamingOptions:
        """StreamingOptions with these flags' values and `others` (language, min_chunk_s, ...)."""
        return StreamingOptions(**{f.name: getattr(self, f.name) for f in fields(StreamingFlags)}, **others)


@dataclass
class StreamEvent:
    # "commit": final words; "partial": the current guess after the commits; "end": an utterance
    # closed (by silence or flush), its text all its committed words.
    kind: str
    text: str                  # the words as the model wrote them, leading space included
    start: float               # stream clock, seconds; 0.0/0.0 for an empty partial
    end: float
    words: list[Word] = field(default_factory=list)
    received_s: float = 0.0    # seconds of audio fed when the event came out


def words_text(words: list[Word]) -> str:
    return "".join(word.word for word in words)


def _key(word: str) -> str:
    """A word as agreement compares it: case, punctuation and spaces do not count."""
    return re.sub(r"[^\w]", "", word.lower()) or word.strip()


def agreed_prefix(previous: list[Word], current: list[Word]) -> int:
    """How many leading words of `current` two hypotheses share (LocalAgreement's commit): the words
    whose units (words, or characters of unspaced text, which two decodes group into tokens
    differently) all lie in the units' common prefix."""
    old, new = _units(previous), _units(current)
    same = 0
    for (unit, _, _), (other, _, _) in zip(old, new):
        if unit != other:
            break
        same += 1
    return len(current) if same == len(new) else new[same][1]


def drop_repeated(committed: list[Word], words: list[Word]) -> list[Word]:
    """`words` without a leading run that repeats the end of `committed` (the decoder saying again
    what was already committed, with its times shifted past the cut)."""
    tail = [_key(word.word) for word in committed[-MAX_REPEAT_WORDS:]]
    for size in range(min(len(tail), len(words)), 0, -1):
        if tail[-size:] == [_key(word.word) for word in words[:size]]:
            return words[size:]
    return words


# Scripts written without spaces: Whisper's "words" there are tokens, which a second decode of the same
# audio may group differently, so the text is compared one character at a time.
UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\u0e00-\u0e7f]")   # kana, CJK, Thai


# Two decodes of the same audio place a word within this much of each other; equal words further apart
# are different occurrences ("the" of one sentence is not "The" of the next).
SAME_WORD_S = 1.5


def _units(words: list[Word]) -> list[tuple[str, int, float]]:
    """The text as aligned: (unit, index of its word, its start); a unit is a word, or a character
    of unspaced text."""
    units = []
    for index, word in enumerate(words):
        key = _key(word.word)
        units += [(unit, index, word.start) for unit in (key if UNSPACED.search(key) else [key])]
    return units


def said_again(committed: list[Word], words: list[Word]) -> Optional[int]:
    """How many leading words of a hypothesis say `committed` (the committed words whose audio is
    still in the buffer) again; None when too few of them match to tell.

    The hypothesis is aligned with the committed text by edit distance, its end left free (difflib
    and jiwer align whole sequences, not a prefix against a whole, hence our own). Times alone cannot
    tell: a second decode of the same audio moves a word's times by more than a short word lasts,
    most of all in unspaced text, where 'words' are tokens a few tens of ms long."""
    old, new = _units(committed), _units(words)
    if not old or not new:
        return None
    # cost[j], matched[j]: fewest edits turning old[:i] into new[:j], and the equal units on that path.
    cost, matched = list(range(len(new) + 1)), [0] * (len(new) + 1)
    for i, (unit, _, start) in enumerate(old, 1):
        row, row_matched = [i] + [0] * len(new), [0] * (len(new) + 1)
        for j, (other, _, other_start) in enumerate(new, 1):
            same = unit == other and abs(start - other_start) <= SAME_WORD_S
            row[j], negative = min((cost[j - 1] + (not same), -(matched[j - 1] + same)),
                                   (cost[j] + 1, -matched[j]), (row[j - 1] + 1, -row_matched[j - 1]))
            row_matched[j] = -negative
        cost, matched = row, row_matched
    last_end = committed[-1].end
    first, size = {}, {}          # per word of the hypothesis: its first unit's position, its unit count
    for position, (_, index, _) in enumerate(new):
        first.setdefault(index, position)
        size[index] = size.get(index, 0) + 1

    def cut_words(j: int) -> int:
        """Words of new[:j]; a word cut inside counts when most of its units are in."""
        if j == 0:
            return 0
        index = new[j - 1][1]
        return index + 1 if 2 * (j - first[index]) > size[index] else index

    def rank(j: int) -> tuple:
        count = cut_words(j)
        gap = abs(words[count - 1].end - last_end) if count else abs(words[0].start - last_end)
        return cost[j], -matched[j], gap     # ties: the cut nearest the committed words' end in time

    best = min(range(len(new) + 1), key=rank)
    if 2 * matched[best] < len(old):
        return None
    return cut_words(best)


# Longest repeated stretch cut_loop looks for, in units (words, or characters of unspaced text):
# Mandarin loops of a five-character phrase came in tokens grouped differently each time.
MAX_LOOP_UNITS = 10


def cut_loop(words: list[Word]) -> list[Word]:
    """`words` up to a repetition loop (Whisper's failure on hard audio: the same stretch again and
    again; a single unit four times, a longer one three), keeping its first occurrence. Without this,
    two decodes that loop alike agree, and the loop is committed. Offline decoding catches loops
    by their compression ratio and decodes again hotter; a stream cannot pay for that, and the next
    decode of the same audio usually does better."""
    units = _units(words)
    keys = [unit for unit, _, _ in units]
    for start in range(len(keys)):
        for size in range(1, MAX_LOOP_UNITS + 1):
            repeats = 4 if size == 1 else 3
            if start + size * repeats > len(keys):
                break
            unit = keys[start:start + size]
            if all(keys[start + size * k:start + size * (k + 1)] == unit for k in range(1, repeats)):
                # Up to the word holding the first occurrence's last unit.
                return words[:units[start + size - 1][1] + 1]
    return words


class StreamingTranscriber:
    """One stream's state; not thread-safe (one feeder per stream), the Transcriber may be shared."""

    def __init__(self, transcriber: Transcriber, options: Optional[StreamingOptions] = None):
        self.options = options or StreamingOptions()
        if "word_timestamps" in transcriber.unsupported:
            raise TranscriptionError(f"live transcription needs word timestamps, which the "
                                     f"{transcriber.backend} backend does not give; use a ct2 model")
        opts = self.options
        opts.check()
        self.transcriber = transcriber
        self.language = transcriber.resolve_options(TranscribeOptions(
            language=opts.language, task=opts.task)).language
        self.committed: list[Word] = []      # every committed word, stream clock
        self._utterance_from = 0             # index in `committed` of the open utterance's first word
        self.decodes = 0
        self.decode_walls: list[float] = []  # wall seconds of each decode
        self._received = 0                   # samples fed
        self._clock = 0                      # samples that have passed the VAD (the buffer's clock)
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start = 0.0             # stream time of the buffer's first sample
        self._utterance_start = 0.0          # stream time of the open utterance's first sample (padding in)
        self._has_context = False            # the buffer holds a closed utterance, kept as context
        self._undecoded = 0                  # samples through the VAD since the last decode
        self._decoded_utterance = False      # the open utterance was decoded at least once
        self._hypothesis: list[Word] = []    # the last decode's words after the commits
        self._in_speech = not opts.vad
        self._silence = 0                    # trailing non-speech samples of the open utterance
        self._vad_pending = np.zeros(0, dtype=np.float32)
        self._vad_history = np.zeros(0, dtype=np.float32)
        self._vad = None
        if opts.vad:
            from faster_whisper.vad import get_vad_model

            self._vad = get_vad_model()

    # ---- what callers use ----------------------------------------------------------------
    @property
    def received_s(self) -> float:
        return self._received / SAMPLE_RATE

    @property
    def buffer_s(self) -> float:
        return len(self._buffer) / SAMPLE_RATE

    @property
    def committed_text(self) -> str:
        return words_text(self.committed).strip()

    def feed(self, samples: np.ndarray) -> list[StreamEvent]:
        """Take the next 16 kHz mono float32 samples; the events they caused (maybe none)."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if samples.size == 0:
            return []
        self._received += len(samples)
        if self._vad is None:
            self._append(samples)
            return self._decode_if_due()
        events = []
        # VAD decides per 32 ms frame; a tail shorter than a frame waits for the next call.
        pending = np.concatenate([self._vad_pending, samples])
        usable = len(pending) // VAD_FRAME * VAD_FRAME
        frames, self._vad_pending = pending[:usable], pending[usable:]
        for index, speech in enumerate(self._speech_flags(frames)):
            events += self._take_frame(frames[index * VAD_FRAME:(index + 1) * VAD_FRAME], speech)
        return events + self._decode_if_due()

    def flush(self) -> list[StreamEvent]:
        """End of the stream (or of an utterance the caller knows of): decode what is left and
        commit all of it."""
        if self._in_speech:
            self._append(self._vad_pending)
        else:
            self._clock += len(self._vad_pending)
        self._vad_pending = np.zeros(0, dtype=np.float32)
        return self._close_utterance()

    def _close_utterance(self) -> list[StreamEvent]:
        events = []
        if self._in_speech and self._decoded_utterance and self._undecoded <= self._silence:
            # Only silence came since the last decode: its hypothesis is the utterance's end. Decoding
            # again costs a decode's wall time before the commit, and Whisper tends to add "Thank
            # you." on the extra silence.
            if self._hypothesis:
                events.append(self._commit(self._hypothesis))
        elif self._in_speech and len(self._buffer) >= MIN_DECODE_S * SAMPLE_RATE:
            words = self._decode()
            if words:
                events.append(self._commit(words))
        self._decoded_utterance = False
        utterance, self._utterance_from = self.committed[self._utterance_from:], len(self.committed)
        if utterance:
            events.append(StreamEvent("end", words_text(utterance), utterance[0].start, utterance[-1].end,
                                      list(utterance), self.received_s))
        self._hypothesis = []
        self._has_context = bool(utterance) and self._vad is not None and self.options.context_gap_s > 0
        if not self._has_context:
            self._buffer = np.zeros(0, dtype=np.float32)
            self._buffer_start = self._clock / SAMPLE_RATE
        # Else the utterance's audio stays: the next utterance is decoded after it (its words are
        # already committed and found again by said_again), which is the acoustic context a 30 s
        # window gives offline decoding. On en_long each utterance alone made 14.0 % WER, with the
        # context 9.35 % (offline 7.5 %; docs/streaming.md).
        self._undecoded, self._silence = 0, 0
        self._in_speech = self._vad is None
        return events + [self._partial()]

    # ---- voice activity ------------------------------------------------------------------
    def _speech_flags(self, frames: np.ndarray) -> list[bool]:
        if not len(frames):
            return []
        history = self._vad_history
        probabilities = np.asarray(self._vad(np.concatenate([history, frames]))).reshape(-1)
        self._vad_history = np.concatenate([history, frames])[-VAD_HISTORY:]
        return list(probabilities[len(history) // VAD_FRAME:] >= self.options.vad_threshold)

    def _take_frame(self, frame: np.ndarray, speech: bool) -> list[StreamEvent]:
        pad = int(self.options.speech_pad_s * SAMPLE_RATE)
        if not self._in_speech:
            if not speech:
                self._clock += len(frame)
                self._undecoded += len(frame)   # time since the last decode, so speech is decoded at once
                self._silence += len(frame)
                self._buffer = np.concatenate([self._buffer, frame])
                if not self._has_context or self._silence > self.options.context_gap_s * SAMPLE_RATE:
                    # Silence before speech with no utterance before it, or a long one: keep only
                    # the padding (earlier context is too far back to help), and keep the clock right.
                    self._buffer = self._buffer[max(0, len(self._buffer) - pad):]
                    self._has_context = False
                self._buffer_start = self._clock / SAMPLE_RATE - len(self._buffer) / SAMPLE_RATE
                return []
            self._in_speech, self._silence = True, 0
            self._utterance_start = max(self._buffer_start, self._clock / SAMPLE_RATE - self.options.speech_pad_s)
        self._append(frame)
        self._silence = 0 if speech else self._silence + len(frame)
        if self._silence < self.options.min_silence_s * SAMPLE_RATE:
            return []
        # The utterance is over: its trailing silence (beyond the padding) is not worth decoding.
        keep, silence = len(self._buffer) - max(0, self._silence - pad), self._silence
        self._buffer, tail = self._buffer[:keep], self._buffer[keep:]
        events = self._close_utterance()
        # The silence goes back after the close: it is part of the gap to the next utterance (context
        # kept) or the padding before it (buffer cleared); either way the buffer ends at the clock.
        self._buffer = np.concatenate([self._buffer, tail])
        self._buffer_start = self._clock / SAMPLE_RATE - len(self._buffer) / SAMPLE_RATE
        self._silence = silence
        return events

    # ---- decoding and agreement ----------------------------------------------------------
    def _append(self, samples: np.ndarray) -> None:
        if not len(self._buffer):
            self._buffer_start = self._clock / SAMPLE_RATE
        self._buffer = np.concatenate([self._buffer, samples])
        self._clock += len(samples)
        self._undecoded += len(samples)

    def _decode_if_due(self) -> list[StreamEvent]:
        # Less a VAD frame: the VAD passes whole frames on, so a 1 s chunk may bring 31.25 of them.
        if not self._in_speech or self._undecoded < self.options.min_chunk_s * SAMPLE_RATE - VAD_FRAME:
            return []
        if not self._decoded_utterance and self._clock / SAMPLE_RATE - self._utterance_start < self.options.min_chunk_s:
            return []    # the utterance's first decode: less audio than a chunk makes Whisper guess
        words = self._decode()
        agreed = agreed_prefix(self._hypothesis, words)
        if self._vad is not None and self._silence >= self.options.pause_commit_s * SAMPLE_RATE:
            # The audio ends in a pause: the words before it will not change with more audio, and
            # the utterance's close (min_silence_s) then commits without decoding again.
            agreed = len(words)
        events = [self._commit(words[:agreed])] if agreed else []
        self._hypothesis = words[agreed:]
        return events + self._trim() + [self._partial()]

    def _context(self) -> str:
        """The prompt: the initial prompt and the committed words before the buffer, their end."""
        before = [word for word in self.committed if word.end <= self._buffer_start + 1e-6]
        return ((self.options.initial_prompt or "") + words_text(before)).strip()[-PROMPT_CHARS:]

    def _decode(self) -> list[Word]:
        """The buffer's words on the stream clock, without those already committed."""
        options = TranscribeOptions(language=self.language, task=self.options.task,
                                    beam_size=self.options.beam_size, word_timestamps=True,
                                    initial_prompt=self._context() or None,
                                    temperature_increment_on_fallback=0.0,
                                    short_window=self.options.short_window)
        began = time.monotonic()
        segments, info = self.transcriber.transcribe(self._buffer, options)
        segments = list(segments)
        self.decode_walls.append(time.monotonic() - began)
        offset = self._buffer_start
        words = cut_loop([Word(start=round(w.start + offset, 3), end=round(w.end + offset, 3), word=w.word,
                               probability=w.probability)
                          for segment in segments for w in (segment.words or [])])
        self.decodes += 1
        self._undecoded = 0
        self._decoded_utterance = True
        if self.language is None:
            self.language = info.language   # a language that flips between decodes never agrees
        inside = [word for word in self.committed if word.end > self._buffer_start + 1e-6]
        again = said_again(inside, words)
        if again is not None:
            return words[again:]
        last_end = self.committed[-1].end if self.committed else -1.0
        fresh = [word for word in words if word.start >= last_end - TIME_TOLERANCE_S]
        return drop_repeated(self.committed, fresh)

    def _commit(self, words: list[Word]) -> StreamEvent:
        self.committed += words
        return StreamEvent("commit", words_text(words), words[0].start, words[-1].end, list(words),
                           self.received_s)

    def _partial(self) -> StreamEvent:
        words = self._hypothesis
        if not words:
            return StreamEvent("partial", "", 0.0, 0.0, [], self.received_s)
        return StreamEvent("partial", words_text(words), words[0].start, words[-1].end, list(words),
                           self.received_s)

    def _trim(self) -> list[StreamEvent]:
        """Cut the buffer at a committed sentence's end past trim_s, at any committed word's end
        past max_buffer_s; past max_buffer_s with nothing committed in it, commit the hypothesis'
        words that are not near the buffer's end (the commit event is returned)."""
        if self.buffer_s <= self.options.trim_s:
            return []
        events = []
        inside = [word for word in self.committed if word.end > self._buffer_start]
        cut = next((word.end for word in reversed(inside) if SENTENCE_END.search(word.word.strip())), None)
        if cut is None and self.buffer_s > self.options.max_buffer_s:
            end = self._clock / SAMPLE_RATE
            old = [word for word in self._hypothesis if word.end < end - 2 * self.options.min_chunk_s]
            if not inside and old:
                events.append(self._commit(old))
                self._hypothesis = self._hypothesis[len(old):]
                inside = old
            cut = inside[-1].end if inside else end - self.options.trim_s
        if cut is not None and cut > self._buffer_start:
            drop = int(round((cut - self._buffer_start) * SAMPLE_RATE))
            self._buffer = self._buffer[drop:]
            self._buffer_start += drop / SAMPLE_RATE
        return events


# ---- driving a stream --------------------------------------------------------------------
@dataclass
class TimedEvent:
    event: StreamEvent
    wall: float                   # time.monotonic() when it came out
    latency_s: Optional[float]    # wall seconds from its last word's end in the audio to `wall`


def file_chunks(audio: np.ndarray, chunk_s: float, realtime: bool,
                started: Optional[float] = None) -> Iterator[tuple[np.ndarray, float]]:
    """`audio` in chunks of `chunk_s`, each with the wall time at which its last sample exists
    (time.monotonic). `realtime` waits for it, as a microphone would; else no waiting, and the
    times are those of a real-time source that started at `started` (default: now)."""
    step = max(1, int(round(chunk_s * SAMPLE_RATE)))
    started = time.monotonic() if started is None else started
    for begin in range(0, len(audio), step):
        chunk = audio[begin:begin + step]
        due = started + (begin + len(chunk)) / SAMPLE_RATE
        if realtime:
            time.sleep(max(0.0, due - time.monotonic()))
        yield chunk, due


def run_stream(stream: StreamingTranscriber, chunks: Iterable[tuple[np.ndarray, float]],
               started: float, on_event: Callable[[TimedEvent], None], realtime: bool = True) -> list[TimedEvent]:
    """Feed `chunks` ((samples, wall time their end exists)) and flush; every event goes to
    `on_event` as it comes out. An event's latency is its wall time minus the moment its last
    word's audio existed (`started` + the word's end on the stream clock); None unless `realtime`.

    In real time the chunks are read on a thread and whatever arrived while a decode ran is fed in
    one piece, so a decode slower than a chunk makes the next one cover more audio rather than
    the stream falling further behind with every chunk."""
    seen: list[TimedEvent] = []

    def emit(events: list[StreamEvent]) -> None:
        now = time.monotonic()
        for event in events:
            latency = now - (started + event.end) if realtime and event.words else None
            seen.append(TimedEvent(event, now, latency))
            on_event(seen[-1])

    if not realtime:
        for chunk, _due in chunks:
            emit(stream.feed(chunk))
        emit(stream.flush())
        return seen
    arrived: queue.Queue = queue.Queue()
    failure: list[BaseException] = []

    def read() -> None:
        try:
            for chunk, _due in chunks:
                arrived.put(chunk)
        except BaseException as exc:  # the source's error ends the stream and is raised below
            failure.append(exc)
        arrived.put(None)

    threading.Thread(target=read, name="stream-source", daemon=True).start()
    ended = False
    while not ended:
        pieces = [arrived.get()]
        while not arrived.empty():
            pieces.append(arrived.get_nowait())
        ended = pieces[-1] is None
        pieces = [piece for piece in pieces if piece is not None and len(piece)]
        if pieces:
            emit(stream.feed(np.concatenate(pieces)))
    if failure:
        raise failure[0]
    emit(stream.flush())
    return seen
