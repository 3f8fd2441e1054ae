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
