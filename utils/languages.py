"""Whisper's language names and codes, and the one check every front end uses."""
from __future__ import annotations

from typing import Optional

# transformers ships Whisper's language table; reusing it keeps names and codes in step
# with the tokenizer's <|xx|> tokens.
from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

TASKS = ("transcribe", "translate")


def valid_languages() -> str:
    """One line listing every accepted code with its name, for error messages and --help."""
    return ", ".join(f"{code} ({name})" for code, name in sorted(LANGUAGES.items()))


def to_language_code(language: Optional[str]) -> Optional[str]:
    """Map a name ("Chinese"), alias ("mandarin") or code ("zh", "<|zh|>") to Whisper's code.

    None or "" or "auto" means "detect"; anything else unknown raises ValueError listing the valid ones.
    """
    if language is None:
        return None
    key = language.strip().lower()
    if key.startswith("<|") and key.endswith("|>"):
        key = key[2:-2]
    if key in ("", "auto", "none", "detect"):
        return None
    if key in LANGUAGES:
        return key
    if key in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[key]
    raise ValueError(f"unknown language {language!r}; valid languages: {valid_languages()}")


def language_name(code: str) -> str:
    return LANGUAGES.get(code, code)


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    return task
