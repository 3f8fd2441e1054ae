"""Generated tables in README.md: a script replaces the text between its two marker comments.

    <!-- begin: accuracy (tools/accuracy_experiment.py writes this part) -->
    ...
    <!-- end: accuracy -->

Only what lies between the markers changes; the file is rewritten atomically, so an interrupted
run never leaves a half-written README. A README without the markers is an error (the section was
deleted or renamed by hand), never a silent no-op.
"""
from __future__ import annotations

import re

from utils.core.errors import UserError
from utils.core.files import write_text_atomic


class SectionError(UserError):
    """The README lacks the section's markers."""


def replace_section(path: str, name: str, body: str) -> None:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise SectionError(f"{path} not found; name the README whose '{name}' section to rewrite") from None
    pattern = re.compile(rf"(<!-- begin: {re.escape(name)}\b[^>]*-->\n)(.*?)(<!-- end: {re.escape(name)} -->)", re.S)
    if not pattern.search(text):
        raise SectionError(f"{path} has no '<!-- begin: {name} ... -->' / '<!-- end: {name} -->' markers; "
                           f"put them back where the generated {name} section belongs")
    text = pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(3), text, count=1)
    write_text_atomic(path, text)
