"""Text clean-up shared by scoring (utils.core.metrics) and by the front ends' display options."""
from __future__ import annotations

import re
import unicodedata

_WHITESPACE = re.compile(r"\s+")


def to_simplified(text: str) -> str:
    """Traditional Chinese characters as simplified ones (zhconv's table); other text unchanged."""
    import zhconv

    return zhconv.convert(text, "zh-cn")


def remove_punctuation(text: str, replacement: str = "") -> str:
    """Drop punctuation and symbols (Unicode categories P and S: ASCII, full-width and CJK marks alike).

    Display text (the server's and the window's remove_pun) deletes them, replacement="". Scoring
    replaces them with a space so that "word,word" stays two words. Symbols count too because $ + < >
    ^ ` | ~ are category S but punctuation to a reader of a transcript; jiwer's RemovePunctuation
    only knows P."""
    return "".join(replacement if unicodedata.category(ch)[0] in "PS" else ch for ch in text)


def normalize_text(text: str, *, remove_pun: bool = True, to_simple: bool = True, lower: bool = True) -> str:
    """The same normalisation for references and hypotheses, so that only real errors are counted:
    NFKC (full-width forms to ASCII), simplified Chinese, no punctuation, lower case, single spaces."""
    text = unicodedata.normalize("NFKC", text)
    if to_simple:
        text = to_simplified(text)
    if remove_pun:
        text = remove_punctuation(text, " ")
    if lower:
        text = text.lower()
    return _WHITESPACE.sub(" ", text).strip()


# Names of the scoring normalisers, as every report and table states them.
WHISPER_ENGLISH = "whisper-english"
WHISPER_BASIC = "whisper-basic"
PUNCTUATION_SIMPLIFIED = "punctuation-simplified"
NORMALIZERS = ("auto", WHISPER_ENGLISH, WHISPER_BASIC, PUNCTUATION_SIMPLIFIED)
# Languages whose scripts are written without spaces: scored by characters (CER) with punctuation-simplified.
CER_LANGUAGES = ("zh", "yue", "ja", "ko", "th", "lo", "my", "km", "bo")


def english_spelling_map(tokenizer_or_folder) -> dict:
    """Whisper's British -> American spelling table (normalizer.json beside every Whisper tokenizer), which
    EnglishTextNormalizer needs: a loaded tokenizer's english_spelling_normalizer, or the file in a model folder;
    {} when there is none (then only spellings stay apart)."""
    import json
    import os

    if isinstance(tokenizer_or_folder, (str, os.PathLike)):
        path = os.path.join(tokenizer_or_folder, "normalizer.json")
        if not os.path.isfile(path):
            return {}
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    return dict(getattr(tokenizer_or_folder, "english_spelling_normalizer", None) or {})


def scoring_normalizer_name(language, requested: str = "auto") -> str:
    """The normaliser a clip in `language` (a code, or None when unknown) is scored with: Whisper's English
    normaliser for English and Whisper's basic one for other space-delimited languages, as the published
    Whisper figures are computed, so that WERs are comparable with them; punctuation-simplified for the
    languages written without spaces and for clips of unknown language."""
    if requested != "auto":
        return requested
    if language == "en":
        return WHISPER_ENGLISH
    if language and language not in CER_LANGUAGES:
        return WHISPER_BASIC
    return PUNCTUATION_SIMPLIFIED


class ScoringNormalizer:
    """normalize(text) for one of NORMALIZERS' names; Whisper's are transformers' EnglishTextNormalizer and
    BasicTextNormalizer (the ones WhisperTokenizer.normalize/basic_normalize use)."""

    def __init__(self, name: str, *, english_spelling: dict | None = None, remove_pun: bool = True,
                 to_simple: bool = True):
        from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

        self.name = name
        if name == WHISPER_ENGLISH:
            self._normalize = EnglishTextNormalizer(english_spelling or {})
        elif name == WHISPER_BASIC:
            self._normalize = BasicTextNormalizer()
        elif name == PUNCTUATION_SIMPLIFIED:
            self._normalize = lambda text: normalize_text(text, remove_pun=remove_pun, to_simple=to_simple)
        else:
            raise ValueError(f"normalizer must be one of {', '.join(NORMALIZERS[1:])}, got {name!r}")

    def __call__(self, text: str) -> str:
        return _WHITESPACE.sub(" ", self._normalize(text)).strip()
