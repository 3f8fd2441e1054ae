"""Decoder label sequences for Whisper fine-tuning: plain text, timestamps and no-speech.

    plain:      <|startoftranscript|> <|lang|> <|task|> <|notimestamps|> text <|endoftext|>
    timestamps: <|startoftranscript|> <|lang|> <|task|> <|t0|> text <|t1|> <|t0|> text <|t1|> ... <|endoftext|>
    no speech:  <|startoftranscript|> <|nospeech|> <|endoftext|>

The language token is left out when no language is known (the model then learns to
predict it); English-only models (*.en) never get language or task tokens, exactly as
OpenAI trained them. <|nospeech|> stands where the language token would: Whisper was
pre-trained that way (whisper-base gives it p=0.93 right after <|startoftranscript|> on
silence, p<0.001 after <|zh|><|transcribe|>), and decoders read the no-speech
probability at that position (transformers' and faster-whisper's no_speech_threshold)
while suppressing the token everywhere else. Text gets the leading space Whisper writes
in spaced languages (see `leading_space`). The ids are read from the tokenizer, not
hard-coded, so both multilingual and English-only vocabularies work.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

from utils.core.audio import CHUNK_LENGTH, TIME_PRECISION
from utils.core.languages import check_task, is_multilingual, to_language_code

MAX_TIMESTAMP_INDEX = round(CHUNK_LENGTH / TIME_PRECISION)   # <|30.00|> is index 1500


def timestamp_index(seconds: float) -> int:
    """Position of `seconds` on Whisper's 0.02 s grid (0 -> <|0.00|>, 1500 -> <|30.00|>)."""
    return int(round(float(seconds) / TIME_PRECISION))


def validate_segment(start, end, clip_duration: Optional[float] = None) -> Optional[str]:
    """Why a (start, end) pair is impossible, or None when it is fine."""
    for name, value in (("start", start), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"{name} must be a number of seconds, got {value!r}"
    if start < 0:
        return f"start {start} is negative"
    if end <= start:
        return f"end {end} is not after start {start}"
    if end > CHUNK_LENGTH + 1e-6:
        return f"end {end} is beyond Whisper's {CHUNK_LENGTH} s window"
    # One grid step of slack: durations from headers and hand-written timestamps
    # disagree by rounding.
    if clip_duration is not None and end > clip_duration + TIME_PRECISION + 1e-6:
        return f"end {end} is beyond the end of the clip ({clip_duration:.2f} s)"
    return None


@dataclass(frozen=True)
class _SpecialIds:
    sot: int
    eot: int
    transcribe: int
    translate: int
    notimestamps: int
    nospeech: int
    timestamp_begin: int
    multilingual: bool


_SPECIAL_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _token_id(tokenizer, token: str) -> Optional[int]:
    # Whisper's unk token is <|endoftext|>: an unknown token comes back as that id.
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or (token_id == tokenizer.unk_token_id and token != tokenizer.unk_token):
        return None
    return token_id


def special_ids(tokenizer) -> _SpecialIds:
    try:
        return _SPECIAL_CACHE[tokenizer]
    except (KeyError, TypeError):
        pass
    ids = {name: _token_id(tokenizer, f"<|{name}|>")
           for name in ("startoftranscript", "endoftext", "transcribe", "translate", "notimestamps")}
    missing = [name for name, value in ids.items() if value is None]
    if missing:
        raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} is not a Whisper "
                         f"tokenizer (no {', '.join(f'<|{m}|>' for m in missing)})")
    # transformers' tokenizer.json calls it <|nospeech|>; older vocabularies <|nocaptions|>.
    nospeech = _token_id(tokenizer, "<|nospeech|>") or _token_id(tokenizer, "<|nocaptions|>")
    if nospeech is None:
        raise ValueError("tokenizer has neither <|nospeech|> nor <|nocaptions|>")
    # Timestamp tokens follow <|notimestamps|> in every Whisper vocabulary; some
    # tokenizer.json files (tiny.en) do not list them, so compute instead of looking up.
    timestamp_begin = ids["notimestamps"] + 1
    listed = _token_id(tokenizer, "<|0.00|>")
    if listed is not None and listed != timestamp_begin:
        raise ValueError(f"tokenizer has <|0.00|> at id {listed}, expected {timestamp_begin}")
    result = _SpecialIds(
        sot=ids["startoftranscript"], eot=ids["endoftext"], transcribe=ids["transcribe"],
        translate=ids["translate"], notimestamps=ids["notimestamps"], nospeech=nospeech,
        timestamp_begin=timestamp_begin,
        # The vocabulary ends with the 1501 timestamp tokens <|0.00|> ... <|30.00|>.
        multilingual=is_multilingual(timestamp_begin + MAX_TIMESTAMP_INDEX + 1),
    )
    try:
        _SPECIAL_CACHE[tokenizer] = result
    except TypeError:
        pass
    return result


def prefix_ids(tokenizer, *, language: Optional[str], task: Optional[str]) -> list[int]:
    """<|startoftranscript|> [<|lang|>] [<|task|>]: the part every label of a sample starts with."""
    ids = special_ids(tokenizer)
    code = to_language_code(language)
    if task is not None:
        check_task(task)
    if not ids.multilingual:
        if code not in (None, "en"):
            raise ValueError(f"an English-only model cannot be trained on language {language!r}")
        if task == "translate":
            raise ValueError("an English-only model cannot be trained to translate")
        return [ids.sot]
    prefix = [ids.sot]
    if code is not None:
        lang_id = _token_id(tokenizer, f"<|{code}|>")
        if lang_id is None:
            raise ValueError(f"language {language!r} has no token in this tokenizer")
        prefix.append(lang_id)
    if task is not None:
        prefix.append(ids.transcribe if task == "transcribe" else ids.translate)
    return prefix


def _segment(item) -> tuple[float, float, str]:
    if isinstance(item, Mapping):
        return item["start"], item["end"], item["text"]
    start, end, text = item
    return start, end, text


def build_labels(tokenizer, *, sentence: Optional[str], sentences: Optional[Sequence],
                 language: Optional[str], task: Optional[str] = "transcribe",
                 timestamps: bool = False) -> list[int]:
    """Token ids of one training target, starting with <|startoftranscript|>, ending with <|endoftext|>.

    `sentences` are {"start", "end", "text"} mappings (seconds relative to the clip).
    An empty `sentence` (or, with timestamps, an empty `sentences`) is a no-speech sample.
    Raises ValueError for an impossible timestamp or an unknown language/task.
    """
    ids = special_ids(tokenizer)
    labels = prefix_ids(tokenizer, language=language, task=task)
    code = to_language_code(language)
    text = sentence or ""
    segments: list[tuple[float, float, str]] = [_segment(s) for s in (sentences or [])]

    if not text.strip() and not any(str(seg[2]).strip() for seg in segments):
        return [ids.sot, ids.nospeech, ids.eot]

    if not timestamps:
        if not text.strip():
            raise ValueError("'sentence' is empty but 'sentences' has text")
        return labels + [ids.notimestamps] + _encode(tokenizer, text, code) + [ids.eot]

    if sentences is None or not segments:
        raise ValueError("timestamp labels need 'sentences' with start/end times")
    previous_start = -1.0
    for start, end, seg_text in segments:
        problem = validate_segment(start, end)
        if problem:
            raise ValueError(f"impossible timestamp: {problem}")
        if start < previous_start:
            raise ValueError(f"sentences are not in time order ({start} after {previous_start})")
        previous_start = start
        first, last = timestamp_index(start), timestamp_index(end)
        # Segments shorter than one grid step would round to start == end; keep them one step long.
        if last <= first:
            if first < MAX_TIMESTAMP_INDEX:
                last = first + 1
            else:
                first = last - 1
        labels.append(ids.timestamp_begin + first)
        labels.extend(_encode(tokenizer, str(seg_text), code))
        labels.append(ids.timestamp_begin + last)
    return labels + [ids.eot]


# Languages Whisper writes without spaces between words (openai/whisper splits these into
# words by character for the same reason).
_UNSPACED_LANGUAGES = {"zh", "ja", "th", "lo", "my", "yue"}
# CJK, kana, Thai, Lao, Myanmar, Khmer and full-width forms: scripts written without spaces.
_UNSPACED_RANGES = ((0x0E00, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x2E80, 0x9FFF),
                    (0xF900, 0xFAFF), (0xFF00, 0xFFEF), (0x20000, 0x3FFFF))


def leading_space(text: str, code: Optional[str]) -> bool:
    """Whether Whisper would write `text` with a space in front: English and other spaced
    languages start every segment with one (" The train"), Chinese/Japanese/Thai do not."""
    if not text or text[0].isspace():
        return False
    if code is not None:
        return code not in _UNSPACED_LANGUAGES
    point = ord(text[0])
    return not any(low <= point <= high for low, high in _UNSPACED_RANGES)


def _encode(tokenizer, text: str, code: Optional[str]) -> list[int]:
    # Without the space the first word is a different token than the pre-trained model
    # predicts: on the shipped English clips whisper-base's loss on it is ~9 nats instead of
    # ~0.3, and the mean over the sentence 0.84 instead of 0.13 (docs/data-format.md).
    if leading_space(text, code):
        text = " " + text
    return list(tokenizer.encode(text, add_special_tokens=False))


def decode_labels(tokenizer, labels: Iterable[int]) -> list[str]:
    """Token strings of a label sequence, with timestamps shown as <|1.20|> (for messages and tests)."""
    ids = special_ids(tokenizer)
    out = []
    for token in labels:
        token = int(token)
        if token >= ids.timestamp_begin:
            out.append(f"<|{(token - ids.timestamp_begin) * TIME_PRECISION:.2f}|>")
        else:
            out.append(tokenizer.convert_ids_to_tokens(token))
    return out
