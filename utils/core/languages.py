"""Whisper's languages and tasks, and the one rule for "multilingual": every script, the server, the
window and training parse a language or a task here and nowhere else."""
from __future__ import annotations

from typing import Optional

from utils.core.errors import UserError

# Whisper's language table (code -> name), in the order of the tokenizer's <|xx|> tokens.
# Kept here as data rather than imported from transformers so that torch-free front ends
# (the GGML desktop app) can validate a language without loading transformers.
LANGUAGES = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian",
    "ko": "korean", "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish",
    "pl": "polish", "ca": "catalan", "nl": "dutch", "ar": "arabic", "sv": "swedish",
    "it": "italian", "id": "indonesian", "hi": "hindi", "fi": "finnish", "vi": "vietnamese",
    "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay", "cs": "czech",
    "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian",
    "la": "latin", "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak", "te": "telugu",
    "fa": "persian", "lv": "latvian", "bn": "bengali", "sr": "serbian", "az": "azerbaijani",
    "sl": "slovenian", "kn": "kannada", "et": "estonian", "mk": "macedonian", "br": "breton",
    "eu": "basque", "is": "icelandic", "hy": "armenian", "ne": "nepali", "mn": "mongolian",
    "bs": "bosnian", "kk": "kazakh", "sq": "albanian", "sw": "swahili", "gl": "galician",
    "mr": "marathi", "pa": "punjabi", "si": "sinhala", "km": "khmer", "sn": "shona",
    "yo": "yoruba", "so": "somali", "af": "afrikaans", "oc": "occitan", "ka": "georgian",
    "be": "belarusian", "tg": "tajik", "sd": "sindhi", "gu": "gujarati", "am": "amharic",
    "yi": "yiddish", "lo": "lao", "uz": "uzbek", "fo": "faroese", "ht": "haitian creole",
    "ps": "pashto", "tk": "turkmen", "nn": "nynorsk", "mt": "maltese", "sa": "sanskrit",
    "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan", "tl": "tagalog", "mg": "malagasy",
    "as": "assamese", "tt": "tatar", "haw": "hawaiian", "ln": "lingala", "ha": "hausa",
    "ba": "bashkir", "jw": "javanese", "su": "sundanese", "yue": "cantonese",
}

# Other names users write for the same languages.
LANGUAGE_ALIASES = {
    "burmese": "my", "valencian": "ca", "flemish": "nl", "haitian": "ht", "letzeburgesch": "lb",
    "pushto": "ps", "panjabi": "pa", "moldavian": "ro", "moldovan": "ro", "sinhalese": "si",
    "castilian": "es", "mandarin": "zh",
}

TO_LANGUAGE_CODE = {**{name: code for code, name in LANGUAGES.items()}, **LANGUAGE_ALIASES}

TASKS = ("transcribe", "translate")

# OpenAI's rule (whisper/tokenizer.py): English-only vocabularies (GPT-2's plus Whisper's specials) have
# 51864 tokens; multilingual ones 51865 (large-v3: 51866). The tokenizers of English-only models still
# list the language tokens, so only the vocabulary size tells the two apart.
MULTILINGUAL_VOCAB = 51865


class LanguageError(UserError):
    """An unknown language or task name; the message lists the valid ones."""


def is_multilingual(vocab_size: int) -> bool:
    """Whether a Whisper vocabulary of `vocab_size` tokens has language and task tokens."""
    return int(vocab_size) >= MULTILINGUAL_VOCAB


# Languages added after the first 99 (large-v3's vocabulary of 51866 tokens adds yue), by the version
# that added them; an error naming a missing one says which models have it.
ADDED_LANGUAGES = {"yue": "large-v3"}


def model_languages(vocab_size: int) -> tuple[str, ...]:
    """The language codes a Whisper vocabulary of `vocab_size` tokens has tokens for, in token order:
    ("en",) for an English-only model, the first 99 for 51865 tokens, all 100 (with yue) for 51866.

    OpenAI's rule (whisper/model.py, num_languages): the language tokens are what the vocabulary holds
    beyond GPT-2's 50257 tokens, the six task/control tokens, <|endoftext|> and 1501 timestamps."""
    if not is_multilingual(vocab_size):
        return ("en",)
    count = int(vocab_size) - 51765 - 1
    return tuple(LANGUAGES)[:max(1, min(count, len(LANGUAGES)))]


def check_model_language(code: Optional[str], languages: tuple[str, ...], model: str = "this model") -> Optional[str]:
    """`code` (a code from to_language_code, or None = detect) when `languages` has it, else a
    LanguageError in one sentence naming the language and the model."""
    if code is None or code in languages:
        return code
    if languages == ("en",):
        raise LanguageError(f"{model} is English-only and cannot transcribe language {code!r}")
    added = ADDED_LANGUAGES.get(code)
    hint = f" ({added} models add {code})" if added else ""
    raise LanguageError(f"language {code!r} is not one of {model}'s {len(languages)} languages{hint}")


def valid_languages() -> str:
    """One line listing every accepted code with its name, for error messages and --help."""
    return ", ".join(f"{code} ({name})" for code, name in sorted(LANGUAGES.items()))


def to_language_code(language: Optional[str]) -> Optional[str]:
    """Map a name ("Chinese"), alias ("mandarin"), code ("zh") or token ("<|zh|>") to Whisper's code:
    exactly what transformers' Whisper generate accepts (any case), plus None, "" and "auto" for
    "not given: detect it". Anything else raises LanguageError listing the valid ones.
    """
    if language is None:
        return None
    key = language.strip().lower()
    if key.startswith("<|") and key.endswith("|>"):
        key = key[2:-2]
    if key in ("", "auto"):
        return None
    if key in LANGUAGES:
        return key
    if key in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[key]
    raise LanguageError(f"unknown language {language!r}; valid languages: {valid_languages()}")


def language_name(code: str) -> str:
    """'zh' -> 'chinese' (codes outside the table come back unchanged)."""
    return LANGUAGES.get(code, code)


def check_task(task: str) -> str:
    """`task` itself when it is one of TASKS, else LanguageError naming the valid ones."""
    if task not in TASKS:
        raise LanguageError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    return task
